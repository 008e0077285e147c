"""The evaluation of embeddings: every metric of spec section 7 in one call (`evaluate`), and the
input checks its callers share. The computations live in one module each:

- `hdml.eval.search`: exact squared-L2 k-NN search (faiss on the CPU or GPU, `TorchFlatL2` in
  torch), the distances and tie order every metric uses, and the `device` setting;
- `hdml.eval.retrieval`: Recall@K, MAP@R and R-precision, the query set searching itself (each
  query excluded from its own neighbours) or a separate gallery;
- `hdml.eval.kmeans`: the clustering behind NMI and F1 (`kmeans_algorithm`: "kmeans++", the
  authors'; "faiss"; "sklearn"), with k = the number of test classes;
- `hdml.eval.clustering`: NMI and pairwise F1 of a partition.

The embeddings are L2-normalised first (`l2_normalise`: the paper's protocol; a zero embedding
stays zero). Without a gallery the whole test split is both the query set and the database; with
a separate gallery, as datasets with query/gallery splits have, the queries search the gallery and
the clustering is of the queries. Memory is O(n (d + k1) + chunk * max K), k1 <= max(R, 64): no
n x n matrix anywhere (each module's docstring bounds its own part).
"""
from __future__ import annotations

import functools

import numpy as np

from hdml.eval.clustering import clustering_metrics
from hdml.eval.kmeans import KMEANS, kmeans, kmeans_restarts, kmeans_sklearn
from hdml.eval.retrieval import retrieval_metrics, retrieve
from hdml.eval.search import TorchFlatL2, resolve_device

# what callers import from here, beside what this module defines
__all__ = ["KMEANS", "TorchFlatL2", "check_arrays", "check_inputs", "clustering_metrics",
           "evaluate", "kmeans", "kmeans_restarts", "kmeans_sklearn", "l2_normalise", "resolve_device",
           "retrieval_metrics"]


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
    F1 (`KMEANS`, `hdml.eval.kmeans`)."""
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
        out, nbr, nbr_dist = retrieve(x, codes, [int(k) for k in ks], device=device)
        neighbours = (nbr, nbr_dist)
    else:
        gallery, gallery_labels = np.asarray(gallery), np.asarray(gallery_labels)
        check_arrays(gallery, gallery_labels, ("gallery", "gallery_labels"))
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(f"gallery: {gallery.shape[1]}-d embeddings for {query.shape[1]}-d queries")
        _, all_codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
        codes, gallery_codes = all_codes[:len(query_labels)], all_codes[len(query_labels):]
        out = retrieve(x, codes, [int(k) for k in ks], gallery=(scale(gallery), gallery_codes), device=device)[0]
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
