"""k-means behind NMI and F1 (k = the number of test classes), one of `KMEANS` (run-config key
`eval_kmeans`); each deterministic for a seed, its assignment steps exact searches (`hdml.eval.search`).

- "kmeans++" (default, `kmeans_restarts`) clusters as the authors' code does with scikit-learn's
  KMeans (lib/evaluation.py:20): greedy k-means++ seeding (2 + ln k candidates per centre), 10
  restarts, Lloyd to the centre-shift tolerance 1e-4 x mean feature variance (at most 300
  iterations), empty clusters moved to the points farthest from their centres, the restart with
  the least inertia kept. In numpy on the CPU backend (never importing torch); where the searches
  run in torch or on a GPU, whole on that torch device (the `_torch` functions: seconds instead of
  an hour at SOP's size) with the same random draws (`_kmeanspp_draws`, on the device before the
  seeding starts), hence the same centres up to float rounding of near-ties, and the same Lloyd.
- "faiss" (`kmeans`): one Lloyd run from sampled points as faiss.Kmeans(d, k, niter=20, seed=seed)
  (faiss 1.15) runs it and pytorch-metric-learning calls it: the same initial sample, float32
  centroid means, empty-cluster splits and early stop, then a final assignment. Each assignment
  step searches only the centroids that moved (a point whose centroid stayed can only switch to a
  moved one); the clusters equal faiss's (the tests compare them) up to float rounding of
  near-ties. Unlike faiss, no subsampling when n > 256 k.
- "sklearn" (`kmeans_sklearn`): scikit-learn's KMeans itself with the authors' arguments, so that
  the clustering equals theirs exactly (bench/authors_eval.py runs their lib/evaluation.py beside it).

Memory: no n x n matrix. In numpy, the points (float32, and float64 for the cluster sums), each
seeding step's candidate distances (restarts x trials x n) and the searches' blocks. On a torch
device, the points, each seeding step's candidate distances and running sums, and per Lloyd step
one block of point-to-centre distances (`TORCH_BLOCK_ELEMENTS`, 256 MiB on CUDA), the float64
cluster sums (k d) and two sets of centres: about 0.5 GB at SOP's 60,502 x 512, k = 11,316.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import faiss
import numpy as np

from hdml.eval.search import TORCH_BLOCK_ELEMENTS, full_precision_matmul, nearest, resolve_device, torch_device_of

if TYPE_CHECKING:
    import torch

KMEANS = ("kmeans++", "faiss", "sklearn")  # clustering algorithms of `hdml.eval.metrics.evaluate`
KMEANS_NITER = 20
# lib/evaluation.py:20 calls KMeans(n_clusters, random_state=1); n_init was 10 by default in the
# scikit-learn of 2019 (1.4 made it "auto", a single k-means++ run)
SKLEARN_RANDOM_STATE, SKLEARN_N_INIT = 1, 10
KMEANS_PP_RESTARTS, KMEANS_PP_MAX_ITER, KMEANS_PP_TOL = 10, 300, 1e-4  # sklearn's KMeans defaults
_SPLIT_EPS = np.float32(1 / 1024)  # faiss's symmetric perturbation of a split centroid
_SUM_FEATURES = 32  # features per block of Lloyd's cluster sums (a gathered copy of 32 x n float64)


def check_kmeans_args(n: int, k: int, seed: int) -> None:
    """Both clusterings refuse the same bad requests with the same words."""
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k = {k} clusters for {n} points")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")


def kmeans_sklearn(x: np.ndarray, k: int) -> np.ndarray:
    """Cluster index of each row of `x` from scikit-learn's KMeans called as the authors call it
    (lib/evaluation.py:20: `random_state=1` whatever the run's seed, `n_init=10` pinned, their
    scikit-learn's default). They then give each point the cluster of its nearest centre (a
    1-NN over the centres) and name each cluster by one of its points: a renaming, and the same
    partition as KMeans's own labels, which sklearn recomputes from the final centres."""
    # here: scikit-learn only for the k-means that uses it (start-up time)
    from sklearn.cluster import KMeans

    check_kmeans_args(len(x), k, SKLEARN_RANDOM_STATE)
    return KMeans(n_clusters=k, random_state=SKLEARN_RANDOM_STATE, n_init=SKLEARN_N_INIT).fit(x).labels_


