"""HDML's hardness-aware augmentor (spec section 2): no parameters, no stop-gradient.

A negative z- of anchor z with positive z+ (d+ = d(z, z+), d- = d(z, z-), unsquared) is moved
along the segment z -> z- to distance lambda0 * d+ + (1 - lambda0) * d- from z when d+ < d-,
and left as it is otherwise. lambda0 = 1 - exp(-alpha / J_avg) grows as the metric loss falls.
Anchors and positives are never changed; gradients flow through every synthetic point.
"""
from __future__ import annotations

import math

import torch


def hardness(alpha: float, j_avg: float) -> float:
    """lambda0 = 1 - exp(-alpha / J_avg); alpha = 0 means no synthesis, J_avg = 0 the limit 1."""
    if alpha == 0:
        return 0.0
    if j_avg <= 0:
        return 1.0
    return 1.0 - math.exp(-alpha / j_avg)


def pull(anchor: torch.Tensor, d_pos: torch.Tensor, negative: torch.Tensor, d_neg: torch.Tensor,
         lam0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The pulling rule on rows (any leading shape, last dim = embedding).

    Returns the synthetic negatives and the mask of those that moved. With lam0 = 0 nothing
    moves, so the synthetics are the originals bit for bit. The division by d- is guarded where
    the rule does not apply, so a zero distance there cannot put NaNs into the gradient.
    """
    moved = (d_pos < d_neg) & (lam0 > 0)
    target = lam0 * d_pos + (1 - lam0) * d_neg
    t = target / torch.where(moved, d_neg, torch.ones_like(d_neg))
    pulled = anchor + t.unsqueeze(-1) * (negative - anchor)
    return torch.where(moved.unsqueeze(-1), pulled, negative), moved


def augment_triplets(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                     lam0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic negative per triplet (rows aligned): (T x E negatives, T moved-mask)."""
    d_pos = torch.linalg.vector_norm(a - p, dim=1)
    d_neg = torch.linalg.vector_norm(a - n, dim=1)
    return pull(a, d_pos, n, d_neg, lam0)


def augment_npair_tile(a: torch.Tensor, p: torch.Tensor,
                       lam0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The N x N tile: entry (i, j) is p_j pulled toward a_i with z+ = p_i.

    d+ is read off the diagonal of the same distance matrix, so for j = i the condition
    d+ < d- is false exactly and p_i is left unchanged. Returns (N x N x E, N x N moved-mask).
    """
    diff = p.unsqueeze(0) - a.unsqueeze(1)  # [i, j] = p_j - a_i
    dist = torch.linalg.vector_norm(diff, dim=2)  # [i, j] = d(a_i, p_j)
    d_pos = dist.diagonal().unsqueeze(1).expand_as(dist)
    anchors = a.unsqueeze(1).expand_as(diff)
    negatives = p.unsqueeze(0).expand_as(diff)
    return pull(anchors, d_pos, negatives, dist, lam0)
