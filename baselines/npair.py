"""N-pair loss (Sohn 2016) as the HDML authors used it: logits a_i . p_j on unnormalised
embeddings, cross-entropy with target j = i (mean over i), plus
0.25 * l2_reg * (mean ||a||^2 + mean ||p||^2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hdml.registry import MetricLoss, register_loss


@register_loss
class NPairLoss(MetricLoss):
    name = "npair"
    sampler = "npair"
    defaults = {"l2_reg": 3e-3}

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = z.shape[0] // 2
        return self.pairs(z[:n], z[n:])

    def pairs(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Loss of anchors against positives (rows aligned); the positives may be a tile."""
        logits = anchors @ positives.T
        target = torch.arange(anchors.shape[0], device=anchors.device)
        ce = F.cross_entropy(logits, target)
        reg = anchors.pow(2).sum(1).mean() + positives.pow(2).sum(1).mean()
        return ce + 0.25 * self.hparams["l2_reg"] * reg