# --- "faiss": one Lloyd run as faiss.Kmeans runs it ------------------------------------------

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


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = KMEANS_NITER,
           neighbours: tuple[np.ndarray, np.ndarray] | None = None, device: str = "auto") -> np.ndarray:
    """Cluster index of each row of `x` after `niter` Lloyd iterations (see module docstring).
    `neighbours` (each point's nearest others, as `hdml.eval.retrieval.retrieve` returns them) spares most of
    the first assignment step, whose centroids are data points."""
    n = len(x)
    check_kmeans_args(n, k, seed)
    device = resolve_device(device)
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed + 1)
    centroids = x[perm[:k]].copy()
    if neighbours is None:
        assign, dist = nearest(x, centroids, device)
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


def _nearest_sampled(x: np.ndarray, sample: np.ndarray, nbr: np.ndarray, nbr_dist: np.ndarray,
                     device: str) -> tuple[np.ndarray, np.ndarray]:
    """nearest(x, x[sample]) from each point's sorted nearest others: the nearest sampled
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
        assign[rows], dist[rows] = nearest(x[rows], x[sample], device)
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
        return nearest(x, centroids, device)
    assign, dist = assign.copy(), dist.copy()
    near, d_near = nearest(x, centroids[moved], device)
    near = moved[near]
    better = ~stale & ((d_near < dist) | ((d_near == dist) & (near < assign)))
    assign[better], dist[better] = near[better], d_near[better]
    rows = np.flatnonzero(stale)
    assign[rows], dist[rows] = nearest(x[rows], centroids, device)
    return assign, dist


# --- "kmeans++": the authors' clustering, in numpy -------------------------------------------

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
    assign, dist = nearest(x, centres, device)
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
    torch_device = torch_device_of(device)
    if torch_device is not None:
        return _kmeans_restarts_torch(x, k, rngs, max_iter, abs_tol, torch_device)
    best: tuple[np.ndarray, float] | None = None
    x64t = np.ascontiguousarray(x.T, dtype=np.float64)
    for seeds in _kmeanspp_seeds(x, k, rngs):
        assign, inertia = _lloyd(x, x[seeds].copy(), max_iter, abs_tol, device, x64t)
        if best is None or inertia < best[1]:
            best = (assign, inertia)
    return best[0]


# --- "kmeans++" on a torch device ------------------------------------------------------------

def _sq_dist_torch(x: torch.Tensor, x_sq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Squared distances of the points `idx` (rows) to every point (columns), in the numpy
    seeding's order of operations: -2 c.x + |x|^2 + |c|^2, clamped at 0."""
    import torch  # here, as in each torch function: the numpy path never pays torch's import
    return (torch.mm(x[idx], x.T).mul_(-2).add_(x_sq).add_(x_sq[idx, None])).clamp_(min=0)


