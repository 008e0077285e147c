"""The run configuration of one training run: defaults, `--set key=value` overrides, checks.

A run config is a nested dict. Its keys are fixed by `DEFAULTS`, the dataset's own defaults
and the sections of the plug-ins its method uses (`triplet.margin`, `hdml.alpha`, ...), each
declared by the plug-in itself (`hdml.core.registry.Section`), so a typo in a key or a value of the
wrong type fails before anything runs, naming the key. A run config holds only its own
method's sections, so the checkpoint fingerprint (the whole config) does not change when a
plug-in is added or another method's defaults change.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hdml.core import schedule
from hdml.core.errors import ConfigError
from hdml.core.metricnames import check_metric
from hdml.core.suggest import did_you_mean

if TYPE_CHECKING:
    from hdml.core.registry import Section

DEFAULTS: dict[str, Any] = {
    "steps": 8000,
    "batch_size": 128,
    "embedding_dim": 512,
    # the authors' cadence (hdml.core.schedule): every `eval_every` steps (init_batch_per_epoch, 500), and
    # under protocol code, after the first evaluation at or past `eval_late_from` (5,000), every
    # `eval_every_late` steps (batch_per_epoch, one "epoch": 64 Cars196, 46 CUB); 0: the last step only
    "eval_every": 0,
    "eval_every_late": 64,
    "eval_late_from": 5000,
    "eval_batch_size": 256,
    "eval_ks": [1, 2, 4, 8],
    # clustering behind NMI/F1 (hdml.eval.metrics): the authors' algorithm ("kmeans++"), scikit-learn's KMeans
    # called as they call it ("sklearn", their clustering exactly) or one Lloyd run ("faiss")
    "eval_kmeans": "kmeans++",
    "backbone": "googlenet",
    "pretrained": True,
    "weights": None,
    "lr": 7e-5,
    # max_steps and the halving steps of the authors' flags; under protocol code with a periodic
    # evaluation, the run stops at the first evaluation step at or past `steps` and halves only at
    # milestones that are evaluation steps (hdml.core.schedule.resolve rewrites both in the run config)
    "lr_milestones": [5632, 6848],
    "lr_gamma": 0.5,
    "weight_decay": 5e-3,
    "images_per_class": 2,
    "triplet_sampler": "distinct",
    "protocol": "code",
    "device": "auto",
    "num_workers": 2,
    "max_bad_steps": 20,
    "checkpoint_every": 1000,
    "keep_checkpoints": 2,
    "keep_finished_checkpoints": False,  # a finished run needs none: model.pt holds its final weights
    "deterministic": False,
    "amp": "fp32",
    "channels_last": True,
    "compile": False,
    "tensorboard": False,
    # the embedding layer's start: PyTorch's default, or the HDML authors' Glorot-uniform with zero biases
    # (lib/nn_Ops.py:18,38; about twice PyTorch's scale at 1024 -> 512; hdml/fidelity.md, "initialisation")
    "head_init": "pytorch",
    # which checkpoint the run reports: last | val (best on classes carved from training,
    # hdml.data.valsplit) | test (best on test: the authors' procedure), by selection_metric
    "selection": "last",
    "selection_metric": "map@r",
    "val_fold": 0,  # with selection val: the fold of the training classes that validates (hdml.data.valsplit)
    # false: the run never loads, embeds nor scores the test images (tuning trials, hdml.workflow.tune);
    # needs selection val, which then reports the validation score only
    "evaluate_test": True,
    "image": {"resize": 256, "crop": 227, "flip": True, "normalize": "auto"},
}

# Keys of the core config whose default is None, with the types they accept; plug-ins declare theirs.
NULLABLE: dict[str, tuple[type, ...]] = {"weights": (str,)}
CHOICES: dict[str, tuple[str, ...]] = {
    "protocol": ("code", "paper"),
    "eval_kmeans": ("kmeans++", "faiss", "sklearn"),
    "amp": ("fp32", "tf32", "bf16"),
    "image.normalize": ("auto", "imagenet", "caffe", "unit"),
    "backbone": ("smallcnn", "googlenet", "resnet50", "googlenet-caffe"),
    "triplet_sampler": ("distinct", "independent"),
    "head_init": ("pytorch", "glorot"),
    "selection": ("last", "val", "test"),
}
POSITIVE = {"batch_size", "embedding_dim", "eval_batch_size", "images_per_class", "lr", "max_bad_steps",
            "keep_checkpoints"}
DEVICE = r"auto|cpu|cuda(:\d+)?|mps"  # what torch.device takes for a training run (auto: cuda if there is one)
NON_NEGATIVE = {"steps", "eval_every", "eval_every_late", "eval_late_from", "weight_decay", "num_workers", "lr_gamma",
                "checkpoint_every", "val_fold"}


@dataclass(frozen=True)
class Rules:
    """What the keys of one method's run config accept: the core tables above plus the
    sections its plug-ins declare (`method` None: every plug-in's, for listings and tests);
    `foreign` names the sections of other methods, with their users, for a clear error."""

    method: str | None
    sections: dict[str, Section]
    foreign: dict[str, list[str]]
    choices: dict[str, tuple[str, ...]]
    nullable: dict[str, tuple[type, ...]]
    hints: dict[str, str]


def rules_for(method: str | None = None) -> Rules:
    # here: the registry imports torch and the plug-ins; the commands that only read a run's saved
    # config (evaluate, aggregate, tsne: 90 jobs of the demo) start without them (start-up time)
    from hdml.core.registry import all_config_sections, config_sections

    known = all_config_sections()
    own = {name: section for name, (section, _) in known.items()} if method is None else config_sections(method)
    choices, nullable, hints = dict(CHOICES), dict(NULLABLE), {}
    for name, section in own.items():
        choices.update({f"{name}.{k}": v for k, v in section.choices.items()})
        nullable.update({f"{name}.{k}": v for k, v in section.nullable.items()})
        hints.update({f"{name}.{k}": v for k, v in section.hints.items()})
        for k, r in section.ranges.items():  # the search range of the tuning mode (hdml.workflow.tune), in words
            scale = ", log scale" if r.log else ""
            tuned = f"tuned in [{r.low:g}, {r.high:g}]{scale}"
            hints[f"{name}.{k}"] = f"{hints[f'{name}.{k}']}; {tuned}" if f"{name}.{k}" in hints else tuned
    foreign = {name: users for name, (_, users) in known.items() if name not in own}
    return Rules(method, own, foreign, choices, nullable, hints)


def default_config(dataset_defaults: dict[str, Any] | None = None, rules: Rules | None = None) -> dict[str, Any]:
    rules = rules or rules_for()
    cfg = copy.deepcopy(DEFAULTS)
    cfg.update({name: dict(copy.deepcopy(section.defaults)) for name, section in rules.sections.items()})
    if dataset_defaults:
        merge(cfg, dataset_defaults, "", rules)
    return cfg


def drop_foreign(overrides: dict[str, Any], method: str) -> dict[str, Any]:
    """`overrides` without the keys of plug-in sections `method` does not use: a dataset's
    shared `train` settings may hold every method's sections (`hdml: {block: 8}`)."""
    from hdml.core.registry import all_config_sections  # here: start-up time, as in rules_for

    sections = all_config_sections()

    def used(key: str) -> bool:
        head = key.partition(".")[0]
        return head not in sections or method in sections[head][1]

    return {key: value for key, value in overrides.items() if used(key)}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (or nothing); malformed YAML or another kind of top level
    is a ConfigError naming the file and, where YAML says, the line."""
    try:
        value = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}:" if where is not None else ""
        raise ConfigError(f"{path}:{line} malformed YAML ({getattr(exc, 'problem', None) or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got a {type(value).__name__}")
    return value


def parse_value(text: str) -> Any:
    """YAML scalar/list syntax; `1e-3` (a string to YAML 1.1) becomes a float."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{text!r}: not a YAML value ({str(exc).splitlines()[0]})") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key.strip()] = parse_value(text)
    return out


