"""Retrieval and clustering metrics on L2-normalised embeddings (spec section 7).

Definitions (by default the whole test split is both the query set and the database; with a
separate gallery, as datasets with query/gallery splits have, the queries search the gallery):

- Distance: squared Euclidean distance between the L2-normalised float32 embeddings, as faiss
  computes it (the ranking of cosine similarity, and the same numbers pytorch-metric-learning
  ranks by). A zero embedding stays zero.
- Neighbours of a query: every *other* point (the query is excluded by index, not by
  distance, so an exact duplicate stays a neighbour), by increasing distance; exact-distance
  ties go to the smaller index (faiss's order on the CPU; a test checks it on vectors whose
  distances are exact). On a GPU, faiss orders ties its own way; TorchFlatL2 keeps this rule.
- Recall@K: a query is a hit if any of its K nearest neighbours has its class.
- MAP@R and R-precision (Musgrave et al. 2020): a query with R positives (its class size - 1)
  scores, over its R nearest neighbours, (1/R) sum_{r <= R, rel(r)} P@r and (#positives)/R.
- Separate gallery: the neighbours of a query are all gallery points (none is excluded); its
  positives are the gallery points of its class, R their number. Clustering is of the queries.
- Singletons: a query whose class has no other member has no positive, so Recall@K, MAP@R and
  R-precision are undefined for it; it is left out of these three means, as
  pytorch-metric-learning does (the paper's code would count it as a miss; its test splits have
  none). It stays in the database and in the clustering metrics. A warning says how many.
- Clustering: k-means with k = number of test classes, then NMI (2 I / (H(classes) +
  H(clusters)), sklearn's arithmetic normalisation) and pairwise F1 (spec section 7), both from
  the nonzero cells of the class x cluster contingency table.
- k-means (`kmeans`, the choice of algorithm): "kmeans++" (default) clusters as the authors' code
  does with scikit-learn's KMeans (lib/evaluation.py:20): greedy k-means++ seeding (2 + ln k
  candidates per centre), 10 restarts, Lloyd to the centre-shift tolerance 1e-4 x mean feature
  variance (at most 300 iterations), empty clusters moved to the points farthest from their
  centres, the restart with the least inertia kept; deterministic for a seed; the assignment
  steps are faiss's exact search (`_reassign`). Where the searches run in torch or on a GPU,
  seeding and Lloyd run whole on that torch device (`hdml.eval.kmeans_torch`: the same random draws,
  hence the same centres up to float rounding of near-ties; seconds instead of an hour at SOP's
  size); on the CPU backend they stay in numpy, which never imports torch. "faiss" is one Lloyd
  run from sampled points:
  Lloyd's algorithm as faiss.Kmeans(d, k, niter=20, seed=seed) (faiss 1.15) runs it and
  pytorch-metric-learning calls it: the same initial sample, float32 centroid means,
  empty-cluster splits and early stop, then a final assignment. Each assignment step searches
  only the centroids that moved, since a point whose centroid stayed can only switch to a moved
  one; the clusters equal faiss's (the tests compare them) up to float rounding of near-ties.
  Deterministic for a given seed. Unlike faiss, no subsampling when n > 256 k.
  "sklearn" is scikit-learn's KMeans itself with the authors' arguments (`kmeans_sklearn`), so that
  the clustering equals theirs exactly (bench/authors_eval.py runs their lib/evaluation.py beside it).

Search backends (`device`, see `resolve_device`): faiss on the CPU, faiss on the GPU when this
faiss has CUDA (pip's faiss has none), or `TorchFlatL2`, the same exact search in torch, for
CUDA machines whose faiss is CPU-only. "auto" takes a GPU when there is one: faiss's, else
torch's if the caller has already imported torch (the trainer has; the standalone evaluation
does not pay torch's import, ten times this module's, to find out). The code path is the
same for all. Memory is O(n (d + k1) + chunk * max K), k1 <= max(R, 64): no n x n matrix;
the k-NN search runs in query chunks, each reduced at once to per-query numbers, and only
each point's k1 nearest are kept (the first k-means step reads its nearest centroid there).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sys
from collections.abc import Iterator

import faiss
import numpy as np

log = logging.getLogger(__name__)

KMEANS_NITER = 20
KMEANS = ("kmeans++", "faiss", "sklearn")  # clustering algorithms of `evaluate` (module docstring)
# lib/evaluation.py:20 calls KMeans(n_clusters, random_state=1); n_init was 10 by default in the
# scikit-learn of 2019 (1.4 made it "auto", a single k-means++ run)
SKLEARN_RANDOM_STATE, SKLEARN_N_INIT = 1, 10
KMEANS_PP_RESTARTS, KMEANS_PP_MAX_ITER, KMEANS_PP_TOL = 10, 300, 1e-4  # sklearn's KMeans defaults
GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger k searches on the CPU
# Distances per query block of TorchFlatL2 (16 bytes each at peak): large on a GPU, whose kernels
# need the parallelism; smaller on the CPU, where larger blocks only cost memory.
TORCH_BLOCK_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 22}
DEVICES = "'auto', 'cpu', 'cuda' or 'torch:<torch device>' (e.g. 'torch:cpu')"
_SPLIT_EPS = np.float32(1 / 1024)  # faiss's symmetric perturbation of a split centroid
_SUM_FEATURES = 32  # features per block of Lloyd's cluster sums (a gathered copy of 32 x n float64)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, as the contiguous float32 array faiss needs (zero rows stay 0)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def check_inputs(embeddings: np.ndarray, labels: np.ndarray, ks: list[int] | None = None,
                 names: tuple[str, str] = ("embeddings", "labels"), own_gallery: bool = True) -> None:
    """Reject what would make a metric undefined, naming the offending input (`names`: how the
    caller calls the two arrays). `own_gallery`: the set is searched for its own positives."""
    check_arrays(embeddings, labels, names)
    _, sizes = np.unique(labels, return_counts=True)
    if len(sizes) < 2:
        raise ValueError(f"{names[1]}: a single class; NMI, F1 and retrieval need at least two")
    if own_gallery and sizes.max() < 2:
        raise ValueError(f"{names[1]}: every class has one member, so no query has a positive")
    if ks is not None and (not ks or any(int(k) != k or k < 1 for k in ks)):
        raise ValueError(f"ks: expected positive integers, got {ks}")


def check_arrays(embeddings: np.ndarray, labels: np.ndarray, names: tuple[str, str]) -> None:
    """Embeddings n x d, finite, with n labels."""
    what, tags = names
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-d array (n x d), got shape {embeddings.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{tags}: expected a 1-d array, got shape {labels.shape}")
    if len(embeddings) != len(labels):
        raise ValueError(f"{tags}: {len(labels)} labels for {len(embeddings)} embeddings")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} rows contain NaN or infinite values "
                         f"(first: row {int(np.argmax(bad))})")


# --- search backends -------------------------------------------------------------------------

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
        import torch
        if not torch.cuda.is_available():
            raise ValueError("device='cuda': no CUDA GPU here (this faiss has no GPU support and "
                             "torch.cuda.is_available() is False); use 'cpu' or 'auto'")
        return "torch:cuda"
    if device.startswith("torch:"):
        import torch
        try:
            torch_device = torch.device(device.removeprefix("torch:"))
        except RuntimeError as e:
            raise ValueError(f"device={device!r}: not a torch device ({e})") from None
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: torch.cuda.is_available() is False")
        return device
    raise ValueError(f"device: expected {DEVICES}, got {device!r}")


def _l2_index(vectors: np.ndarray, k: int = 1, device: str = "cpu") -> faiss.Index | TorchFlatL2:
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


def _nearest(queries: np.ndarray, centroids: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(index, squared distance) of each query's nearest centroid, ties by smaller index."""
    dist, idx = _l2_index(centroids, device=device).search(queries, 1)
    return idx[:, 0], dist[:, 0]


