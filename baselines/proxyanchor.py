"""Proxy-Anchor loss (Kim, Kim, Cho & Kwak, CVPR 2020): one trainable proxy per training class,
each proxy an anchor that pulls the batch's embeddings of its class and pushes the others:

    s(x, p) = cosine similarity of embedding x and proxy p
    J = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - delta)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + delta)))

P: all proxies; P+: the proxies of the classes present in the batch; X_p+ / X_p-: the batch's
embeddings of p's class / of other classes. Both log(1 + sum exp) terms are evaluated as a
log-sum-exp with a zero logit, exact where the plain form overflows (alpha s up to 32 here).

Defaults are the paper's and the authors' code's (tjddus9597/Proxy-Anchor-CVPR2020, losses.py
and train.py): alpha 32, delta (`margin`) 0.1, proxies initialised by Kaiming-normal with
fan_out (std sqrt(2 / classes)), and their learning rate 100x the backbone's (`lr_mult`),
decayed with it. The authors' training loop also clips gradients at 10, freezes the backbone
for a warm-up epoch and uses AdamW's weight decay on the proxies; those are protocol choices
outside the loss, which this suite holds fixed for every method (Adam, `weight_decay` on
backbone and head weights), so the proxies get no weight decay here.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import check_batch, check_non_negative
from hdml.core.registry import Context, MetricLoss, Range, register_loss


def log1p_sum_exp(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log(1 + sum over kept rows of exp(logits)) per column, as a stable log-sum-exp."""
    masked = logits.masked_fill(~keep, float("-inf"))
    zero = torch.zeros_like(masked[:1])
    return torch.logsumexp(torch.cat([zero, masked]), dim=0)


@register_loss
class ProxyAnchorLoss(MetricLoss):
    name = "proxyanchor"
    display_name = "Proxy-Anchor"
    sampler = "m_per_class"
    defaults = {"alpha": 32.0, "margin": 0.1, "lr_mult": 100.0}
    hints = {"alpha": ">= 0", "margin": ">= 0", "lr_mult": "> 0"}
    # search ranges of the tuning mode (hdml.workflow.tune): scale alpha, margin, and the proxies' rate factor
    ranges = {"alpha": Range(8.0, 64.0, log=True), "margin": Range(0.0, 0.4), "lr_mult": Range(10.0, 1000.0, log=True)}

    def __init__(self, *, context: Context | None = None, **hparams: Any) -> None:
        super().__init__(context=context, **hparams)
        check_non_negative(self.name, self.hparams, "alpha", "margin")
        if not self.hparams["lr_mult"] > 0:
            raise ValueError(f"{self.name}.lr_mult: must be > 0, got {self.hparams['lr_mult']}")
        if context is None:
            raise ValueError(f"{self.name}: needs a context (training classes, embedding size) for its proxies")
        self.proxies = nn.Parameter(torch.empty(context.num_classes, context.embedding_dim, device=context.device))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(self.name, z, labels)
        classes = self.proxies.shape[0]
        if len(labels) == 0 or labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"{self.name}: labels must be training classes 0..{classes - 1}, got "
                             f"{labels.unique().tolist()}")
        cos = F.normalize(z, dim=1) @ F.normalize(self.proxies.to(z.dtype), dim=1).T  # (batch, classes)
        positive = F.one_hot(labels, classes).bool()
        alpha, delta = self.hparams["alpha"], self.hparams["margin"]
        present = positive.any(0)
        pos = log1p_sum_exp(-alpha * (cos - delta), positive)
        neg = log1p_sum_exp(alpha * (cos + delta), ~positive)
        return pos[present].sum() / present.sum() + neg.sum() / classes
