"""The plug-in interface for metric losses, and the name registry every method is found in.

A baseline is one `MetricLoss` subclass in its own file in `baselines/`, decorated with
`register_loss`; `load_plugins` finds the file (no import line to add anywhere).
Training strategies that need more than one loss on real embeddings (HDML, DAML) register a
`Method` factory with `register_method` instead (see `hdml.methods.base`). Names and config
sections live here, below every layer that asks for them (config, datasets, workflow, cli);
building and training a method is `hdml.methods`' business.

Every plug-in owns its run-config section (`Section`: defaults, allowed values, nullable keys,
value checks, and the search `ranges` of its hyper-parameters for `hdml.workflow.tune`), so `hdml.core.config`
and `hdml.workflow.tune` know no plug-in by name. Trainable pieces a plug-in adds to the
model (a loss's proxies, HDML's generator) are `Part`s: built from a `Context`, moved to its
device, given their own optimiser parameter groups and saved in the checkpoint by the method.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import nn

from hdml.core.discovery import import_modules
from hdml.core.suggest import did_you_mean

LOSSES: dict[str, type[MetricLoss]] = {}
# A method factory (a `hdml.methods.base.Method` class) has `sampler`, `config_sections()` and is
# called (model, cfg, context, train_size=None).
MethodFactory = Callable[..., Any]
METHODS: dict[str, MethodFactory] = {}


@dataclass(frozen=True)
class Context:
    """What a plug-in may size its parameters by, known only once data and model exist."""

    num_classes: int  # training classes (proxies, classifiers)
    embedding_dim: int  # the head's output
    feature_dim: int  # the backbone's output (what HDML's generator reconstructs)
    device: torch.device


# Builds a loss only to run its checks: parameters on the meta device take no memory and
# draw no random numbers, so a config check changes nothing a run later depends on.
CHECK_CONTEXT = Context(num_classes=2, embedding_dim=2, feature_dim=2, device=torch.device("meta"))


@dataclass(frozen=True)
class Range:
    """The search range of one numeric hyper-parameter for tuning (`hdml.workflow.tune`): [low, high],
    sampled on a log scale when `log` (scales, rates, weights spanning decades), as integers when
    `integer`. A plug-in declares it beside the default it brackets."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"range [{self.low}, {self.high}]: needs finite low < high")
        if self.log and self.low <= 0:
            raise ValueError(f"range [{self.low}, {self.high}]: a log scale needs low > 0")
        if self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"range [{self.low}, {self.high}]: an integer range needs integer ends")


@dataclass(frozen=True)
class Section:
    """A plug-in's run-config section: `defaults` fix its keys and types, `choices` the allowed
    strings, `nullable` the types a key whose default is None accepts, `hints` extra words for
    `hdml config --list`; `check` raises ValueError/ConfigError on values types cannot refuse;
    `ranges` the search range of each tunable key (`hdml.workflow.tune`; none: the section is not tuned)."""

    defaults: Mapping[str, Any]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nullable: Mapping[str, tuple[type, ...]] = field(default_factory=dict)
    hints: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None
    ranges: Mapping[str, Range] = field(default_factory=dict)


class Part(nn.Module):
    """A trainable piece a method adds to the model. `param_groups` are its optimiser groups,
    each with its own `lr`; a group with `scheduled: False` keeps its rate through the run's
    `lr_milestones` (the others decay with the backbone's)."""

    def param_groups(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return []


class MetricLoss(Part):
    """A loss on a batch of (unnormalised) embeddings and their integer labels.

    `display_name` is the loss's name in the report, `paper_name` the row of the paper's tables it
    fills where the paper calls it otherwise (unset: the display name, or no row),
    `sampler` names the batch layout the loss expects (see `hdml.data.samplers`), `defaults`
    the loss's own hyperparameters, configurable as `<name>.<key>` in a run config, `choices`
    and `nullable` what its keys accept, `hints` the ranges its own checks enforce, in words,
    `ranges` the search range of each hyper-parameter the tuning mode varies (`hdml.workflow.tune`). A
    loss with trainable parameters creates them from `context` and declares `lr_mult` in
    `defaults`: its group's rate is `lr * lr_mult`.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    paper_name: ClassVar[str]
    sampler: ClassVar[str] = "m_per_class"
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    nullable: ClassVar[dict[str, tuple[type, ...]]] = {}
    hints: ClassVar[dict[str, str]] = {}
    ranges: ClassVar[dict[str, Range]] = {}

    def __init__(self, *, context: Context | None = None, **hparams: Any) -> None:
        super().__init__()
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}")
        self.hparams = {**self.defaults, **hparams}
        self.context = context
        for key, allowed in self.choices.items():
            if self.hparams[key] not in allowed:
                raise ValueError(f"{self.name}.{key}: must be one of {list(allowed)}, got {self.hparams[key]!r}")

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def section(cls) -> Section:
        return Section(cls.defaults, cls.choices, cls.nullable, cls.hints, cls.check_hparams, cls.ranges)

    @classmethod
    def check_hparams(cls, values: dict[str, Any]) -> None:
        """The loss's own range checks, run by building it on `CHECK_CONTEXT`."""
        cls(context=CHECK_CONTEXT, **values)

    def param_groups(self, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        if "lr_mult" not in self.hparams:
            raise TypeError(f"{self.name}: a loss with trainable parameters must declare `lr_mult` in its defaults")
        return [{"params": params, "lr": cfg["lr"] * self.hparams["lr_mult"], "name": self.name}]


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


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Class decorator: make a method available by `name`."""
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


PLUGIN_PACKAGES = ("baselines",)  # every module in these packages is a plug-in candidate


def load_plugins() -> None:
    """Import every module of the plug-in packages, so a new loss file registers itself without
    being listed anywhere. A module that fails to import, or that defines a `MetricLoss` subclass
    with a `name` but never registers it, is an error naming its file (instead of a later
    "unknown loss")."""
    for package in PLUGIN_PACKAGES:
        for module in import_modules(package, "plug-in"):
            _check_registered(module)


def _check_registered(module: ModuleType) -> None:
    for obj in vars(module).values():
        if (isinstance(obj, type) and issubclass(obj, MetricLoss) and obj.__module__ == module.__name__
                and "name" in vars(obj) and LOSSES.get(obj.name) is not obj):
            raise ImportError(f"{module.__file__}: loss class {obj.__name__} (name {obj.name!r}) is not "
                              f"registered; decorate it with @register_loss")
