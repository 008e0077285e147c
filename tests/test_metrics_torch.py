"""hdml.eval.metrics' torch search backend (TorchFlatL2) on the CPU, against faiss and brute force,
and the `device` setting that selects a backend."""
from __future__ import annotations

import re
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

from hdml.eval import kmeans as kmeans_module
from hdml.eval import metrics
from hdml.eval.metrics import TorchFlatL2, evaluate, resolve_device
from hdml.eval.search import TORCH_BLOCK_ELEMENTS, _gpu_resources, full_precision_matmul, l2_index, torch_device_of

HAS_CUDA = torch.cuda.is_available() or _gpu_resources() is not None


def torch_index(x: np.ndarray, rows: int) -> TorchFlatL2:
    """A CPU TorchFlatL2 over `x` that searches `rows` queries per block."""
    index = TorchFlatL2(x.shape[1], "cpu", block_elements=rows * len(x))
    index.add(x)
    return index


def faiss_search(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(q, k)


def lexicographic(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row i: every point by increasing float64 distance to query i, ties by smaller index."""
    dist = ((q.astype(np.float64)[:, None] - x[None]) ** 2).sum(-1)
    return np.array([np.lexsort((np.arange(len(x)), row)) for row in dist])


def clustered(seed: int, n_classes: int = 40, d: int = 16, sigma: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Classes of 2-8 points around random centres, float32, not normalised."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_classes), rng.integers(2, 9, n_classes)))
    x = rng.standard_normal((n_classes, d))[labels] + sigma * rng.standard_normal((len(labels), d))
    return x.astype(np.float32), labels


# --- search ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def separated() -> tuple[np.ndarray, np.ndarray]:
    """Random float data, and the random queries whose float64 distances to all points differ
    by more than 1e-3, a hundred times float32's rounding here: their order is unambiguous."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 16)).astype(np.float32)
    q = rng.standard_normal((400, 16)).astype(np.float32)
    dist = ((q.astype(np.float64)[:, None] - x[None]) ** 2).sum(-1)
    q = q[np.diff(np.sort(dist, axis=1), axis=1).min(axis=1) > 1e-3]
    assert len(q) > 100
    return x, q


@pytest.mark.parametrize("k", [1, 40, 149, 150])  # 40: more than a block's 7 rows; n - 1; n
def test_search_equals_faiss(separated, k: int) -> None:
    x, q = separated
    want_dist, want_idx = faiss_search(x, q, k)
    got_dist, got_idx = torch_index(x, rows=7).search(q, k)
    assert got_idx.dtype == np.int64 and got_dist.dtype == np.float32
    assert np.array_equal(got_idx, want_idx)
    np.testing.assert_allclose(got_dist, want_dist, rtol=1e-5, atol=1e-5)
    assert np.array_equal(got_idx, lexicographic(x, q)[:, :k])


@pytest.mark.parametrize("k", [1, 10, 150, 600])
def test_exact_ties_go_to_the_smaller_index(k: int) -> None:
    """Entries +-1/8 make every distance exact (a multiple of 1/16 up to 4, so each value is
    shared by many points, at the k-th place too); rows 50-99 duplicate rows 0-49."""
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 2, (600, 64)) * 2 - 1).astype(np.float32) / 8
    x[50:100] = x[:50]
    q = x[::3]
    dist, idx = torch_index(x, rows=16).search(q, k)
    order = lexicographic(x, q)[:, :k]
    assert np.array_equal(idx, order)
    assert np.array_equal(dist, ((q[:, None] - x[order]) ** 2).sum(-1))
    assert np.array_equal(idx, faiss_search(x, q, k)[1])


def test_ties_by_hand() -> None:
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    index = torch_index(x, rows=1)
    dist, idx = index.search(np.array([[1, 0], [0, 1], [0, 0]], np.float32), 2)
    assert idx.tolist() == [[0, 1], [3, 0], [0, 1]]
    assert dist.tolist() == [[0, 0], [0, 2], [1, 1]]


def test_search_edge_cases() -> None:
    index = torch_index(np.eye(3, dtype=np.float32), rows=2)
    dist, idx = index.search(np.empty((0, 3), np.float32), 2)
    assert dist.shape == idx.shape == (0, 2)
    with pytest.raises(ValueError, match="k = 4 neighbours of 3 indexed vectors"):
        index.search(np.eye(3, dtype=np.float32), 4)


