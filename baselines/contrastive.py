"""Contrastive loss (Hadsell, Chopra & LeCun 2006) on all pairs of an m-per-class batch:

    L_ij = 1/2 D_ij^2                       if y_i = y_j
           1/2 max(0, margin - D_ij)^2      otherwise,      D_ij = ||z_i - z_j||  (Euclidean)
    J    = mean over the B(B-1)/2 unordered pairs i < j of L_ij     (reduction: mean)
         = sum  over those pairs                                     (reduction: sum, Hadsell's L)

Embeddings not normalised (Hadsell's D_W is the plain Euclidean distance of the outputs).
Defaults: margin 1.0 - Hadsell et al. only require m > 0; 1.0 is the common choice (default
of Caffe's ContrastiveLoss layer and of PML's neg_margin). `mean` is that Caffe layer's
1/(2N) sum, a per-pair normalisation that keeps the scale independent of the batch size.
PML's ContrastiveLoss is the unsquared, unhalved hinge (relu(D - pos_margin),
relu(neg_margin - D)) averaged over non-zero positive and negative terms separately; the tests
check ours against its per-pair terms.
"""
from __future__ import annotations

import torch

from baselines.common import check_m_per_class, check_non_negative, pairwise_dists, pairwise_sq_dists
from hdml.core.registry import MetricLoss, Range, register_loss


@register_loss
class ContrastiveLoss(MetricLoss):
    name = "contrastive"
    display_name = "Contrastive"
    sampler = "m_per_class"
    defaults = {"margin": 1.0, "reduction": "mean"}
    choices = {"reduction": ("mean", "sum")}
    # search ranges of the tuning mode (hdml.workflow.tune), bracketing the default on a log scale
    ranges = {"margin": Range(0.1, 4.0, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        check_non_negative(self.name, self.hparams, "margin")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_m_per_class(self.name, z, labels)
        same = labels[:, None] == labels[None, :]
        pos = 0.5 * pairwise_sq_dists(z)  # squared distance directly: no sqrt, smooth at 0
        neg = 0.5 * torch.relu(self.hparams["margin"] - pairwise_dists(z)).pow(2)
        per = torch.where(same, pos, neg)
        upper = torch.triu(torch.ones_like(same), diagonal=1)
        total = per[upper].sum()
        return total if self.hparams["reduction"] == "sum" else total / upper.sum()
