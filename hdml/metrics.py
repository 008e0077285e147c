"""Retrieval and clustering metrics on L2-normalised embeddings (spec section 7).

Definitions (the whole test split is both the query set and the database):

- Distance: squared Euclidean distance between L2-normalised float32 embeddings, as faiss
  computes it. Each query's neighbours are all *other* points (excluded by index, not by
  distance, so exact duplicates stay neighbours), ranked by distance, exact-distance ties by
  smaller index (faiss's CPU order; a test checks it on vectors whose distances are exact).
  A zero embedding stays zero.
- Recall@K: a query is a hit if any of its K nearest neighbours has its class.
- MAP@R and R-precision (Musgrave et al. 2020): a query with R positives (its class size - 1)
  scores, over its R nearest neighbours, (1/R) sum_{r <= R, rel(r)} P@r and (#positives)/R.
- Singletons: a query whose class has no other member has no positive, so Recall@K, MAP@R and
  R-precision are undefined for it; it is left out of these three means (as in
  pytorch-metric-learning; the paper's code would count a miss, but its test splits have no
  singletons). It stays in the database and in the clustering metrics.
- Clustering: k-means with k = number of test classes, then NMI (arithmetic mean of the two
  entropies, sklearn's default) and pairwise F1 (spec section 7) from the sparse class x cluster
  contingency table.
- k-means: Lloyd's algorithm exactly as faiss.Kmeans(d, k, niter=20, seed=seed) runs it (same
  initial sample, centroid means, empty-cluster splits, then a final assignment), but each
  assignment step searches only the centroids that moved: a point whose centroid did not move
  can only switch to a moved one. Clusters equal faiss's up to float rounding of near-ties (the
  tests compare them). Deterministic for a given seed; faiss subsamples when n > 256 k, this
  does not.

faiss runs every search, on the GPU when faiss was built with CUDA and sees one, else on the
CPU; the code path is the same. Memory is O(n d + chunk * max K): the k-NN search runs in query
chunks and each chunk is reduced to per-query numbers at once.
"""
from __future__ import annotations

import functools
import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

KMEANS_NITER = 20
GPU_MAX_K = 2048  # faiss GPU k-selection limit; larger k searches on the CPU
_SPLIT_EPS = np.float32(1 / 1024)  # faiss's symmetric perturbation of a split centroid


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def check_inputs(embeddings: np.ndarray, labels: np.ndarray, ks: list[int] | None = None) -> None:
    """Reject what would make a metric undefined, naming the offending input."""
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings: expected a non-empty 2-d array (n x d), got shape {embeddings.shape}")
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-d array, got shape {labels.shape}")
    if len(embeddings) != len(labels):
        raise ValueError(f"labels: {len(labels)} labels for {len(embeddings)} embeddings")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise ValueError(f"embeddings: {int(bad.sum())} rows contain NaN or infinite values "
                         f"(first: row {int(np.argmax(bad))})")
    _, sizes = np.unique(labels, return_counts=True)
    if len(sizes) < 2:
        raise ValueError("labels: a single class; NMI, F1 and retrieval need at least two")
    if sizes.max() < 2:
        raise ValueError("labels: every class has one member, so no query has a positive")
    if ks is not None and (not ks or any(int(k) != k or k < 1 for k in ks)):
        raise ValueError(f"ks: expected positive integers, got {ks}")


# --- faiss backend ---------------------------------------------------------------------------

@functools.cache
def _gpu_resources() -> object | None:
    """faiss GPU resources when this faiss has CUDA and sees a device, else None."""
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.StandardGpuResources()
    return None


def _l2_index(vectors: np.ndarray, k: int = 1) -> faiss.Index:
    """Exact L2 index over `vectors` for k-NN searches: GPU if available and k allows, else CPU."""
    res = _gpu_resources()
    if res is not None and k <= GPU_MAX_K:
        index = faiss.GpuIndexFlatL2(res, vectors.shape[1])
    else:
        index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    return index


def _nearest(queries: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, squared distance) of each query's nearest centroid, ties by smaller index."""
    dist, idx = _l2_index(centroids).search(queries, 1)
    return idx[:, 0], dist[:, 0]


# --- retrieval -------------------------------------------------------------------------------

