"""Training strategies: how one step turns a batch into parameter updates.

`LossMethod` serves every baseline (one loss on real embeddings, one optimiser);
HDML and DAML register their own `Method`s (`hdml.methods.synthesis`, `baselines/`). All are
found by name in `hdml.core.registry.METHODS`.
A method's trainable `Part`s (a loss's parameters, HDML's generator and classifier) share its
one optimiser, each in its own parameter groups, and its checkpoint state.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from hdml.core.registry import METHODS, Context, MetricLoss, Part, Section, check_method, get_loss
from hdml.methods.optim import MilestoneLR, authors_init, lr_schedule, metric_optimizer, weight_penalty
from hdml.model.embedding import EmbeddingNet


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
