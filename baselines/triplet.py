"""Triplet loss (the hinge of Schroff et al. 2015, HDML's [25]) as the HDML authors' code
computes it:

    J = sum_t max(0, ||a_t - p_t||^2 - ||a_t - n_t||^2 + margin)

Squared Euclidean distances, embeddings not normalised, margin 1, summed over the T triplets
of a batch laid out [anchors; positives; negatives] (HDML code, spec section 5). `reduction:
mean` divides by T instead (PML's default differs again: it averages over non-zero terms).
`triplets(a, p, n)` is the same loss on given blocks; HDML calls it with synthetic negatives.
"""
from __future__ import annotations

import torch

from baselines.common import check_non_negative, check_triplet_layout
from hdml.core.registry import MetricLoss, Range, register_loss


def split_triplets(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [anchors; positives; negatives] -> three equal blocks."""
    t = z.shape[0] // 3
    return z[:t], z[t : 2 * t], z[2 * t : 3 * t]


@register_loss
class TripletLoss(MetricLoss):
    name = "triplet"
    display_name = "Triplet"
    sampler = "triplet"
    defaults = {"margin": 1.0, "reduction": "sum"}
    choices = {"reduction": ("sum", "mean")}
    # search ranges of the tuning mode (hdml.workflow.tune): the margin of squared distances, around 1
    ranges = {"margin": Range(0.05, 4.0, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        check_non_negative(self.name, self.hparams, "margin")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_triplet_layout(self.name, z, labels)
        a, p, n = split_triplets(z)
        return self.triplets(a, p, n)

    def triplets(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not a.shape == p.shape == n.shape or a.dim() != 2:
            raise ValueError(
                f"{self.name}: anchors, positives, negatives must be equal-shape 2-D blocks, "
                f"got {tuple(a.shape)}, {tuple(p.shape)}, {tuple(n.shape)}"
            )
        d_ap = (a - p).pow(2).sum(1)
        d_an = (a - n).pow(2).sum(1)
        per = torch.relu(d_ap - d_an + self.hparams["margin"])
        return per.sum() if self.hparams["reduction"] == "sum" else per.mean()