def _chunks(n: int, size: int, d: int) -> list[tuple[int, int]]:
    """Query chunks aligned to `size`; a tail too small for faiss's BLAS path joins the previous
    chunk, so every distance is computed as one whole-split faiss search would compute it."""
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and (n - bounds[-2]) * d < faiss.cvar.distance_compute_blas_threshold:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def _drop_self(nbr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Remove each query from its k+1 neighbours; where it is not among them (ties with
    smaller-index duplicates), the first k are already its k nearest others."""
    own = nbr == rows[:, None]
    own[~own.any(axis=1), -1] = True
    return nbr[~own].reshape(len(nbr), nbr.shape[1] - 1)


def retrieval_metrics(x: np.ndarray, codes: np.ndarray, ks: list[int],
                      chunk: int | None = None) -> dict[str, float]:
    """Recall@K for every K in ks, MAP@R and R-precision of normalised `x` with class `codes`
    (0..C-1), over queries that have a positive. One search with k = max(max K, max R)."""
    n = len(x)
    positives = np.bincount(codes)[codes] - 1
    valid = positives > 0
    r_max = int(positives.max())
    k = min(n - 1, max(max(ks), r_max))
    index = _l2_index(x, k + 1)
    hits = dict.fromkeys(ks, 0)
    ap_sum = rp_sum = 0.0
    ranks = np.arange(1, r_max + 1)
    for lo, hi in _chunks(n, chunk or faiss.cvar.distance_compute_blas_query_bs, x.shape[1]):
        _, nbr = index.search(x[lo:hi], k + 1)
        keep = valid[lo:hi]
        nbr = _drop_self(nbr, np.arange(lo, hi))[keep]
        query = codes[lo:hi][keep]
        r = positives[lo:hi][keep]
        match = codes[nbr] == query[:, None]
        first = np.where(match.any(axis=1), match.argmax(axis=1), k)
        for K in ks:
            hits[K] += int((first < K).sum())
        rel = match[:, :r_max] & (ranks <= r[:, None])
        ap_sum += float(((np.cumsum(rel, axis=1) * rel / ranks).sum(axis=1) / r).sum())
        rp_sum += float((rel.sum(axis=1) / r).sum())
    m = int(valid.sum())
    if m < n:
        log.warning("%d of %d queries have no positive (singleton class): left out of Recall@K, "
                    "MAP@R and R-precision", n - m, n)
    out = {f"recall@{K}": hits[K] / m for K in ks}
    out["map@r"] = ap_sum / m
    out["r_precision"] = rp_sum / m
    return out


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
    """faiss's split_clusters: each empty cluster takes a perturbed copy of a cluster drawn with
    probability ~ (size - 1), from faiss's own generator reseeded at every call."""
    empty = np.flatnonzero(count == 0)
    if not len(empty):
        return
    k = len(centroids)
    weight = count.astype(np.float32)
    rng = faiss.RandomGenerator(1234)
    up, down = np.float32(1) + _SPLIT_EPS, np.float32(1) - _SPLIT_EPS
    even = np.arange(centroids.shape[1]) % 2 == 0
    for ci in empty:
        cj = 0
        while not rng.rand_float() < np.float32((float(weight[cj]) - 1.0) / float(np.float32(n - k))):
            cj = (cj + 1) % k
        centroids[ci] = centroids[cj] * np.where(even, up, down)
        centroids[cj] *= np.where(even, down, up)
        weight[ci] = weight[cj] / np.float32(2)
        weight[cj] -= weight[ci]


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = KMEANS_NITER) -> np.ndarray:
    """Cluster index of each row of `x` after `niter` Lloyd iterations (see module docstring)."""
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k = {k} clusters for {n} points")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed + 1)
    centroids = x[perm[:k]].copy()
    assign, dist = _nearest(x, centroids)
    count, means = _means(x, assign, np.arange(k), k)
    prev_obj = None
    for _ in range(niter):
        obj = np.cumsum(dist, dtype=np.float32)[-1]  # faiss sums the objective in float32, in order
        new = means.copy()
        _split_empty(new, count, n)
        moved = np.flatnonzero((new != centroids).any(axis=1))
        centroids = new
        old = assign
        assign, dist = _reassign(x, centroids, assign, dist, moved)
        if obj == prev_obj:  # faiss's early stop (threshold 0): the objective repeated exactly
            break
        prev_obj = obj
        changed = np.unique(np.concatenate([old[assign != old], assign[assign != old]]))
        if len(changed):
            count[changed], means[changed] = _means(x, assign, changed, k)
    return assign


def _reassign(x: np.ndarray, centroids: np.ndarray, assign: np.ndarray, dist: np.ndarray,
              moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every point after `moved` centroids changed. A point whose centroid
    stayed keeps it unless a moved centroid is nearer (or as near with a smaller index); a point
    whose centroid moved searches them all."""
    n, k = len(x), len(centroids)
    if not len(moved):
        return assign, dist
    stale = np.isin(assign, moved)
    if stale.sum() * k + n * len(moved) >= n * k:
        return _nearest(x, centroids)
    assign, dist = assign.copy(), dist.copy()
    near, d_near = _nearest(x, centroids[moved])
    near = moved[near]
    better = ~stale & ((d_near < dist) | ((d_near == dist) & (near < assign)))
    assign[better], dist[better] = near[better], d_near[better]
    rows = np.flatnonzero(stale)
    assign[rows], dist[rows] = _nearest(x[rows], centroids)
    return assign, dist


# --- clustering metrics ----------------------------------------------------------------------

def clustering_metrics(codes: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic normalisation) and pairwise F1 of `clusters` against classes `codes`,
    from the nonzero cells of the contingency table (O(n log n) time, O(n) memory)."""
    _, cells = np.unique(codes * (int(clusters.max()) + 1) + clusters, return_counts=True)
    _, a = np.unique(codes, return_counts=True)
    _, b = np.unique(clusters, return_counts=True)
    n = float(len(codes))
    cells, a, b = cells.astype(np.float64), a.astype(np.float64), b.astype(np.float64)

    def entropy(counts: np.ndarray) -> float:
        p = counts / n
        return float(-(p * np.log(p)).sum())

    h_class, h_cluster = entropy(a), entropy(b)
    mi = max(0.0, float((cells / n * np.log(cells)).sum()) + np.log(n)
             - float((a / n * np.log(a)).sum()) - float((b / n * np.log(b)).sum()))
    nmi = 2 * mi / (h_class + h_cluster)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    tp, same_cluster, same_class = pairs(cells), pairs(b), pairs(a)
    precision = tp / same_cluster if same_cluster else 0.0
    recall = tp / same_class if same_class else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"nmi": nmi, "f1": f1}


def evaluate(embeddings: np.ndarray, labels: np.ndarray, ks: list[int], seed: int = 0) -> dict[str, float]:
    """All metrics of spec section 7: recall@K for K in ks, nmi, f1, map@r, r_precision."""
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    check_inputs(embeddings, labels, ks)
    x = l2_normalise(embeddings)
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.astype(np.int64)
    out = retrieval_metrics(x, codes, [int(k) for k in ks])
    out.update(clustering_metrics(codes, kmeans(x, int(codes.max()) + 1, seed)))
    return out
