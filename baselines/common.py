"""Shared pieces of the baseline losses: pairwise distances and the checks that turn a batch
in the wrong layout, or a bad hyperparameter, into a ValueError naming the loss and field."""
from __future__ import annotations

from typing import Any

import torch


def pairwise_sq_dists(z: torch.Tensor) -> torch.Tensor:
    """||z_i - z_j||^2 for all i, j via the Gram matrix (B x B instead of B x B x E memory);
    clamped at 0 against cancellation, exact 0 on the diagonal."""
    sq = z.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    return d2 * (1 - torch.eye(z.shape[0], dtype=z.dtype, device=z.device))


def pairwise_dists(z: torch.Tensor) -> torch.Tensor:
    """Euclidean ||z_i - z_j||, with a finite (zero) gradient where two rows coincide, where a
    plain sqrt would give inf/NaN."""
    d2 = pairwise_sq_dists(z)
    positive = d2 > 0
    return torch.where(positive, d2.clamp_min(torch.finfo(z.dtype).tiny).sqrt(), torch.zeros_like(d2))


def check_batch(name: str, z: torch.Tensor, labels: torch.Tensor) -> None:
    if z.dim() != 2:
        raise ValueError(f"{name}: embeddings must be a 2-D (batch, dim) tensor, got shape {tuple(z.shape)}")
    if labels.dim() != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"{name}: labels must be 1-D with one entry per embedding row ({z.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )


def check_npair_layout(name: str, z: torch.Tensor, labels: torch.Tensor) -> int:
    """Rows [a_1..a_N; p_1..p_N] of N >= 2 distinct classes, a_i and p_i of one class. Returns N."""
    check_batch(name, z, labels)
    b = z.shape[0]
    if b % 2 or b < 4:
        raise ValueError(f"{name}: npair batch must be 2N rows [anchors; positives] with N >= 2, got {b} rows")
    n = b // 2
    if not torch.equal(labels[:n], labels[n:]):
        raise ValueError(f"{name}: npair batch: row i and row N+i must share a label (anchor/positive of one class)")
    if labels[:n].unique().numel() != n:
        raise ValueError(f"{name}: npair batch: the N anchors must be of N distinct classes")
    return n


def check_triplet_layout(name: str, z: torch.Tensor, labels: torch.Tensor) -> int:
    """Rows [anchors; positives; negatives] of T >= 1 triplets. Returns T."""
    check_batch(name, z, labels)
    b = z.shape[0]
    if b % 3 or b == 0:
        raise ValueError(f"{name}: triplet batch must be 3T rows [anchors; positives; negatives], got {b} rows")
    t = b // 3
    a, p, n = labels[:t], labels[t : 2 * t], labels[2 * t :]
    if not torch.equal(a, p):
        raise ValueError(f"{name}: triplet batch: anchor i and positive i must share a label")
    if (a == n).any():
        raise ValueError(f"{name}: triplet batch: negative i must have a label other than anchor i's")
    return t


def check_m_per_class(name: str, z: torch.Tensor, labels: torch.Tensor) -> None:
    """Pair-based losses need at least one positive pair and two classes in the batch."""
    check_batch(name, z, labels)
    _, counts = labels.unique(return_counts=True)
    if counts.numel() < 2:
        raise ValueError(f"{name}: m_per_class batch has a single class, so no negative pair")
    if counts.max() < 2:
        raise ValueError(f"{name}: m_per_class batch has no positive pair (every class has 1 image)")


def check_non_negative(name: str, hparams: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if hparams[key] < 0:
            raise ValueError(f"{name}.{key}: must be >= 0, got {hparams[key]}")
