"""HDML's hardness-and-label-preserving generator, its softmax classifier and J_gen (spec 3).

The generator maps embeddings back to backbone features: the real embeddings (reconstruction,
J_recon) and the augmented tuple (synthetics, J_soft) in one batch, so its BatchNorm sees both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hdml.model.embedding import TFBatchNorm1d, glorot_


class Generator(nn.Module):
    """Linear(E -> hidden) -> ReLU -> BatchNorm -> Linear(hidden -> feature), no output activation
    (the authors' fc_block order, nn_Ops.py:105-109), BatchNorm as TensorFlow's. `glorot`: both Linear
    layers start as the authors' (protocol code); else PyTorch's default."""

    def __init__(self, embedding_dim: int, feature_dim: int, hidden: int = 512, glorot: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.ReLU(), TFBatchNorm1d(hidden), nn.Linear(hidden, feature_dim)
        )
        if glorot:
            glorot_(self.net[0])
            glorot_(self.net[3])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def classifier(feature_dim: int, num_classes: int, glorot: bool = False) -> nn.Linear:
    """The softmax layer on features: Linear(feature -> training classes); `glorot` as `Generator`."""
    layer = nn.Linear(feature_dim, num_classes)
    return glorot_(layer) if glorot else layer


def recon_loss(y_rec: torch.Tensor, y: torch.Tensor, *, protocol: str = "code") -> torch.Tensor:
    """J_recon. code: sum over batch and dimensions of (y' - y)^2 (authors' main_npair.py:134).
    paper: the per-sample squared L2 cost ||y' - y||^2 averaged over the batch, the "reconstruction
    cost between the two distributions" at the scale of the softmax term it is balanced with (a
    sum over B x 1024 values would leave lambda * J_soft below 0.1% of J_gen; hdml/fidelity.md)."""
    per_sample = (y_rec - y).pow(2).sum(1)
    if protocol == "code":
        return per_sample.sum()
    if protocol == "paper":
        return per_sample.mean()
    raise ValueError(f"protocol: must be 'code' or 'paper', got {protocol!r}")


def soft_loss(cls: nn.Module, y_syn: torch.Tensor, labels: torch.Tensor,
              groups: tuple[int, ...] | None = None) -> torch.Tensor:
    """J_soft: cross-entropy of the classifier on the synthetics, with their source labels.

    One mean over all rows, or, with `groups` (consecutive row counts), the sum of each group's
    mean: the authors' N-pair form, mean over the N anchors + mean over the N x N tile
    (HDML.py:91-95), which gives the anchors half the term instead of 1/(N + 1) of it.
    """
    ce = F.cross_entropy(cls(y_syn), labels, reduction="none")
    if groups is None:
        return ce.mean()
    if sum(groups) != len(ce):
        raise ValueError(f"soft_loss: groups {groups} do not cover the {len(ce)} synthetic rows")
    return sum(part.mean() for part in ce.split(list(groups)))


def gen_loss(j_recon: torch.Tensor, j_soft: torch.Tensor, *, protocol: str, lam: float, scale: float,
             recon: bool = True, softmax: bool = True) -> torch.Tensor:
    """J_gen. code: (1 - lam) J_recon + scale * lam * J_soft; paper: J_recon + lam * J_soft.

    An ablated term is left out rather than multiplied by 0, so its NaN cannot leak in.
    Both ablated gives a constant 0 (no generator update).
    """
    if protocol == "code":
        w_recon, w_soft = 1 - lam, scale * lam
    elif protocol == "paper":
        w_recon, w_soft = 1.0, lam
    else:
        raise ValueError(f"protocol: must be 'code' or 'paper', got {protocol!r}")
    total = torch.zeros((), device=j_recon.device)
    if recon:
        total = total + w_recon * j_recon
    if softmax:
        total = total + w_soft * j_soft
    return total
