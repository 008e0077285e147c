"""The shared base of methods that synthesise samples around a base loss (HDML, DAML).

Such a method trains several networks on several losses of one forward pass, each loss moving
only its own parameters: its gradient is taken with `torch.autograd.grad` over its group
(`set_grads`), all gradients before the one optimiser steps (the step changes weights the
other losses' graphs still use). Its hyper-parameters are one run-config section beside its
base loss's; HDML's running averages of a loss are `BlockAverage`s.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from hdml.core.registry import Context, MetricLoss, Section
from hdml.methods.base import Method, build_loss
from hdml.model.embedding import EmbeddingNet

# one loss and the parameters its gradient moves
Routed = tuple[list[nn.Parameter], torch.Tensor]


def set_grads(params: list[nn.Parameter], loss: torch.Tensor, retain_graph: bool) -> None:
    """Store d loss / d params in `.grad` (None where unused, and everywhere if the loss is not
    finite or has no graph: Adam then leaves those parameters and their moments alone)."""
    if not loss.requires_grad or not math.isfinite(loss.item()):
        return
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g


class BlockAverage:
    """Mean of a logged loss over the last completed block of `block` steps.

    `value` is what a step uses; `update` is called after the step with its loss, so steps
    0..block-1 use `initial` and step k*block uses the mean over steps (k-1)*block..k*block-1.
    """

    def __init__(self, block: int, initial: float) -> None:
        self.block = block
        self.value = initial
        self._sum, self._count, self._seen = 0.0, 0, 0

    def update(self, x: float) -> None:
        if math.isfinite(x):
            self._sum += x
            self._count += 1
        self._seen += 1
        if self._seen == self.block:
            if self._count:
                self.value = self._sum / self._count
            self._sum, self._count, self._seen = 0.0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"block": self.block, "value": self.value, "sum": self._sum, "count": self._count, "seen": self._seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["block"] != self.block:
            raise ValueError(f"block average: checkpoint has blocks of {state['block']} steps, this run {self.block}")
        self.value, self._sum, self._count, self._seen = state["value"], state["sum"], state["count"], state["seen"]


class SynthesisMethod(Method):
    """A method around a base loss (`loss_class`) with its own run-config section (`section_name`,
    declared by `section`, whose `check` runs first). Sets `model`, `cfg`, `h` (the section's
    values), `protocol` and `loss`; a subclass builds its parts, optimiser and schedule."""

    section_name: ClassVar[str]
    section: ClassVar[Section]
    loss_class: ClassVar[type[MetricLoss]]

    def __init__(self, model: EmbeddingNet, cfg: dict, context: Context) -> None:
        h = cfg[self.section_name]
        if self.section.check is not None:
            self.section.check(h)
        self.model, self.cfg, self.h = model, cfg, h
        self.protocol = cfg["protocol"]
        self.loss = build_loss(self.loss_class, cfg, context)

    @classmethod
    def config_sections(cls) -> dict[str, Section]:
        return {cls.section_name: cls.section, cls.loss_class.name: cls.loss_class.section()}

    def routed_step(self, groups: Sequence[Routed]) -> None:
        """Each group's gradient in order, every graph but the last retained (the last loss's
        backward then frees the activations, as in a plain step), then one optimiser step. A group
        whose loss is not finite keeps no gradient, so the one optimiser skips it."""
        for i, (params, loss) in enumerate(groups):
            set_grads(params, loss, retain_graph=i < len(groups) - 1)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
