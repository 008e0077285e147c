"""The plug-in interface for metric losses, and the name registry every method is found in.

A baseline is one `MetricLoss` subclass in its own file in `baselines/`, decorated with
`register_loss`; `load_plugins` finds the file (no import line to add anywhere).
Training strategies that need more than one loss on real embeddings (HDML) register a
`Method` factory instead (see `hdml.methods`).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any, ClassVar

import torch
from torch import nn

LOSSES: dict[str, type[MetricLoss]] = {}


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


PLUGIN_PACKAGES = ("baselines",)  # every module in these packages is a plug-in candidate
PLUGIN_MODULES = ("hdml.hdml_method",)  # single modules outside them (HDML's own method)


def load_plugins() -> None:
    """Import every module of the plug-in packages, so a new loss file registers itself without
    being listed anywhere. A module that fails to import, or that defines a `MetricLoss` subclass
    with a `name` but never registers it, is an error naming its file (instead of a later
    "unknown loss")."""
    for package in PLUGIN_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__, f"{package}."):
            _import_plugin(info.name)
    for module in PLUGIN_MODULES:
        _import_plugin(module)


def _import_plugin(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        spec = importlib.util.find_spec(module_name)
        where = spec.origin if spec is not None else module_name
        raise ImportError(f"{where}: plug-in module {module_name} fails to import ({exc!r})") from exc
    for obj in vars(module).values():
        if (isinstance(obj, type) and issubclass(obj, MetricLoss) and obj.__module__ == module_name
                and "name" in vars(obj) and LOSSES.get(obj.name) is not obj):
            raise ImportError(f"{module.__file__}: loss class {obj.__name__} (name {obj.name!r}) is not "
                              f"registered; decorate it with @register_loss")