@contextlib.contextmanager
def _full_precision_matmul() -> Iterator[None]:
    """float32 matmuls in full float32 inside, whatever the caller set: a TF32 (CUDA) or bf16
    (oneDNN) product moves a distance by up to ~1e-3 and reorders neighbours. torch 2.14 checks at
    each cuBLAS call that its legacy setting (set_float32_matmul_precision, allow_tf32) agrees
    with the per-backend fp32_precision, and raises if not, so setting one of them alone would
    break; set_float32_matmul_precision sets all together. Restored after; not thread-safe."""
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
    the product in full float32 precision (`_full_precision_matmul`). Queries go in blocks of
    `block_elements` / n rows, so memory stays O(block x n). Each distance is packed with its
    index into one int64 key (a non-negative float32's bits order as an integer), so top-k
    takes the k smallest (distance, index) pairs: ascending, ties to the smaller index also
    across the k-th place, as faiss on the CPU (faiss's GPU breaks such ties its own way).
    The distances can differ from faiss's in the last bits (another BLAS; faiss's non-BLAS path
    for small searches), so near-ties can order differently.
    """

    def __init__(self, d: int, device: str, block_elements: int | None = None) -> None:
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
        import torch

        x = torch.tensor(np.ascontiguousarray(vectors, dtype=np.float32), device=self.device)
        self._x = torch.cat([self._x, x])
        self._norms = torch.cat([self._norms, (x * x).sum(1)])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances (float32) and indices (int64) of each query's k nearest indexed
        vectors, both (len(queries), k) numpy arrays, by increasing (distance, index)."""
        import torch

        n = self.ntotal
        if not 1 <= k <= n:
            raise ValueError(f"k = {k} neighbours of {n} indexed vectors")
        q_all = torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32))
        dist = np.empty((len(q_all), k), dtype=np.float32)
        idx = np.empty((len(q_all), k), dtype=np.int64)
        step = max(1, self.block_elements // n)
        ids = torch.arange(n, device=self.device)
        with _full_precision_matmul(), torch.autocast(self.device.type, enabled=False):
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


# --- retrieval -------------------------------------------------------------------------------

def _chunks(n: int, size: int, d: int) -> list[tuple[int, int]]:
    """Query chunks aligned to `size`; a tail too small for faiss's BLAS path joins the previous
    chunk, so distances come out as one whole-split faiss search computes them."""
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and (n - bounds[-2]) * d < faiss.cvar.distance_compute_blas_threshold:
        del bounds[-2]
    return list(itertools.pairwise(bounds))


def _neighbours(index: faiss.Index, queries: np.ndarray, rows: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of the k nearest others of each query (row `rows[i]` of
    the indexed set): search k+1 and drop the query itself; where it is not among them (tied
    with smaller-index duplicates), the first k are already its k nearest others."""
    dist, nbr = index.search(queries, k + 1)
    keep = nbr != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return nbr[keep].reshape(len(nbr), k), dist[keep].reshape(len(nbr), k)


def _first_positive(match: np.ndarray) -> np.ndarray:
    """0-based rank of each row's first True, or the row length if none."""
    return np.where(match.any(axis=1), match.argmax(axis=1), match.shape[1])


def retrieval_metrics(x: np.ndarray, codes: np.ndarray, ks: list[int],
                      chunk: int | None = None, device: str = "auto") -> dict[str, float]:
    """Recall@K for every K in ks, MAP@R and R-precision of normalised `x` with class `codes`
    (0..C-1), over the queries that have a positive."""
    return _retrieval(x, codes, ks, chunk, resolve_device(device))[0]


def _retrieval(x: np.ndarray, codes: np.ndarray, ks: list[int], chunk: int | None = None,
               device: str = "cpu") -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """retrieval_metrics, plus every point's k1 nearest others (indices, squared distances).

    One pass finds every query's k1 = max(R, min(max K, 64)) nearest others (R: the largest
    number of positives), which settles MAP@R, R-precision and Recall@K for K <= k1. Larger K
    need a second search with k = max K only for the queries with no positive among their k1.
    """
    n, d = x.shape
    chunk = chunk or faiss.cvar.distance_compute_blas_query_bs
    positives = np.bincount(codes)[codes] - 1
    valid = positives > 0
    r_max = int(positives.max())
    k1 = min(n - 1, max(r_max, min(max(ks), 64)))
    index = _l2_index(x, max(ks) + 1, device)
    nbr = np.empty((n, k1), dtype=np.int64)
    nbr_dist = np.empty((n, k1), dtype=np.float32)
    first = np.empty(n, dtype=np.int64)
    ap = np.zeros(n)
    rp = np.zeros(n)
    ranks = np.arange(1, r_max + 1)
    for lo, hi in _chunks(n, chunk, d):
        rows = np.arange(lo, hi)
        nbr[lo:hi], nbr_dist[lo:hi] = _neighbours(index, x[lo:hi], rows, k1)
        match = codes[nbr[lo:hi]] == codes[rows, None]
        first[lo:hi] = _first_positive(match)
        r = np.maximum(positives[lo:hi], 1)
        rel = match[:, :r_max] & (ranks <= r[:, None])
        ap[lo:hi] = (np.cumsum(rel, axis=1) * rel / ranks).sum(axis=1) / r
        rp[lo:hi] = rel.sum(axis=1) / r
    k2 = min(n - 1, max(ks))
    deep = np.flatnonzero(valid & (first >= k1))
    if k2 > k1 and len(deep):
        for lo, hi in _chunks(len(deep), chunk, d):
            rows = deep[lo:hi]
            first[rows] = _first_positive(codes[_neighbours(index, x[rows], rows, k2)[0]] == codes[rows, None])
    return _summarise(first, ap, rp, valid, ks, "(singleton class)"), nbr, nbr_dist


def _summarise(first: np.ndarray, ap: np.ndarray, rp: np.ndarray, valid: np.ndarray, ks: list[int],
               why: str) -> dict[str, float]:
    """Recall@K, MAP@R and R-precision averaged over the queries with a positive (`valid`), from
    each query's rank of its first positive and its AP@R and R-precision; the others are named."""
    n, m = len(valid), int(valid.sum())
    if m < n:
        log.warning("%d of %d queries have no positive %s: left out of Recall@K, MAP@R and R-precision",
                    n - m, n, why)
    out = {f"recall@{K}": float((first[valid] < K).sum() / m) for K in ks}
    out["map@r"] = float(ap[valid].sum() / m)
    out["r_precision"] = float(rp[valid].sum() / m)
    return out


def _gallery_retrieval(q: np.ndarray, q_codes: np.ndarray, g: np.ndarray, g_codes: np.ndarray, ks: list[int],
                       chunk: int | None = None, device: str = "cpu") -> dict[str, float]:
    """Recall@K, MAP@R and R-precision of normalised queries `q` searching a separate gallery `g`
    (class codes shared), over the queries with a positive in the gallery; searches in query
    chunks as `_retrieval` does, each query's nearest max(R, min(max K, 64)) first and deeper
    only for the queries without a positive there."""
    n, d = q.shape
    chunk = chunk or faiss.cvar.distance_compute_blas_query_bs
    positives = np.bincount(g_codes, minlength=int(q_codes.max()) + 1)[q_codes]
    valid = positives > 0
    if not valid.any():
        raise ValueError("gallery_labels: no query's class is in the gallery, so no query has a positive")
    r_max = int(positives.max())
    k1 = min(len(g), max(r_max, min(max(ks), 64)))
    k2 = min(len(g), max(ks))
    index = _l2_index(g, max(k1, k2), device)
    first = np.empty(n, dtype=np.int64)
    ap, rp = np.zeros(n), np.zeros(n)
    ranks = np.arange(1, r_max + 1)
    for lo, hi in _chunks(n, chunk, d):
        match = g_codes[index.search(q[lo:hi], k1)[1]] == q_codes[lo:hi, None]
        first[lo:hi] = _first_positive(match)
        r = np.maximum(positives[lo:hi], 1)
        rel = match[:, :r_max] & (ranks <= r[:, None])
        ap[lo:hi] = (np.cumsum(rel, axis=1) * rel / ranks).sum(axis=1) / r
        rp[lo:hi] = rel.sum(axis=1) / r
    deep = np.flatnonzero(valid & (first >= k1))
    if k2 > k1 and len(deep):
        for lo, hi in _chunks(len(deep), chunk, d):
            rows = deep[lo:hi]
            first[rows] = _first_positive(g_codes[index.search(q[rows], k2)[1]] == q_codes[rows, None])
    return _summarise(first, ap, rp, valid, ks, "in the gallery")


# --- k-means ---------------------------------------------------------------------------------

def _means(x: np.ndarray, assign: np.ndarray, clusters: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Member count and mean of each cluster in `clusters`, summed in float32 in point order and
    scaled by float32(1/count) as faiss does (zero for an empty cluster)."""
    slot = np.full(k, -1)
    slot[clusters] = np.arange(len(clusters))
    members = np.flatnonzero(slot[assign] >= 0)
    where = slot[assign[members]]
    sums = np.zeros((len(clusters), x.shape[1]), dtype=np.float32)
    np.add.at(sums, where, x[members])
    count = np.bincount(where, minlength=len(clusters))
    full = count > 0
    sums[full] *= (np.float32(1) / count[full].astype(np.float32))[:, None]
    return count, sums


def _split_empty(centroids: np.ndarray, count: np.ndarray, n: int) -> None:
    """faiss's split_clusters: each empty cluster, in index order, takes a perturbed copy of a
    cluster drawn with probability (size - 1) / (n - k) by a cyclic scan of faiss's own generator
    (reseeded at every call), or of the largest cluster after 10 k failed draws."""
    empty = np.flatnonzero(count == 0)
    if not len(empty):
        return
    k = len(centroids)
    weight = count.astype(np.float32)
    scale = float(np.float32(n - k))
    rng = faiss.RandomGenerator(1234)
    even = np.arange(centroids.shape[1]) % 2 == 0
    grow = np.where(even, np.float32(1) + _SPLIT_EPS, np.float32(1) - _SPLIT_EPS)
    shrink = np.where(even, np.float32(1) - _SPLIT_EPS, np.float32(1) + _SPLIT_EPS)
    for ci in empty:
        p = ((weight.astype(np.float64) - 1.0) / scale).astype(np.float32).tolist()
        cj = next((t % k for t in range(10 * k) if rng.rand_float() < p[t % k]), None)
        if cj is None:
            cj = int(np.argmax(weight))
        centroids[ci] = centroids[cj] * grow
        centroids[cj] *= shrink
        weight[ci] = weight[cj] / np.float32(2)
        weight[cj] -= weight[ci]


def check_kmeans_args(n: int, k: int, seed: int) -> None:
    """Both clusterings refuse the same bad requests with the same words."""
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k = {k} clusters for {n} points")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = KMEANS_NITER,
           neighbours: tuple[np.ndarray, np.ndarray] | None = None, device: str = "auto") -> np.ndarray:
    """Cluster index of each row of `x` after `niter` Lloyd iterations (see module docstring).
    `neighbours` (each point's nearest others, as `_retrieval` returns them) spares most of
    the first assignment step, whose centroids are data points."""
    n = len(x)
    check_kmeans_args(n, k, seed)
    device = resolve_device(device)
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed + 1)
    centroids = x[perm[:k]].copy()
    if neighbours is None:
        assign, dist = _nearest(x, centroids, device)
    else:
        assign, dist = _nearest_sampled(x, perm[:k], *neighbours, device)
    count, means = _means(x, assign, np.arange(k), k)
    prev_obj = None
    for _ in range(niter):
        obj = np.cumsum(dist, dtype=np.float32)[-1]  # faiss sums the objective in float32, in order
        new = means.copy()
        _split_empty(new, count, n)
        moved = np.flatnonzero((new != centroids).any(axis=1))
        centroids = new
        old = assign
        assign, dist = _reassign(x, centroids, assign, dist, moved, device)
        if obj == prev_obj:  # faiss's early stop (threshold 0): the objective repeated exactly
            break
        prev_obj = obj
        changed = np.unique(np.concatenate([old[assign != old], assign[assign != old]]))
        if len(changed):
            count[changed], means[changed] = _means(x, assign, changed, k)
    return assign


def _kmeanspp_draws(rngs: list[np.random.Generator], n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every random number a k-means++ seeding takes, drawn up front: per generator the first
    centre's index, then 2 + ln k uniforms for each further centre, the order in which a
    step-by-step seeding draws them (a generator's draws do not depend on how they are
    batched). The numpy and torch seedings share them, so they choose the same centres.
    Returns (first (restarts,), uniforms (restarts, k - 1, trials))."""
    trials = 2 + int(np.log(k))
    first = np.array([g.integers(n) for g in rngs], dtype=np.int64)
    return first, np.stack([g.random((k - 1, trials)) for g in rngs])


def _sq_dist(x: np.ndarray, x_sq: np.ndarray, centres: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Squared distances (float32, clamped at 0) of every centre (rows) to every point (columns),
    into `out` if given (a buffer reused step after step spares a fresh array's page faults)."""
    d = np.matmul(centres, x.T, out=out)
    d *= np.float32(-2)
    d += x_sq
    d += (centres * centres).sum(1, keepdims=True)
    return np.maximum(d, 0, out=d)


def _kmeanspp_seeds(x: np.ndarray, k: int, rngs: list[np.random.Generator], stop: int | None = None) -> np.ndarray:
    """Greedy k-means++ (scikit-learn's `_kmeans_plusplus`): each new centre is the best of
    2 + ln k candidates drawn with probability proportional to D^2, the one leaving the least
    potential. One run per generator, all advanced together so that every step is one matrix
    product over the data. Returns the centres' row indices, (restarts, k); `stop` ends after
    that many centres (benchmarks time a prefix)."""
    n, r = len(x), len(rngs)
    first, uniforms = _kmeanspp_draws(rngs, n, k)
    trials = uniforms.shape[2]
    x_sq = (x * x).sum(1)
    chosen = np.empty((r, k), dtype=np.int64)
    chosen[:, 0] = first
    closest = _sq_dist(x, x_sq, x[first])
    pot = closest.sum(1, dtype=np.float64)
    rows = np.arange(r)
    cumulative = np.empty((r, n))
    d = np.empty((r * trials, n), dtype=np.float32)
    for c in range(1, stop or k):
        np.cumsum(closest, axis=1, dtype=np.float64, out=cumulative)
        cand = np.stack([np.searchsorted(cumulative[i], uniforms[i, c - 1] * pot[i]) for i in range(r)])
        cand = np.minimum(cand, n - 1)
        cand_dist = _sq_dist(x, x_sq, x[cand.ravel()], out=d).reshape(r, trials, n)
        np.minimum(cand_dist, closest[:, None, :], out=cand_dist)
        pots = cand_dist.sum(2, dtype=np.float64)
        best = pots.argmin(1)
        chosen[:, c] = cand[rows, best]
        closest, pot = cand_dist[rows, best], pots[rows, best]
    return chosen[:, :stop]


def _cluster_sums(x64t: np.ndarray, assign: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, float64 sum) of each of k clusters: np.add.reduceat over the points sorted by
    cluster, run along each feature of the transposed float64 points `x64t` (d, n), whose values
    are contiguous there: the additions reduceat makes down the columns of x, in the same order
    (not a plain running sum), at a third of the time at SOP's size (the reduceat itself a
    tenth). Features go in blocks of _SUM_FEATURES, which bounds the gathered copy."""
    order = np.argsort(assign, kind="stable")
    count = np.bincount(assign, minlength=k)
    full = np.flatnonzero(count)
    starts = np.concatenate([[0], np.cumsum(count[full])[:-1]])
    sums = np.zeros((k, len(x64t)))
    for lo in range(0, len(x64t), _SUM_FEATURES):
        block = np.take(x64t[lo:lo + _SUM_FEATURES], order, axis=1)
        sums[full, lo:lo + _SUM_FEATURES] = np.add.reduceat(block, starts, axis=1).T
    return count, sums


def _lloyd(x: np.ndarray, centres: np.ndarray, max_iter: int, tol: float, device: str,
           x64t: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Lloyd from `centres` until the squared centre shift is <= tol (scikit-learn's rule, its
    empty clusters moved to the farthest points), then a final assignment: (clusters, inertia).
    Means in float64 (`x64t`: x as float64, transposed, kept across restarts), then float32."""
    k = len(centres)
    x64t = np.ascontiguousarray(x.T, dtype=np.float64) if x64t is None else x64t
    assign, dist = _nearest(x, centres, device)
    for _ in range(max_iter):
        count, sums = _cluster_sums(x64t, assign, k)
        new = np.zeros_like(centres)
        full = np.flatnonzero(count)
        new[full] = (sums[full] / count[full, None]).astype(np.float32)
        empty = np.flatnonzero(count == 0)
        if len(empty):
            new[empty] = x[np.argsort(-dist, kind="stable")[:len(empty)]]
        moved = np.flatnonzero((new != centres).any(axis=1))
        shift = float(((new.astype(np.float64) - centres) ** 2).sum())
        centres = new
        assign, dist = _reassign(x, centres, assign, dist, moved, device)
        if shift <= tol:
            break
    return assign, float(dist.sum(dtype=np.float64))


def _kmeans_torch_device(device: str) -> str | None:
    """The torch device on which `kmeans_restarts` runs for a resolved search `device`: the
    torch backend's, or faiss's GPU's when torch sees CUDA; None for numpy on the CPU."""
    if device.startswith("torch:"):
        return device.removeprefix("torch:")
    if device == "cuda":
        import torch

        return "cuda" if torch.cuda.is_available() else None
    return None


def kmeans_restarts(x: np.ndarray, k: int, seed: int = 0, n_init: int = KMEANS_PP_RESTARTS,
                    max_iter: int = KMEANS_PP_MAX_ITER, tol: float = KMEANS_PP_TOL,
                    device: str = "auto") -> np.ndarray:
    """Cluster index of each row of `x` as scikit-learn's KMeans(n_clusters=k) with its
    defaults, the authors' clustering (module docstring): the least-inertia of `n_init`
    k-means++ + Lloyd runs; first run wins ties. Deterministic for a given seed."""
    n = len(x)
    check_kmeans_args(n, k, seed)
    device = resolve_device(device)
    x = np.ascontiguousarray(x, dtype=np.float32)
    abs_tol = tol * float(x.astype(np.float64).var(axis=0).mean())
    rngs = [np.random.default_rng([seed, r]) for r in range(n_init)]
    torch_device = _kmeans_torch_device(device)
    if torch_device is not None:
        from hdml.eval import kmeans_torch

        return kmeans_torch.kmeans_restarts(x, k, rngs, max_iter, abs_tol, torch_device)
    best: tuple[np.ndarray, float] | None = None
    x64t = np.ascontiguousarray(x.T, dtype=np.float64)
    for seeds in _kmeanspp_seeds(x, k, rngs):
        assign, inertia = _lloyd(x, x[seeds].copy(), max_iter, abs_tol, device, x64t)
        if best is None or inertia < best[1]:
            best = (assign, inertia)
    return best[0]


def kmeans_sklearn(x: np.ndarray, k: int) -> np.ndarray:
    """Cluster index of each row of `x` from scikit-learn's KMeans called as the authors call it
    (lib/evaluation.py:20: `random_state=1` whatever the run's seed, `n_init=10` pinned, their
    scikit-learn's default). They then give each point the cluster of its nearest centre (a
    1-NN over the centres) and name each cluster by one of its points: a renaming, and the same
    partition as KMeans's own labels, which sklearn recomputes from the final centres."""
    from sklearn.cluster import KMeans

    check_kmeans_args(len(x), k, SKLEARN_RANDOM_STATE)
    return KMeans(n_clusters=k, random_state=SKLEARN_RANDOM_STATE, n_init=SKLEARN_N_INIT).fit(x).labels_


def _nearest_sampled(x: np.ndarray, sample: np.ndarray, nbr: np.ndarray, nbr_dist: np.ndarray,
                     device: str) -> tuple[np.ndarray, np.ndarray]:
    """_nearest(x, x[sample]) from each point's sorted nearest others: the nearest sampled
    point is the point itself or the first sampled one in its list, if any; only points with
    none search all centroids."""
    n, k = len(x), len(sample)
    slot = np.full(n, k)  # centroid index of each sampled point; k for the others
    slot[sample] = np.arange(k)
    cand = np.concatenate([slot[:, None], slot[nbr]], axis=1)
    cand_dist = np.concatenate([np.zeros((n, 1), np.float32), nbr_dist], axis=1)
    cand_dist[cand == k] = np.inf
    dist = cand_dist.min(axis=1)
    assign = np.where(cand_dist == dist[:, None], cand, k).min(axis=1)
    rows = np.flatnonzero(assign == k)
    if len(rows):
        assign[rows], dist[rows] = _nearest(x[rows], x[sample], device)
    return assign, dist


def _reassign(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, dist: np.ndarray,
              moved: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every point after `moved` centroids changed. A point whose centroid
    stayed keeps it unless a moved centroid is nearer (or as near with a smaller index); a point
    whose centroid moved searches them all."""
    n, k = len(x), len(centroids)
    if not len(moved):
        return assign, dist
    stale = np.isin(assign, moved)
    if stale.sum() * k + n * len(moved) >= n * k:
        return _nearest(x, centroids, device)
    assign, dist = assign.copy(), dist.copy()
    near, d_near = _nearest(x, centroids[moved], device)
    near = moved[near]
    better = ~stale & ((d_near < dist) | ((d_near == dist) & (near < assign)))
    assign[better], dist[better] = near[better], d_near[better]
    rows = np.flatnonzero(stale)
    assign[rows], dist[rows] = _nearest(x[rows], centroids, device)
    return assign, dist


# --- clustering metrics ----------------------------------------------------------------------

def clustering_metrics(classes: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic normalisation, as sklearn) and pairwise F1 of `clusters` against
    `classes`, from the nonzero cells of the contingency table: O(n log n) time, O(n) memory."""
    _, y = np.unique(classes, return_inverse=True)
    _, c = np.unique(clusters, return_inverse=True)
    a, b = np.bincount(y).astype(np.float64), np.bincount(c).astype(np.float64)
    keys, cells = np.unique(y.astype(np.int64) * len(b) + c, return_counts=True)
    cells = cells.astype(np.float64)
    n = float(len(y))

    def entropy(counts: np.ndarray) -> float:
        return float(-(counts / n * np.log(counts / n)).sum())

    h = entropy(a) + entropy(b)
    mi = float((cells / n * np.log(n * cells / (a[keys // len(b)] * b[keys % len(b)]))).sum())
    nmi = 2 * max(mi, 0.0) / h if h else 1.0

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    tp, same_cluster, same_class = pairs(cells), pairs(b), pairs(a)
    f1 = 2 * tp / (same_cluster + same_class) if tp else 0.0
    return {"nmi": nmi, "f1": f1}


def evaluate(query: np.ndarray, query_labels: np.ndarray, ks: list[int], seed: int = 0, device: str = "auto", *,
             gallery: np.ndarray | None = None, gallery_labels: np.ndarray | None = None,
             kmeans_algorithm: str = "kmeans++", normalise: bool = True) -> dict[str, float]:
    """All metrics of spec section 7: recall@K for K in ks, nmi, f1, map@r, r_precision, on the
    L2-normalised embeddings (the paper's protocol; `normalise=False` scores them as given).
    Without a gallery the query set is its own gallery, each query excluded from its own
    neighbours; with one, queries search the gallery (for datasets with query/gallery splits) and
    the clustering metrics are the queries'. `gallery` is keyword-only so that the positional
    calls `evaluate(z, labels, ks)` keep their meaning. `device` picks where the searches run
    (`resolve_device`), once for the whole call; `kmeans_algorithm` the clustering behind NMI and
    F1 (`KMEANS`, module docstring)."""
    if (gallery is None) != (gallery_labels is None):
        raise ValueError("gallery and gallery_labels: give both or neither")
    if kmeans_algorithm not in KMEANS:
        raise ValueError(f"kmeans: expected one of {list(KMEANS)}, got {kmeans_algorithm!r}")
    query, query_labels = np.asarray(query), np.asarray(query_labels)
    device = resolve_device(device)
    own = gallery is None
    check_inputs(query, query_labels, ks, names=("query", "query_labels") if not own else ("embeddings", "labels"),
                 own_gallery=own)
    scale = l2_normalise if normalise else functools.partial(np.ascontiguousarray, dtype=np.float32)
    x = scale(query)
    if own:
        _, codes = np.unique(query_labels, return_inverse=True)
        out, nbr, nbr_dist = _retrieval(x, codes, [int(k) for k in ks], device=device)
        neighbours = (nbr, nbr_dist)
    else:
        gallery, gallery_labels = np.asarray(gallery), np.asarray(gallery_labels)
        check_arrays(gallery, gallery_labels, ("gallery", "gallery_labels"))
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(f"gallery: {gallery.shape[1]}-d embeddings for {query.shape[1]}-d queries")
        _, all_codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
        codes, gallery_codes = all_codes[:len(query_labels)], all_codes[len(query_labels):]
        out = _gallery_retrieval(x, codes, scale(gallery), gallery_codes, [int(k) for k in ks],
                                 device=device)
        _, codes = np.unique(query_labels, return_inverse=True)
        neighbours = None
    k = int(codes.max()) + 1
    if kmeans_algorithm == "faiss":
        clusters = kmeans(x, k, seed, neighbours=neighbours, device=device)
    elif kmeans_algorithm == "sklearn":
        clusters = kmeans_sklearn(x, k)
    else:
        clusters = kmeans_restarts(x, k, seed, device=device)
    out.update(clustering_metrics(codes, clusters))
    return out