@pytest.mark.parametrize("setting", [None, "highest", "high", "medium"])
def test_full_precision_matmul_sets_every_flag_and_restores_them(setting: str | None) -> None:
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    try:
        if setting:
            torch.set_float32_matmul_precision(setting)
        before = torch.get_float32_matmul_precision(), [b.fp32_precision for b in backends]
        with full_precision_matmul():
            # cuBLAS's own check, which raises where the legacy and per-backend settings disagree
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert [b.fp32_precision for b in backends] == ["ieee", "ieee"]
        assert (torch.get_float32_matmul_precision(), [b.fp32_precision for b in backends]) == before
    finally:
        torch.set_float32_matmul_precision("highest")
        for b in backends:
            b.fp32_precision = "none"


# --- evaluate on the torch backend ---------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_on_torch_equals_faiss(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = clustered(seed)
    searched = []
    search = TorchFlatL2.search
    monkeypatch.setattr(TorchFlatL2, "search", lambda self, q, k: searched.append(k) or search(self, q, k))
    clustered_on = []
    restarts = kmeans_module._kmeans_restarts_torch
    monkeypatch.setattr(kmeans_module, "_kmeans_restarts_torch",
                        lambda x, k, *rest: clustered_on.append(rest[-1]) or restarts(x, k, *rest))
    monkeypatch.setitem(TORCH_BLOCK_ELEMENTS, "cpu", 5 * len(x))  # blocks of 5 queries
    want = evaluate(x, labels, [1, 2, 4, 8, 100], seed=seed, device="cpu")
    assert not searched and not clustered_on
    got = evaluate(x, labels, [1, 2, 4, 8, 100], seed=seed, device="torch:cpu")
    assert searched[0] > 1  # the k-NN lists on TorchFlatL2
    assert clustered_on == ["cpu"]  # k-means++ and Lloyd in torch
    assert got == want


# --- device setting ----------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "message"), [
    ("gpu", "device: expected 'auto', 'cpu', 'cuda' or 'torch:<torch device>'"),
    ("torch", "device: expected"),
    ("CPU", "device: expected"),
    ("torch:bogus", "device='torch:bogus': not a torch device"),
    ("torch:", "device='torch:': not a torch device"),
])
def test_bad_device_is_an_error_naming_the_setting(device: str, message: str) -> None:
    x, labels = clustered(0)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate(x, labels, [1], device=device)


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "torch:cuda", "torch:cuda:0"])
def test_cuda_without_a_gpu_is_a_clear_error(device: str) -> None:
    x, labels = clustered(0)
    with pytest.raises(ValueError, match=re.escape(f"device='{device}':") + ".*is_available"):
        evaluate(x, labels, [1], device=device)


@pytest.mark.skipif(_gpu_resources() is not None, reason="faiss has a GPU, which auto takes")
def test_auto_takes_torch_cuda_only_where_torch_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "torch:cuda"
    assert resolve_device("cuda") == "torch:cuda"
    monkeypatch.delitem(sys.modules, "torch")
    assert resolve_device("auto") == "cpu"


@pytest.mark.parametrize(("device", "backend"), [("cpu", faiss.IndexFlatL2), ("torch:cpu", TorchFlatL2)])
def test_each_setting_builds_its_backend_and_resolves_to_itself(device: str, backend: type) -> None:
    assert resolve_device(device) == device
    assert type(l2_index(np.eye(3, dtype=np.float32), 1, device)) is backend


