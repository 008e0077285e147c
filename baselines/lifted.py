"""Lifted structured loss (Song, Xiang, Jegelka & Savarese 2016), the original smooth form
(not the "generalised" variant of Hermans et al.), on an m-per-class batch:

    J_ij = log( sum_{k: y_k != y_i} exp(alpha - D_ik) + sum_{l: y_l != y_j} exp(alpha - D_jl) ) + D_ij
    J    = 1/(2|P|) sum_{(i,j) in P} max(0, J_ij)^2

P: the positive pairs i < j of the batch (unordered; counting ordered pairs gives the same J),
D: Euclidean (not squared) distances of unnormalised embeddings, alpha = margin = 1 (the
paper's value). The log-sum-exp is the paper's smooth upper bound of the hardest negative of
either end of the pair; it is computed stably as logaddexp of the two rows' logsumexp.
Song et al.'s weight decay on the network lives in the training config, not here.
PML's LiftedStructureLoss(neg_margin=1, pos_margin=0) with unnormalised LpDistance and mean
reduction over ordered positive pairs is the same function.
"""
from __future__ import annotations

import torch

from baselines.common import check_m_per_class, check_non_negative, pairwise_dists
from hdml.core.registry import MetricLoss, Range, register_loss


@register_loss
class LiftedLoss(MetricLoss):
    name = "lifted"
    display_name = "Lifted"
    sampler = "m_per_class"
    defaults = {"margin": 1.0}
    # search ranges of the tuning mode (hdml.workflow.tune)
    ranges = {"margin": Range(0.1, 4.0, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        check_non_negative(self.name, self.hparams, "margin")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_m_per_class(self.name, z, labels)
        d = pairwise_dists(z)
        same = labels[:, None] == labels[None, :]
        neg_terms = (self.hparams["margin"] - d).masked_fill(same, float("-inf"))
        lse = torch.logsumexp(neg_terms, dim=1)  # every row has a negative (>= 2 classes)
        i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=z.device)
        keep = same[i, j]
        i, j = i[keep], j[keep]
        per_pair = torch.logaddexp(lse[i], lse[j]) + d[i, j]
        return torch.relu(per_pair).pow(2).sum() / (2 * len(i))
