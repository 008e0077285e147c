"""Exact squared-L2 k-nearest-neighbour search, the one primitive under retrieval and k-means.

- Distance: squared Euclidean distance between float32 vectors, as faiss computes it
  ((|q|^2 + |x|^2) - 2 q.x, clamped at 0); on L2-normalised embeddings the ranking of cosine
  similarity, and the same numbers pytorch-metric-learning ranks by.
- Order: by increasing distance; exact-distance ties go to the smaller index (faiss's order on the
  CPU; a test checks it on vectors whose distances are exact). On a GPU, faiss orders ties its own
  way; TorchFlatL2 keeps this rule.

Backends (`device`, see `resolve_device`): faiss on the CPU, faiss on the GPU when this faiss has
CUDA (pip's faiss has none), or `TorchFlatL2`, the same exact search in torch, for CUDA machines
whose faiss is CPU-only. "auto" takes a GPU when there is one: faiss's, else torch's if the caller
has already imported torch (the trainer has; the standalone evaluation does not pay torch's import,
ten times the evaluation's, to find out). The code path is the same for all.

Memory: the indexed vectors plus one block of query-to-index distances, never an n x n matrix:
callers search in query chunks, and TorchFlatL2 computes `TORCH_BLOCK_ELEMENTS` distances at a time.
torch is imported inside the functions that need it, so that the CPU backend never imports it.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator

import faiss
import numpy as np

GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger k searches on the CPU
# Distances per query block of TorchFlatL2 (16 bytes each at peak): large on a GPU, whose kernels
# need the parallelism; smaller on the CPU, where larger blocks only cost memory.
TORCH_BLOCK_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 22}
DEVICES = "'auto', 'cpu', 'cuda' or 'torch:<torch device>' (e.g. 'torch:cpu')"


@functools.cache
def _gpu_resources() -> object | None:
    """faiss GPU resources when this faiss has CUDA and sees a device, else None."""
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.StandardGpuResources()
    return None


def resolve_device(device: str) -> str:
    """The backend a `device` setting selects, spelt as the setting that selects only it:
    "cpu" (faiss on the CPU), "cuda" (faiss on the GPU) or "torch:<device>" (TorchFlatL2).

    "auto": faiss's GPU, else torch's CUDA if torch is already imported, else "cpu".
    "cuda": faiss's GPU, else torch's; an error without either.
    """
    if device == "auto":
        if _gpu_resources() is not None:
            return "cuda"
        torch = sys.modules.get("torch")
        return "torch:cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda":
        if _gpu_resources() is not None:
            return device
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch
        if not torch.cuda.is_available():
            raise ValueError("device='cuda': no CUDA GPU here (this faiss has no GPU support and "
                             "torch.cuda.is_available() is False); use 'cpu' or 'auto'")
        return "torch:cuda"
    if device.startswith("torch:"):
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch
        try:
            torch_device = torch.device(device.removeprefix("torch:"))
        except RuntimeError as e:
            raise ValueError(f"device={device!r}: not a torch device ({e})") from None
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: torch.cuda.is_available() is False")
        return device
    raise ValueError(f"device: expected {DEVICES}, got {device!r}")


def torch_device_of(device: str) -> str | None:
    """The torch device on which torch work beside a resolved search `device` runs (k-means
    seeding and Lloyd): the torch backend's, or faiss's GPU's when torch sees CUDA; None for the
    CPU, where that work stays in numpy."""
    if device.startswith("torch:"):
        return device.removeprefix("torch:")
    if device == "cuda":
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch

        return "cuda" if torch.cuda.is_available() else None
    return None


def l2_index(vectors: np.ndarray, k: int = 1, device: str = "cpu") -> faiss.Index | TorchFlatL2:
    """Exact L2 index over `vectors` for k-NN searches on `device`, a backend as `resolve_device`
    returns it (the public entry points resolve once per call); faiss's GPU index only where k
    allows, else its CPU one."""
    if device.startswith("torch:"):
        index = TorchFlatL2(vectors.shape[1], device.removeprefix("torch:"))
    elif device == "cuda" and k <= GPU_MAX_K:
        index = faiss.GpuIndexFlatL2(_gpu_resources(), vectors.shape[1])
    else:
        index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    return index


def nearest(queries: np.ndarray, centroids: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(index, squared distance) of each query's nearest centroid, ties by smaller index."""
    dist, idx = l2_index(centroids, device=device).search(queries, 1)
    return idx[:, 0], dist[:, 0]


