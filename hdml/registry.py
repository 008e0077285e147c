"""The plug-in interface for metric losses, and the name registry every method is found in.

A baseline is one `MetricLoss` subclass in `baselines/`, decorated with `register_loss`.
Training strategies that need more than one loss on real embeddings (HDML) register a
`Method` factory instead (see `hdml.methods`).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

LOSSES: dict[str, type["MetricLoss"]] = {}


class MetricLoss(nn.Module):
    """A loss on a batch of (unnormalised) embeddings and their integer labels.

    `sampler` names the batch layout the loss expects (see `hdml.samplers`), `defaults`
    the loss's own hyperparameters, configurable as `<name>.<key>` in a run config.
    """

    name: ClassVar[str]
    sampler: ClassVar[str] = "m_per_class"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}")
        self.hparams = {**self.defaults, **hparams}

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def register_loss(cls: type[MetricLoss]) -> type[MetricLoss]:
    """Class decorator: make a loss available by its `name`."""
    if cls.name in LOSSES:
        raise ValueError(f"loss {cls.name!r} registered twice")
    LOSSES[cls.name] = cls
    return cls


def get_loss(name: str) -> type[MetricLoss]:
    load_plugins()
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


def load_plugins() -> None:
    """Import the packages whose modules register losses and methods."""
    import baselines  # noqa: F401  (registers on import)
    import hdml.hdml_method  # noqa: F401