def test_evaluate_on_the_cpu_does_not_import_torch() -> None:
    code = ("import sys, numpy as np; from hdml.eval.metrics import evaluate; "
            "evaluate(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]), [1]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- k-means++ and Lloyd in torch (hdml.eval.kmeans) -------------------------------------------

# (points, clusters, dimensions, noise): the demo's test split (digits 5-9, 64-d embeddings),
# many small clusters, and noise that blurs them
KMEANS_CASES = {"digits-size": (900, 5, 64, 0.7), "many-clusters": (1500, 120, 32, 0.5), "noisy": (600, 20, 8, 3.0)}


def mixture(n: int, k: int, d: int, sigma: float, seed: int = 0) -> np.ndarray:
    """L2-normalised Gaussian mixture around k random centres, as `evaluate` clusters it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((k, d))[rng.integers(k, size=n)] + sigma * rng.standard_normal((n, d))
    return metrics.l2_normalise(x.astype(np.float32))


def generators(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, r]) for r in range(kmeans_module.KMEANS_PP_RESTARTS)]


def partition(clusters: np.ndarray) -> np.ndarray:
    """Cluster labels renumbered by first appearance: equal for equal partitions."""
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def inertia(x: np.ndarray, clusters: np.ndarray) -> float:
    x = x.astype(np.float64)
    return sum(float(((x[clusters == j] - x[clusters == j].mean(0)) ** 2).sum()) for j in np.unique(clusters))


@pytest.mark.parametrize("case", KMEANS_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_seeding_chooses_the_numpy_centres(case: str, seed: int) -> None:
    n, k, d, sigma = KMEANS_CASES[case]
    x = mixture(n, k, d, sigma, seed)
    want = kmeans_module._kmeanspp_seeds(x, k, generators(seed))
    got = kmeans_module.kmeanspp_seeds_torch(torch.as_tensor(x), k, generators(seed)).numpy()
    assert np.array_equal(got, want)
    assert np.array_equal(kmeans_module.kmeanspp_seeds_torch(torch.as_tensor(x), k, generators(seed), stop=3).numpy(),
                          want[:, :3])


def duplicates() -> tuple[np.ndarray, int]:
    """30 copies of 10 points and k = 12: the seeding runs out of distinct points, and Lloyd
    meets empty clusters (moved to the farthest points)."""
    return np.repeat(mixture(10, 10, 8, 1.0), 30, axis=0), 12


@pytest.mark.parametrize("case", [*KMEANS_CASES, "separated", "duplicates"])
def test_torch_clustering_gives_the_numpy_partition_and_sklearns_quality(case: str) -> None:
    """Same partition on the CPU (the cluster numbers may differ where restarts tie in inertia);
    the best inertia within 1% of scikit-learn's KMeans(k, n_init=10) (another random stream)."""
    from sklearn.cluster import KMeans

    if case == "duplicates":
        x, k = duplicates()
    else:
        n, k, d, sigma = KMEANS_CASES.get(case, (60, 12, 16, 0.001))
        x = mixture(n, k, d, sigma)
    want = metrics.kmeans_restarts(x, k, seed=3, device="cpu")
    got = metrics.kmeans_restarts(x, k, seed=3, device="torch:cpu")
    assert np.array_equal(partition(got), partition(want))
    assert inertia(x, got) <= 1.01 * KMeans(k, n_init=10, random_state=1).fit(x).inertia_ + 1e-9
    assert np.array_equal(metrics.kmeans_restarts(x, k, seed=3, device="torch:cpu"), got)


def test_clustering_runs_in_torch_where_the_searches_do_or_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert torch_device_of("cpu") is None
    assert torch_device_of("torch:cpu") == "cpu"
    assert torch_device_of("torch:cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device_of("cuda") == "cuda"  # faiss's GPU: seeding on torch's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device_of("cuda") is None


@pytest.mark.gpu
def test_cuda_clustering_gives_the_numpy_partition_and_fits_sop_size() -> None:
    """On CUDA: the numpy partition; at SOP's size (60,502 x 512, k = 11,316), 50 seeding
    steps and 2 Lloyd iterations take under 0.6 GiB of device memory besides the points
    (hdml.eval.kmeans's docstring counts it)."""
    n, k, d, sigma = KMEANS_CASES["many-clusters"]
    x = mixture(n, k, d, sigma)
    want = metrics.kmeans_restarts(x, k, seed=3, device="cpu")
    assert np.array_equal(partition(metrics.kmeans_restarts(x, k, seed=3, device="torch:cuda")), partition(want))
    big = torch.as_tensor(mixture(60502, 11316, 512, 2.2), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seeds = kmeans_module.kmeanspp_seeds_torch(big, 11316, generators(0), stop=50)
    assert seeds.shape == (kmeans_module.KMEANS_PP_RESTARTS, 50)
    kmeans_module.lloyd_torch(big, (big * big).sum(1), big[:11316].clone(), max_iter=2, tol=-1.0)  # any 11,316 rows
    assert torch.cuda.max_memory_allocated() - base < 0.6 * 2**30