@contextlib.contextmanager
def full_precision_matmul() -> Iterator[None]:
    """float32 matmuls in full float32 inside, whatever the caller set: a TF32 (CUDA) or bf16
    (oneDNN) product moves a distance by up to ~1e-3 and reorders neighbours. torch 2.14 checks at
    each cuBLAS call that its legacy setting (set_float32_matmul_precision, allow_tf32) agrees
    with the per-backend fp32_precision, and raises if not, so setting one of them alone would
    break; set_float32_matmul_precision sets all together. Restored after; not thread-safe."""
    # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
    import torch

    legacy = torch.get_float32_matmul_precision()
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    precisions = [b.fp32_precision for b in backends]
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)
        for b, precision in zip(backends, precisions, strict=True):
            b.fp32_precision = precision


class TorchFlatL2:
    """Exact squared-L2 k-NN on a torch device with the interface of faiss's flat index
    (`add`, `search`), for CUDA machines whose faiss has no GPU support.

    Distances as faiss computes them: (|q|^2 + |x|^2) - 2 q.x in float32, clamped at 0, with
    the product in full float32 precision (`full_precision_matmul`). Queries go in blocks of
    `block_elements` / n rows, so memory stays O(block x n). Each distance is packed with its
    index into one int64 key (a non-negative float32's bits order as an integer), so top-k
    takes the k smallest (distance, index) pairs: ascending, ties to the smaller index also
    across the k-th place, as faiss on the CPU (faiss's GPU breaks such ties its own way).
    The distances can differ from faiss's in the last bits (another BLAS; faiss's non-BLAS path
    for small searches), so near-ties can order differently.
    """

    def __init__(self, d: int, device: str, block_elements: int | None = None) -> None:
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch

        self.d = d
        self.device = torch.device(device)
        default = TORCH_BLOCK_ELEMENTS.get(self.device.type, TORCH_BLOCK_ELEMENTS["cpu"])
        self.block_elements = block_elements or default
        self._x = torch.empty((0, d), dtype=torch.float32, device=self.device)
        self._norms = torch.empty(0, dtype=torch.float32, device=self.device)

    @property
    def ntotal(self) -> int:
        return len(self._x)

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n x d), copied to the device."""
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch

        x = torch.tensor(np.ascontiguousarray(vectors, dtype=np.float32), device=self.device)
        self._x = torch.cat([self._x, x])
        self._norms = torch.cat([self._norms, (x * x).sum(1)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (float32) and indices (int64) of each query's k nearest indexed
        vectors, both (len(queries), k) numpy arrays, by increasing (distance, index)."""
        # here: torch only on the paths that search in torch (the CPU evaluation never loads it)
        import torch

        n = self.ntotal
        if not 1 <= k <= n:
            raise ValueError(f"k = {k} neighbours of {n} indexed vectors")
        q_all = torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32))
        dist = np.empty((len(q_all), k), dtype=np.float32)
        idx = np.empty((len(q_all), k), dtype=np.int64)
        step = max(1, self.block_elements // n)
        ids = torch.arange(n, device=self.device)
        with full_precision_matmul(), torch.autocast(self.device.type, enabled=False):
            for lo in range(0, len(q_all), step):
                q = q_all[lo:lo + step].to(self.device)
                d = (q * q).sum(1, keepdim=True) + self._norms
                d.sub_(torch.mm(q, self._x.T).mul_(2)).clamp_(min=0)  # never -0: sign bit clear
                key = d.view(torch.int32).to(torch.int64)
                del d
                key.bitwise_left_shift_(32).bitwise_or_(ids)
                # k = 1 (every k-means step): one reduction instead of a selection
                top = key.amin(1, keepdim=True) if k == 1 else key.topk(k, dim=1, largest=False).values
                del key
                dist[lo:lo + step] = (top >> 32).to(torch.int32).view(torch.float32).cpu().numpy()
                idx[lo:lo + step] = (top & 0xFFFFFFFF).cpu().numpy()
        return dist, idx
