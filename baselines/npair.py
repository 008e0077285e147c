"""Multi-class N-pair loss (Sohn 2016) as the HDML authors used it. For a batch of N pairs of
distinct classes, rows [a_1..a_N; p_1..p_N]:

    J = 1/N sum_i -log( exp(a_i . p_i) / sum_j exp(a_i . p_j) )
        + 0.25 * l2_reg * (1/N sum_i ||a_i||^2 + 1/N sum_i ||p_i||^2)

i.e. softmax cross-entropy of the logits a_i . p_j (dot products of unnormalised embeddings)
with target j = i, plus Sohn's L2 penalty on the embeddings in the scaling of TensorFlow's
`npairs_loss` that the authors called (spec section 5). l2_reg = 3e-3 is the authors' Cars
value (1.5e-2 for CUB). PML's NPairsLoss is the cross-entropy term alone.
`pairs(anchors, positives)` is the same loss on given blocks; HDML calls it on a synthetic tile.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.common import check_non_negative, check_npair_layout
from hdml.core.registry import MetricLoss, Range, register_loss


def npair_loss(anchors: torch.Tensor, positives: torch.Tensor, l2_reg: float) -> torch.Tensor:
    """Cross-entropy of anchors @ positives.T with target i for row i, plus the L2 penalty."""
    if anchors.dim() != 2 or positives.dim() != 2 or anchors.shape[1] != positives.shape[1]:
        raise ValueError(
            f"npair: anchors and positives must be 2-D with one embedding size, "
            f"got {tuple(anchors.shape)} and {tuple(positives.shape)}"
        )
    if positives.shape[0] < anchors.shape[0]:
        raise ValueError(
            f"npair: need a positive for every anchor (target j = i), got {anchors.shape[0]} anchors "
            f"and {positives.shape[0]} positives"
        )
    logits = anchors @ positives.T
    target = torch.arange(anchors.shape[0], device=anchors.device)
    ce = F.cross_entropy(logits, target)
    reg = anchors.pow(2).sum(1).mean() + positives.pow(2).sum(1).mean()
    return ce + 0.25 * l2_reg * reg


@register_loss
class NPairLoss(MetricLoss):
    name = "npair"
    display_name = "N-pair"
    sampler = "npair"
    defaults = {"l2_reg": 3e-3}
    # search ranges of the tuning mode (hdml.workflow.tune): the embedding-norm penalty, decades around 3e-3
    ranges = {"l2_reg": Range(1e-4, 1e-1, log=True)}

    def __init__(self, **hparams: object) -> None:
        super().__init__(**hparams)
        check_non_negative(self.name, self.hparams, "l2_reg")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = check_npair_layout(self.name, z, labels)
        return self.pairs(z[:n], z[n:])

    def pairs(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Loss of anchors against positives (rows aligned); the positives may be a tile."""
        return npair_loss(anchors, positives, self.hparams["l2_reg"])
