#!/usr/bin/env bash
# Create ./.venv with hdml-repro installed (editable).
#   setup.sh          the demo/reproduction environment
#   setup.sh --test   plus the test extras and the system packages the tests use
#                     (SLURM + munge for the cluster test, Chromium for the report test; needs root/apt)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "hdml-repro needs Python >= 3.11 (Snakemake 9)"'
extras=""
if [[ "${1:-}" == "--test" ]]; then
  extras="[test,slurm]"
  missing=()
  for cmd in slurmctld slurmd munged chromium; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  if (( ${#missing[@]} )); then
    echo "setup: installing system packages for the tests (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge chromium >/dev/null
  fi
fi
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e ".${extras}"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
