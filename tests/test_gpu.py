"""The CUDA paths: run on a GPU machine with `python -m pytest -m gpu` (deselected otherwise;
selecting them without CUDA is an error). bench/gpu_check.sh runs them with the GPU benchmarks."""
import numpy as np
import pandas as pd
import pytest
import torch

from hdml.core.config import build_run_config
from hdml.data.tensors import BatchTransform
from hdml.model.embedding import build_model
from hdml.train.trainer import place_model, set_determinism, train_run

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
TINY = {"steps": 40, "batch_size": 10, "lr": 1e-3, "eval_every": 0, "weight_decay": 0.0, "embedding_dim": 16}


def test_crops_are_pinned_and_normalised_batches_channels_last():
    pixels = np.random.default_rng(0).integers(0, 256, (6, 3, 12, 12), dtype=np.uint8)
    gpu, cpu = BatchTransform(9, True, "imagenet", CUDA), BatchTransform(9, True, "imagenet", torch.device("cpu"))
    crops = gpu.crops(pixels, np.arange(6), True, torch.Generator().manual_seed(0))
    assert crops.is_pinned()
    x = gpu.normalise(crops)
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    ref = cpu(torch.from_numpy(pixels), train=True, gen=torch.Generator().manual_seed(0))
    assert torch.allclose(x.cpu(), ref, atol=1e-6)


def test_cuda_run_matches_the_cpu_run(digits_root, tmp_path):
    """fp32 with deterministic kernels: the GPU run follows the CPU run up to float rounding."""
    runs = {}
    for device in ("cpu", "cuda"):
        runs[device] = train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=0,
                                 out=tmp_path / device, overrides={**TINY, "device": device, "deterministic": True})
    cpu, gpu = (pd.read_csv(tmp_path / d / "losses.csv") for d in ("cpu", "cuda"))
    assert np.allclose(cpu.j_m.iloc[:10], gpu.j_m.iloc[:10], rtol=1e-3)
    assert abs(runs["cpu"]["metrics"]["recall@1"] - runs["cuda"]["metrics"]["recall@1"]) < 0.05


@pytest.mark.parametrize("fast", [{"amp": "bf16"}, {"amp": "tf32"}, {"amp": "bf16", "compile": True},
                                  {"num_workers": 0}])
def test_fast_paths_train(digits_root, tmp_path, fast):
    train_run(root=digits_root, dataset="digits", method="hdml-npair", seed=0, out=tmp_path,
              overrides={**TINY, "device": "cuda", **fast})
    losses = pd.read_csv(tmp_path / "losses.csv")
    assert losses.j_m.notna().all() and losses.j_m.iloc[-10:].mean() < losses.j_m.iloc[:10].mean()


@pytest.mark.parametrize("backbone", ["googlenet", "googlenet-caffe"])
def test_googlenet_channels_last_equals_contiguous(backbone):
    cfg = build_run_config({}, {"backbone": backbone, "pretrained": False, "device": "cuda"})
    torch.manual_seed(0)
    plain = place_model(build_model(cfg, 3), {**cfg, "channels_last": False}, CUDA).eval()
    fast = place_model(build_model(cfg, 3), cfg, CUDA).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 227, 227, device=CUDA)
    with torch.no_grad():
        a, b = plain(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_caffe_googlenet_backward_in_deterministic_mode():
    """Its LRN (shifted sums, not nn.LocalResponseNorm's avg_pool3d) and its pools have
    deterministic CUDA backwards: `deterministic: true` runs, and two passes agree bit for bit."""
    cfg = build_run_config({}, {"backbone": "googlenet-caffe", "pretrained": False, "device": "cuda"})
    torch.manual_seed(0)
    net = build_model(cfg, 3).backbone.to(CUDA)
    x = torch.randn(8, 3, 227, 227, device=CUDA) * 60
    grads = []
    set_determinism(True)
    try:
        for _ in range(2):
            net.zero_grad()
            net(x).square().sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    finally:
        set_determinism(False)
    assert torch.isfinite(grads[0]).all() and torch.equal(grads[0], grads[1])


def test_torch_search_on_cuda_equals_faiss_on_the_cpu():
    """The evaluation's GPU search (torch, TF32 off) finds faiss's neighbours on well-separated
    data, and the metrics agree: retrieval exactly, clustering up to near-ties."""
    import faiss

    from hdml.eval import metrics
    from test_metrics_torch import clustered

    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((3000, 64)).astype(np.float32), rng.standard_normal((500, 64)).astype(np.float32)
    ref = faiss.IndexFlatL2(64)
    ref.add(x)
    index = metrics.TorchFlatL2(64, "cuda")
    index.add(x)
    (d_ref, i_ref), (d_gpu, i_gpu) = ref.search(q, 50), index.search(q, 50)
    assert (i_ref == i_gpu).mean() > 0.999 and np.allclose(d_ref, d_gpu, rtol=1e-5, atol=1e-4)
    emb, labels = clustered(0, n_classes=300, d=64)
    cpu = metrics.evaluate(emb, labels, [1, 2, 4, 8], seed=0, device="cpu")
    gpu = metrics.evaluate(emb, labels, [1, 2, 4, 8], seed=0, device="cuda")
    retrieval = ("recall@1", "recall@8", "map@r")
    assert [gpu[k] for k in retrieval] == [cpu[k] for k in retrieval]
    assert abs(gpu["nmi"] - cpu["nmi"]) < 0.02
