#!/usr/bin/env bash
# Every GPU check of this project in one run, for a session lent a GPU machine (device tool):
# the CUDA tests, then the step, training-run and evaluation benchmarks (docs/benchmarks.md).
# About 8 minutes on one H100. The GPU image has torch but no faiss: first, on the dev machine,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl faiss-cpu==1.15.1        # .whl/ is git-ignored
# then run it with carry [".whl"]:  bash bench/gpu_check.sh      (log and figures under $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ! python3 -c "import faiss" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8  # before cuBLAS starts (deterministic test)

step() {  # step SECONDS NAME COMMAND...: run with a time limit, keep going on failure
    local limit=$1 name=$2
    shift 2
    echo "===== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "===== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, faiss, numpy; print('torch', torch.__version__, 'faiss', faiss.__version__, 'numpy', numpy.__version__)"
G="--device cuda --backbone googlenet --size 227 --batch 128 --embedding 512"
step 100 tests python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py tests/test_metrics_torch.py
step 40 step-fp32 python3 bench/step.py $G
step 40 step-tf32 python3 bench/step.py $G --amp tf32
step 40 step-bf16 python3 bench/step.py $G --amp bf16
step 100 step-bf16-compile python3 bench/step.py $G --amp bf16 --compile --warmup 3 --steps 20
step 70 train-fp32 python3 bench/train_speed.py --device cuda --steps 300 --cache-workers 16
step 70 train-bf16 python3 bench/train_speed.py --device cuda --steps 300 --amp bf16 --cache-workers 16
step 80 eval python3 bench/eval.py --device cuda --reference cpu
step 90 clustering python3 bench/eval.py --clustering --device torch:cuda --steps 5 --lloyd-iters 0 --torch-steps 11315