def kmeanspp_seeds_torch(x: torch.Tensor, k: int, rngs: list[np.random.Generator],
                         stop: int | None = None) -> torch.Tensor:
    """`_kmeanspp_seeds` on x's device: (restarts, k) row indices of the centres
    (`stop`: only the first that many)."""
    import torch  # here: see _sq_dist_torch
    n, r, dev = len(x), len(rngs), x.device
    first, uniforms = _kmeanspp_draws(rngs, n, k)
    trials = uniforms.shape[2]
    uniforms = torch.as_tensor(uniforms, device=dev)
    with full_precision_matmul(), torch.autocast(dev.type, enabled=False):
        x_sq = (x * x).sum(1)
        chosen = torch.empty((r, k), dtype=torch.int64, device=dev)
        chosen[:, 0] = torch.as_tensor(first, device=dev)
        closest = _sq_dist_torch(x, x_sq, chosen[:, 0])
        pot = closest.sum(1, dtype=torch.float64)
        rows = torch.arange(r, device=dev)
        for c in range(1, stop or k):
            cumulative = torch.cumsum(closest, 1, dtype=torch.float64)
            cand = torch.searchsorted(cumulative, uniforms[:, c - 1] * pot[:, None]).clamp_(max=n - 1)
            d = _sq_dist_torch(x, x_sq, cand.ravel()).view(r, trials, n)
            torch.minimum(d, closest[:, None], out=d)
            pots = d.sum(2, dtype=torch.float64)
            best = pots.argmin(1)
            chosen[:, c] = cand[rows, best]
            closest, pot = d[rows, best], pots[rows, best]
    return chosen[:, :stop]


def _nearest_torch(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, squared distance) of each point's nearest centre, ties to the smaller index;
    points in blocks of TORCH_BLOCK_ELEMENTS / k rows, each block's distances computed in place
    in the product's memory (one block at a time on the device)."""
    import torch  # here: see _sq_dist_torch
    k = len(centres)
    c_sq = (centres * centres).sum(1)
    step = max(1, TORCH_BLOCK_ELEMENTS.get(x.device.type, TORCH_BLOCK_ELEMENTS["cpu"]) // k)
    idx = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float32, device=x.device)
    for lo in range(0, len(x), step):
        d = torch.mm(x[lo:lo + step], centres.T).mul_(-2).add_(x_sq[lo:lo + step, None]).add_(c_sq).clamp_(min=0)
        dist[lo:lo + step], idx[lo:lo + step] = d.min(1)  # the first of equal minima
    return idx, dist


def lloyd_torch(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, max_iter: int,
                tol: float) -> tuple[torch.Tensor, float]:
    """`_lloyd` on x's device: (clusters, inertia). Cluster sums in float64, whose
    sums of float32 values are exact in practice, so the order of CUDA's atomic adds does not
    change the float32 means."""
    import torch  # here: see _sq_dist_torch
    k = len(centres)
    with full_precision_matmul(), torch.autocast(x.device.type, enabled=False):
        assign, dist = _nearest_torch(x, x_sq, centres)
        for _ in range(max_iter):
            count = torch.bincount(assign, minlength=k)
            sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device)
            step = max(1, TORCH_BLOCK_ELEMENTS["cpu"] // x.shape[1])
            for lo in range(0, len(x), step):
                sums.index_add_(0, assign[lo:lo + step], x[lo:lo + step].double())
            new = (sums / count.clamp(min=1)[:, None]).float()
            empty = torch.nonzero(count == 0).ravel()
            if len(empty):
                farthest = torch.sort(dist, descending=True, stable=True).indices[:len(empty)]
                new[empty] = x[farthest]
            shift = float(((new.double() - centres.double()) ** 2).sum())
            centres = new
            assign, dist = _nearest_torch(x, x_sq, centres)
            if shift <= tol:
                break
    return assign, float(dist.sum(dtype=torch.float64))


def _kmeans_restarts_torch(x: np.ndarray, k: int, rngs: list[np.random.Generator], max_iter: int, tol: float,
                    device: str) -> np.ndarray:
    """`kmeans_restarts`'s clustering of the float32 `x` on the torch `device`,
    after its argument checks: the least-inertia run, the first winning ties."""
    import torch  # here: see _sq_dist_torch
    xt = torch.as_tensor(x, device=device)
    x_sq = (xt * xt).sum(1)
    best: tuple[torch.Tensor, float] | None = None
    for seeds in kmeanspp_seeds_torch(xt, k, rngs):
        assign, inertia = lloyd_torch(xt, x_sq, xt[seeds], max_iter, tol)  # indexing copies
        if best is None or inertia < best[1]:
            best = (assign, inertia)
    return best[0].cpu().numpy()
