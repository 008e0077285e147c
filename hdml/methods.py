"""Training strategies: how one step turns a batch into parameter updates.

`LossMethod` serves every baseline (one loss on real embeddings, one optimiser);
HDML registers its own `Method` in `hdml.hdml_method`. All are found by name in `METHODS`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from hdml.model import EmbeddingNet
from hdml.suggest import did_you_mean
from hdml.registry import LOSSES, get_loss, load_plugins

MethodFactory = Callable[..., "Method"]  # (model, cfg, num_classes, train_size=None)
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    def deco(factory: MethodFactory) -> MethodFactory:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = factory
        return factory

    return deco


def method_names() -> list[str]:
    load_plugins()
    return sorted(set(METHODS) | set(LOSSES))


def check_method(name: str) -> None:
    """A one-line error for an unknown method: every known name, and the closest ones."""
    known = method_names()
    if name not in known:
        raise KeyError(f"unknown method {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")


def method_sampler(name: str) -> str:
    """The batch layout a method trains on (`hdml.samplers`)."""
    check_method(name)
    return METHODS[name].sampler if name in METHODS else LOSSES[name].sampler


def build_method(name: str, model: EmbeddingNet, cfg: dict, num_classes: int,
                 train_size: int | None = None) -> "Method":
    """`train_size` (training images) lets a method count epochs (HDML, protocol paper)."""
    check_method(name)
    if name in METHODS:
        return METHODS[name](model, cfg, num_classes, train_size=train_size)
    return LossMethod(model, get_loss(name)(**cfg.get(name, {})), cfg)


def weight_penalty(model: EmbeddingNet, factor: float) -> torch.Tensor:
    """The authors' in-loss weight decay: factor * sum(w^2) / 2 over conv and linear weights
    and biases of backbone and head (BatchNorm parameters excluded)."""
    if factor == 0:
        return torch.zeros((), device=next(model.parameters()).device)
    return factor * sum((p * p).sum() for p in model.decayed_weights()) / 2


def metric_optimizer(model: EmbeddingNet, cfg: dict) -> torch.optim.Optimizer:
    """Adam over backbone + head; protocol `paper` gives the head 10x the backbone's rate."""
    lr = cfg["lr"]
    head_lr = lr * 10 if cfg["protocol"] == "paper" else lr
    return torch.optim.Adam(
        [
            {"params": list(model.backbone.parameters()), "lr": lr},
            {"params": list(model.head.parameters()), "lr": head_lr},
        ]
    )


def lr_schedule(opt: torch.optim.Optimizer, cfg: dict) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg["lr_milestones"], gamma=cfg["lr_gamma"])


class Method:
    """One training step on a batch laid out as `sampler` says; owns its optimisers."""

    sampler: str

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class LossMethod(Method):
    """A baseline: J_m = loss(z) + weight penalty, minimised by Adam over backbone + head."""

    def __init__(self, model: EmbeddingNet, loss: nn.Module, cfg: dict) -> None:
        self.model, self.loss, self.cfg = model, loss, cfg
        self.sampler = loss.sampler
        self.opt = metric_optimizer(model, cfg)
        self.sched = lr_schedule(self.opt, cfg)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.model.train()
        z = self.model(x)
        j_m = self.loss(z, y) + weight_penalty(self.model, self.cfg["weight_decay"])
        self.opt.zero_grad(set_to_none=True)
        j_m.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": j_m.item()}

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
