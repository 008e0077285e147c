"""The optimisation every method shares: the in-loss weight penalty, Adam (and TensorFlow's form
of it, the authors'), the authors' head initialisation and the run's learning-rate schedule."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from hdml.core.registry import Part
from hdml.model.embedding import EmbeddingNet, glorot_


def weight_penalty(model: EmbeddingNet, factor: float) -> torch.Tensor:
    """The authors' in-loss weight decay: factor * sum(w^2) / 2 over conv and linear weights
    and biases of backbone and head (BatchNorm parameters excluded)."""
    if factor == 0:
        return torch.zeros((), device=next(model.parameters()).device)
    return factor * sum((p * p).sum() for p in model.decayed_weights()) / 2


class TFAdam(torch.optim.Adam):
    """Adam as TensorFlow's `AdamOptimizer`, the authors' (protocol code): lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    update lr_t m / (sqrt(v) + eps), epsilon added before the bias correction. In PyTorch's form that is an
    epsilon of eps / sqrt(1 - b2^t) (32 x 1e-8 at step 1, 1.3 x at step 1000), felt only where |gradient| is
    below ~1e-6: bench/authors.py showed such softmax-layer weights moving 0.65 lr apart after one step."""

    def __init__(self, params: Any, eps: float = 1e-8) -> None:
        super().__init__(params, eps=eps)
        self.defaults["tf_eps"] = eps  # in defaults: copies and pickles of an optimiser keep only its state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            done = [float(self.state[p]["step"]) for p in group["params"] if p.grad is not None and self.state[p]]
            t = max(done, default=0.0) + 1
            group["eps"] = self.defaults["tf_eps"] / math.sqrt(1 - group["betas"][1] ** t)
        return super().step(closure)


def authors_init(model: EmbeddingNet, cfg: dict) -> None:
    """`head_init: glorot`: the embedding layer (their fc1) starts as in the HDML authors' code, which trains
    HDML and its baselines alike (`hdml.model.embedding.glorot_`). Called by the methods that code covers, so a method
    with code of its own (DAML) keeps its init. The default stays PyTorch's: at the demo's toy scale (digits,
    lr 1e-3) the larger start keeps the triplet losses from falling (hdml/fidelity.md, "initialisation")."""
    if cfg["head_init"] == "glorot":
        glorot_(model.head.fc)


def metric_optimizer(model: EmbeddingNet, cfg: dict, parts: Iterable[Part] = ()) -> torch.optim.Optimizer:
    """Adam over backbone + head (protocol `paper` gives the head 10x the backbone's rate), then
    each part's own groups, after the model's so that a run without parts is unchanged. Protocol code:
    TensorFlow's form of Adam (`TFAdam`), the authors'."""
    lr = cfg["lr"]
    head_lr = lr * 10 if cfg["protocol"] == "paper" else lr
    groups = [
        {"params": list(model.backbone.parameters()), "lr": lr},
        {"params": list(model.head.parameters()), "lr": head_lr},
    ]
    for part in parts:
        groups += part.param_groups(cfg)
    return TFAdam(groups) if cfg["protocol"] == "code" else torch.optim.Adam(groups)


class MilestoneLR(torch.optim.lr_scheduler.MultiStepLR):
    """MultiStepLR over the groups that follow the run's schedule; a group marked
    `scheduled: False` keeps its rate."""

    def get_lr(self) -> list[float]:
        return [lr if group.get("scheduled", True) else group["lr"]
                for lr, group in zip(super().get_lr(), self.optimizer.param_groups, strict=True)]


def lr_schedule(opt: torch.optim.Optimizer, cfg: dict) -> MilestoneLR:
    return MilestoneLR(opt, milestones=cfg["lr_milestones"], gamma=cfg["lr_gamma"])


def backbone_rates(cfg: dict) -> list[float]:
    """The backbone's rate at every step 1..steps under `lr_schedule`, replayed on a dummy parameter:
    what the schedule checks (tests/test_schedule.py) and the authors' harness (bench/authors_schedule.py)
    compare."""
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg["lr"])
    sched, out = lr_schedule(opt, cfg), []
    for _ in range(cfg["steps"]):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out
