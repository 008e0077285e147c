"""Retrieval metrics of embeddings, one path for both protocols (spec section 7).

Definitions (the embeddings are L2-normalised by the caller; distances and their order as
`hdml.eval.search` defines them):

- Own gallery (the default protocol): the query set is also the database, and the neighbours of
  a query are every *other* point (the query is excluded by index, not by distance, so an exact
  duplicate stays a neighbour). Its positives are the other points of its class, R their number.
- Separate gallery (datasets with query/gallery splits): the neighbours of a query are all
  gallery points (none is excluded); its positives are the gallery points of its class.
- Recall@K: a query is a hit if any of its K nearest neighbours has its class.
- MAP@R and R-precision (Musgrave et al. 2020): a query with R positives scores, over its R
  nearest neighbours, (1/R) sum_{r <= R, rel(r)} P@r and (#positives)/R.
- Queries without a positive (a singleton class; a class absent from the gallery): Recall@K,
  MAP@R and R-precision are undefined for them, so they are left out of these three means, as
  pytorch-metric-learning does (the paper's code would count them as misses; its test splits
  have none). They stay in the database and in the clustering. A warning says how many.

Memory is O(n (d + k1) + chunk * max K), k1 <= max(R, 64): no n x n matrix. The k-NN search runs
in query chunks, each reduced at once to per-query numbers; with its own gallery, only each
point's k1 nearest others are kept (the first k-means step reads its nearest centroid there).
"""
from __future__ import annotations

import itertools
import logging

import faiss
import numpy as np

from hdml.eval.search import TorchFlatL2, l2_index, resolve_device

log = logging.getLogger(__name__)


def _chunks(n: int, size: int, d: int) -> list[tuple[int, int]]:
    """Query chunks aligned to `size`; a tail too small for faiss's BLAS path joins the previous
    chunk, so distances come out as one whole-split faiss search computes them."""
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and (n - bounds[-2]) * d < faiss.cvar.distance_compute_blas_threshold:
        del bounds[-2]
    return list(itertools.pairwise(bounds))


def _neighbours(index: faiss.Index | TorchFlatL2, queries: np.ndarray, rows: np.ndarray | None,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and squared distances of each query's k nearest indexed points. `rows`: the
    queries' own rows in the index, each excluded from its own neighbours (search k+1 and drop
    the query itself; where it is not among them, tied with smaller-index duplicates, the first k
    are already its k nearest others); None: a separate gallery, nothing excluded."""
    if rows is None:
        dist, nbr = index.search(queries, k)
        return nbr, dist
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
    (0..C-1), its own gallery, over the queries that have a positive."""
    return retrieve(x, codes, ks, chunk=chunk, device=resolve_device(device))[0]


def retrieve(q: np.ndarray, q_codes: np.ndarray, ks: list[int], gallery: tuple[np.ndarray, np.ndarray] | None = None,
             chunk: int | None = None,
             device: str = "cpu") -> tuple[dict[str, float], np.ndarray | None, np.ndarray | None]:
    """Recall@K for every K in ks, MAP@R and R-precision of normalised queries `q` with class codes
    `q_codes`, searching `gallery` (its embeddings and codes, shared with the queries') or, if None,
    themselves (module docstring). Also, with their own gallery, every query's k1 nearest others
    (indices, squared distances; else None, None), for k-means.

    One pass finds every query's k1 = max(R, min(max K, 64)) nearest neighbours (R: the largest
    number of positives), which settles MAP@R, R-precision and Recall@K for K <= k1. Larger K
    need a second search with k = max K only for the queries with no positive among their k1.
    """
    own = gallery is None
    g, g_codes = (q, q_codes) if own else gallery
    n, d = q.shape
    chunk = chunk or faiss.cvar.distance_compute_blas_query_bs
    positives = np.bincount(g_codes, minlength=int(q_codes.max()) + 1)[q_codes] - int(own)
    valid = positives > 0
    if not own and not valid.any():
        raise ValueError("gallery_labels: no query's class is in the gallery, so no query has a positive")
    r_max = int(positives.max())
    candidates = len(g) - int(own)
    k1 = min(candidates, max(r_max, min(max(ks), 64)))
    k2 = min(candidates, max(ks))
    index = l2_index(g, max(k1, k2) + int(own), device)
    nbr = np.empty((n, k1), dtype=np.int64) if own else None
    nbr_dist = np.empty((n, k1), dtype=np.float32) if own else None
    first = np.empty(n, dtype=np.int64)
    ap, rp = np.zeros(n), np.zeros(n)
    ranks = np.arange(1, r_max + 1)
    for lo, hi in _chunks(n, chunk, d):
        found, dist = _neighbours(index, q[lo:hi], np.arange(lo, hi) if own else None, k1)
        if own:
            nbr[lo:hi], nbr_dist[lo:hi] = found, dist
        match = g_codes[found] == q_codes[lo:hi, None]
        first[lo:hi] = _first_positive(match)
        r = np.maximum(positives[lo:hi], 1)
        rel = match[:, :r_max] & (ranks <= r[:, None])
        ap[lo:hi] = (np.cumsum(rel, axis=1) * rel / ranks).sum(axis=1) / r
        rp[lo:hi] = rel.sum(axis=1) / r
    deep = np.flatnonzero(valid & (first >= k1))
    if k2 > k1 and len(deep):
        for lo, hi in _chunks(len(deep), chunk, d):
            rows = deep[lo:hi]
            found = _neighbours(index, q[rows], rows if own else None, k2)[0]
            first[rows] = _first_positive(g_codes[found] == q_codes[rows, None])
    why = "(singleton class)" if own else "in the gallery"
    return _summarise(first, ap, rp, valid, ks, why), nbr, nbr_dist


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
