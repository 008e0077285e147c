"""Training strategies: how one step turns a batch into parameter updates.

`LossMethod` serves every baseline (one loss on real embeddings, one optimiser);
HDML registers its own `Method` in `baselines.hdml`. All are found by name in `METHODS`.
A method's trainable `Part`s (a loss's parameters, HDML's generator and classifier) share its
one optimiser, each in its own parameter groups, and its checkpoint state.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from hdml.core.registry import LOSSES, Context, MetricLoss, Part, Section, get_loss, load_plugins
from hdml.core.suggest import did_you_mean
from hdml.model.embedding import EmbeddingNet, glorot_

# A factory has `sampler`, `config_sections()` and is called (model, cfg, context, train_size=None).
MethodFactory = Callable[..., "Method"]
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
    """The batch layout a method trains on (`hdml.data.samplers`)."""
    check_method(name)
    return METHODS[name].sampler if name in METHODS else LOSSES[name].sampler


def config_sections(name: str) -> dict[str, Section]:
    """The run-config sections a method uses, by section name (a loss: its own; HDML: `hdml`
    and its base loss's)."""
    check_method(name)
    return METHODS[name].config_sections() if name in METHODS else {name: LOSSES[name].section()}


def all_config_sections() -> dict[str, tuple[Section, list[str]]]:
    """Every plug-in section with the methods that use it; one name, one declaration."""
    out: dict[str, tuple[Section, list[str]]] = {}
    for method in method_names():
        for name, section in config_sections(method).items():
            if name in out and out[name][0] != section:
                raise ValueError(f"config section {name!r} declared differently by {out[name][1]} and {method!r}")
            out.setdefault(name, (section, []))[1].append(method)
    return out


def build_method(name: str, model: EmbeddingNet, cfg: dict, num_classes: int,
                 train_size: int | None = None) -> Method:
    """`train_size` (training images) lets a method count epochs (HDML, protocol paper)."""
    check_method(name)
    context = Context(num_classes=num_classes, embedding_dim=model.head.fc.out_features,
                      feature_dim=model.feature_dim, device=next(model.parameters()).device)
    if name in METHODS:
        return METHODS[name](model, cfg, context, train_size=train_size)
    return LossMethod(model, build_loss(get_loss(name), cfg, context), cfg)


def build_loss(cls: type[MetricLoss], cfg: dict, context: Context) -> MetricLoss:
    """A loss with its section's hyperparameters, its parameters on the context's device."""
    return cls(context=context, **cfg[cls.name]).to(context.device)


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


class Method:
    """One training step on a batch laid out as `sampler` says. Owns one optimiser `opt` (with
    `sched`) over the model and its `parts`, whose state the checkpoint holds by part name. A
    registered `Method` class names itself in the report by `display_name` (and `paper_name`, as
    `MetricLoss` does). A method built around a registered loss says which by `base` (its
    name), and the kind of synthetic samples it adds by `family` ("HDML", "DAML"): the report
    draws the base beside the method and compares families on one base, by these alone. A method
    that evaluates something other than the model's embedding defines `eval_features(x)` (a batch
    of images to the features evaluated; DAML's code protocol: its discriminator's output), which
    the trainer then embeds with (`hdml.train.trainer.embed`)."""

    display_name: ClassVar[str]
    paper_name: ClassVar[str]
    # The report's training-loss figures: the columns of losses.csv beside J_m this method logs,
    # with their labels, and the figure that draws them: "hdml" (HDML's own losses, per dataset)
    # or "generator" (the generator curves of "Synthetic hard samples, side by side").
    loss_terms: ClassVar[dict[str, str]] = {}
    loss_figure: ClassVar[str | None] = None
    base: ClassVar[str | None] = None
    family: ClassVar[str | None] = None
    sampler: str
    opt: torch.optim.Optimizer
    sched: MilestoneLR
    parts: dict[str, Part]

    @classmethod
    def config_sections(cls) -> dict[str, Section]:
        """The run-config sections this method reads, by name."""
        return {}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "parts": {name: part.state_dict() for name, part in self.parts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state["parts"][name])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


class LossMethod(Method):
    """A baseline: J_m = loss(z) + weight penalty, minimised by Adam over backbone + head and the
    loss's own parameters, if it has any."""

    def __init__(self, model: EmbeddingNet, loss: MetricLoss, cfg: dict) -> None:
        self.model, self.loss, self.cfg = model, loss, cfg
        authors_init(model, cfg)
        self.sampler = loss.sampler
        self.parts = {"loss": loss}
        self.opt = metric_optimizer(model, cfg, [loss])
        self.sched = lr_schedule(self.opt, cfg)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.model.train()
        self.loss.train()
        z = self.model(x)
        j_m = self.loss(z, y) + weight_penalty(self.model, self.cfg["weight_decay"])
        self.opt.zero_grad(set_to_none=True)
        j_m.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": j_m.item()}
