"""Retrieval and clustering metrics on L2-normalised embeddings (spec section 7).

Recall@K: every test image queries all others (itself excluded); a hit if any of its K
nearest neighbours shares its class. NMI (arithmetic) and pairwise F1 on k-means clusters
with k = number of test classes.
"""
from __future__ import annotations

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_inputs(embeddings: np.ndarray, labels: np.ndarray) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n x d), got shape {embeddings.shape}")
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if len(np.unique(labels)) < 2:
        raise ValueError("labels: need at least two classes")


def knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest neighbours of each row (inner product), itself excluded."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    own = idx == np.arange(len(x))[:, None]
    # Drop the query itself (or, if a tie pushed it out, the last neighbour).
    keep = ~own
    keep[~own.any(axis=1), -1] = False
    return idx[keep].reshape(len(x), k)


def recall_at_k(x: np.ndarray, labels: np.ndarray, ks: list[int]) -> dict[str, float]:
    neigh = knn(x, max(ks))
    hits = labels[neigh] == labels[:, None]
    return {f"recall@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0]


def pairwise_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """F1 over all pairs, from the class x cluster contingency table."""
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((li.max() + 1, ci.max() + 1), dtype=np.int64)
    np.add.at(table, (li, ci), 1)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) // 2).sum())

    tp = pairs(table)
    same_cluster, same_class = pairs(table.sum(0)), pairs(table.sum(1))
    precision = tp / same_cluster if same_cluster else 0.0
    recall = tp / same_class if same_class else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def evaluate(embeddings: np.ndarray, labels: np.ndarray, ks: list[int], seed: int = 0) -> dict[str, float]:
    labels = np.asarray(labels)
    check_inputs(embeddings, labels)
    x = l2_normalise(embeddings)
    out = recall_at_k(x, labels, ks)
    clusters = kmeans(x, len(np.unique(labels)), seed)
    out["nmi"] = float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))
    out["f1"] = pairwise_f1(labels, clusters)
    return out
