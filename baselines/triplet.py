"""Triplet loss as the HDML authors' code: sum over triplets of
max(0, ||a - p||^2 - ||a - n||^2 + margin), squared distances, margin 1."""
from __future__ import annotations

import torch

from hdml.registry import MetricLoss, register_loss


def split_triplets(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows [anchors; positives; negatives] -> three equal blocks."""
    t = z.shape[0] // 3
    return z[:t], z[t : 2 * t], z[2 * t : 3 * t]


@register_loss
class TripletLoss(MetricLoss):
    name = "triplet"
    sampler = "triplet"
    defaults = {"margin": 1.0, "reduction": "sum"}

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a, p, n = split_triplets(z)
        return self.triplets(a, p, n)

    def triplets(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d_ap = (a - p).pow(2).sum(1)
        d_an = (a - n).pow(2).sum(1)
        per = torch.relu(d_ap - d_an + self.hparams["margin"])
        return per.sum() if self.hparams["reduction"] == "sum" else per.mean()