def _number(key: str, value: Any, expected: str) -> float:
    """A finite float from a number or from YAML 1.1's unparsed `1e-3` (a string to it, a
    float to `--set`); NaN and infinities are refused, wherever they come from."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    return float(value)


def _coerce(key: str, value: Any, default: Any, rules: Rules) -> Any:
    if default is None:
        allowed = rules.nullable.get(key)
        if allowed is None:
            raise ConfigError(f"{key}: no type known for this key")
        if value is None:
            return None
        if float in allowed:
            return _number(key, value, "a number or null")
        if not isinstance(value, allowed):
            raise ConfigError(f"{key}: expected {'/'.join(t.__name__ for t in allowed)} or null, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float):
        return _number(key, value, "a number")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, default[0], rules) if default else v for i, v in enumerate(value)]
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: cannot set a value of this kind")


def merge(cfg: dict[str, Any], overrides: dict[str, Any], prefix: str = "", rules: Rules | None = None) -> None:
    """Apply nested or dotted overrides in place, checking each key and type against `cfg`."""
    rules = rules or rules_for()
    for raw_key, value in overrides.items():
        head, _, rest = raw_key.partition(".")
        key = f"{prefix}{head}"
        if head not in cfg:
            if not prefix and head in rules.foreign:
                raise ConfigError(f"{raw_key}: the {head} section belongs to {', '.join(rules.foreign[head])}, "
                                  f"not to method {rules.method}")
            raise ConfigError(f"{key}: unknown key{did_you_mean(head, cfg)}")
        if rest:
            if not isinstance(cfg[head], dict):
                raise ConfigError(f"{key}: not a section, cannot set {raw_key}")
            merge(cfg[head], {rest: value}, f"{key}.", rules)
        elif isinstance(cfg[head], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            merge(cfg[head], value, f"{key}.", rules)
        else:
            cfg[head] = _coerce(key, value, cfg[head], rules)


def validate(cfg: dict[str, Any], rules: Rules | None = None) -> None:
    """Value checks that types alone cannot express; each plug-in section by its own `check`
    (a loss is built on the meta device, so its range checks fail the config, not the job)."""
    rules = rules or rules_for()
    for key in POSITIVE:
        if cfg[key] <= 0:
            raise ConfigError(f"{key}: must be > 0, got {cfg[key]}")
    for key in NON_NEGATIVE:
        if cfg[key] < 0:
            raise ConfigError(f"{key}: must be >= 0, got {cfg[key]}")
    for dotted, choices in rules.choices.items():
        value = lookup(cfg, dotted)
        if value not in choices:
            raise ConfigError(f"{dotted}: must be one of {list(choices)}, got {value!r}")
    if not re.fullmatch(DEVICE, cfg["device"]):
        raise ConfigError(f"device: must be auto, cpu, cuda, cuda:N or mps, got {cfg['device']!r}")
    if cfg["val_fold"] and cfg["selection"] != "val":
        raise ConfigError(f"val_fold: {cfg['val_fold']} only applies to selection: val (other selections train on "
                          f"every fold), got selection: {cfg['selection']}")
    if any(k <= 0 for k in cfg["eval_ks"]):
        raise ConfigError(f"eval_ks: every K must be > 0, got {cfg['eval_ks']}")
    if cfg["batch_size"] % 2:
        raise ConfigError(f"batch_size: must be even (pairs), got {cfg['batch_size']}")
    if not cfg["evaluate_test"] and cfg["selection"] != "val":
        raise ConfigError(f"evaluate_test: false needs selection: val (the run's only score is then the "
                          f"validation one), got selection: {cfg['selection']}")
    try:
        check_metric(cfg["selection_metric"], cfg["eval_ks"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name, section in rules.sections.items():
        if section.check is not None:
            try:
                section.check(dict(cfg[name]))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


def lookup(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def build_run_config(dataset_defaults: dict[str, Any], overrides: dict[str, Any],
                     method: str | None = None) -> dict[str, Any]:
    """The checked run config of `method` (None: with every plug-in's section), its schedule
    resolved: under protocol code the stop step and the halving steps the authors' gating gives
    (`hdml.core.schedule`)."""
    rules = rules_for(method)
    cfg = default_config(dataset_defaults, rules)
    merge(cfg, overrides, "", rules)
    validate(cfg, rules)
    schedule.resolve(cfg)
    return cfg


def allowed_values(key: str, default: Any, rules: Rules) -> str:
    """What a key accepts, in words, from the same tables the checks use."""
    if key in rules.choices:
        return " | ".join(rules.choices[key])
    if default is None:
        kind = " | ".join("number" if t is float else t.__name__ for t in rules.nullable.get(key, ())) + " | null"
    elif isinstance(default, list):
        kind = f"list of {_kind(default[0])}s" if default else "list"
    else:
        kind = _kind(default)
    if key in POSITIVE:
        kind += " > 0"
    elif key in NON_NEGATIVE:
        kind += " >= 0"
    if key in rules.hints:
        kind += f", {rules.hints[key]}"
    return kind


def _kind(value: Any) -> str:
    return ("true | false" if isinstance(value, bool) else "number" if isinstance(value, float)
            else "integer" if isinstance(value, int) else "string")


def describe_keys(cfg: dict[str, Any], rules: Rules, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, allowed values) of every settable key of a run config."""
    rows: list[tuple[str, Any, str]] = []
    for name, value in cfg.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            rows += describe_keys(value, rules, f"{key}.")
        else:
            rows.append((key, value, allowed_values(key, value, rules)))
    return rows
