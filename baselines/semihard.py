"""Triplet loss with in-batch semi-hard negative mining (Schroff, Kalenichenko & Philbin 2015,
FaceNet), on an m-per-class batch:

    J = sum over every ordered anchor-positive pair (a, p), a != p, y_a = y_p, of
        max(0, ||f_a - f_p||^2 - ||f_a - f_n||^2 + margin)

f = L2-normalised embeddings (FaceNet constrains ||f|| = 1), squared Euclidean distances,
margin 0.2 (FaceNet's alpha), a sum over the pairs as in FaceNet's loss (`reduction: mean`
averages over the pairs that got a negative). Using all anchor-positive pairs of the batch,
not only the hardest positive, is FaceNet's choice. For each pair the negative n is the
semi-hard one (FaceNet: ||f_a - f_p||^2 < ||f_a - f_n||^2) closest to the anchor, i.e.
the hardest semi-hard negative, as in TensorFlow's `triplet_semihard_loss`; if it lies beyond
the margin the pair contributes 0. FaceNet does not say what to do when no negative is
farther than the positive (every negative is hard); `fallback` decides:
  - "easiest" (default, TensorFlow's rule): the negative farthest from the anchor;
  - "skip": the pair gets no triplet.
`normalize: false` uses the raw embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.common import check_m_per_class, check_non_negative, pairwise_sq_dists
from hdml.core.registry import MetricLoss, Range, register_loss


@register_loss
class SemiHardTripletLoss(MetricLoss):
    name = "semihard"
    display_name = "Triplet hard"
    sampler = "m_per_class"
    defaults = {"margin": 0.2, "normalize": True, "reduction": "sum", "fallback": "easiest"}
    choices = {"reduction": ("sum", "mean"), "fallback": ("easiest", "skip")}
    # search ranges of the tuning mode (hdml.workflow.tune): margins of normalised embeddings (FaceNet: 0.2)
    ranges = {"margin": Range(0.01, 1.0, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        check_non_negative(self.name, self.hparams, "margin")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_m_per_class(self.name, z, labels)
        f = F.normalize(z, dim=1) if self.hparams["normalize"] else z
        d = pairwise_sq_dists(f)
        a, p, n = self.mine(d.detach(), labels)
        per = torch.relu(d[a, p] - d[a, n] + self.hparams["margin"])
        if self.hparams["reduction"] == "sum" or len(a) == 0:
            return per.sum()
        return per.mean()

    def mine(self, d: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices (anchor, positive, negative) of the mined triplets, given squared distances."""
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        a, p = torch.nonzero(same & ~eye, as_tuple=True)
        d_ap = d[a, p]
        d_an = d[a]  # (pairs, B): distance of each pair's anchor to every row
        is_neg = ~same[a]
        semi = is_neg & (d_an > d_ap[:, None])
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        n = torch.where(semi, d_an, inf).argmin(1)
        has_semi = semi.any(1)
        if self.hparams["fallback"] == "skip":
            return a[has_semi], p[has_semi], n[has_semi]
        easiest = torch.where(is_neg, d_an, -inf).argmax(1)
        return a, p, torch.where(has_semi, n, easiest)
