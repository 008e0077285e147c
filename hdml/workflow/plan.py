"""The experiment plan: which runs a workflow config asks for, checked before any job runs.

Each run is (dataset, method, variant, seed) plus the run-config overrides it gets: the
dataset's `train` section, then the variant's `set`. Variant `default` is the main table. A
variant with `tuned: true` also takes, at run time, the best settings of its (dataset, method)
study (`tune` section, `hdml.workflow.tune`): the study's trials are planned here too (`tune_studies`).
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from hdml.core import reference
from hdml.core.config import ConfigError, build_run_config, drop_foreign, read_yaml
from hdml.core.registry import all_config_sections, method_names
from hdml.core.suggest import did_you_mean
from hdml.data.datasets import dataset_names, get_dataset
from hdml.workflow.tune import DEFAULTS, check_space

# Package data, so an installed hdml (not only a checkout) can check a config; the Snakefile
# validates against this same file (`schema_path`), the one copy.
SCHEMA = ("schemas", "config.schema.yaml")  # inside the hdml package


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    variant: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    tuned: bool = field(default=False, compare=False, hash=False)  # + results/tune/DATASET/METHOD/best.yaml
    # Final models per fold (hdml.eval.ensemble): a run of a variant with `folds: K` is not trained
    # itself but joins its K fold runs (`folds` K); each fold run (`VARIANT.foldF`) names it in `part_of`.
    folds: int = field(default=0, compare=False, hash=False)
    part_of: str | None = field(default=None, compare=False, hash=False)

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.method}/{self.variant}/seed{self.seed}"


def read_workflow_configs(paths: list[str]) -> dict[str, Any]:
    """The workflow config of `paths` merged as Snakemake merges several --configfile: key by
    key, mappings recursively, later files winning (an overlay such as config/fair.yaml adds to
    config/paper.yaml's datasets instead of replacing them)."""
    config: dict[str, Any] = {}
    for path in paths:
        overlay(config, read_yaml(path))
    return config


def overlay(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            overlay(base[key], value)
        else:
            base[key] = value


def schema_path() -> Path:
    """The packaged workflow-config schema as a file path (Snakemake's `validate` wants one)."""
    resource = importlib.resources.files("hdml").joinpath(*SCHEMA)
    if not isinstance(resource, Path):  # a zipped install: no file to point to
        raise RuntimeError(f"{resource}: hdml's schema is not a file; install hdml unzipped")
    return resource


def load_schema(path: Path | None = None) -> dict:
    """The workflow-config schema: `path`, else the packaged one."""
    source = importlib.resources.files("hdml").joinpath(*SCHEMA) if path is None else path
    return yaml.safe_load(source.read_text())


def validate_workflow_config(config: dict, schema: dict | None = None, source: str = "config") -> list[Run]:
    """Schema check, then every run's config built and checked; returns the runs."""
    schema = schema or load_schema()
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if errors:
        # A misspelt key also makes its correct spelling "missing": report the misspelling.
        typos = [e for e in errors if e.validator == "additionalProperties"]
        exc = min(typos, key=lambda e: len(e.absolute_path)) if typos else jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {schema_error(exc)}") from None
    known_methods, known_datasets = method_names(), dataset_names()
    check_only(config, source)
    for name in config["datasets"]:  # the registry is the only list of names (none in the schema)
        if name not in known_datasets:
            raise ConfigError(f"{source}: datasets: unknown dataset {name!r}{did_you_mean(name, known_datasets)}; "
                              f"known: {', '.join(known_datasets)}")
    try:
        runs = plan_runs(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not runs:
        raise ConfigError(f"{source}: only: {config.get('only')} leaves no run of the grid")
    for run in runs:
        if run.folds and run.overrides.get("selection") != "val":
            raise ConfigError(f"{source}: variants.{run.variant}: folds: {run.folds} trains a model per validation "
                              f"fold, which needs set: {{selection: val}}")
        folds = config["datasets"][run.dataset].get("prepare", {}).get("val_folds", 0)
        if run.folds > folds:
            raise ConfigError(f"{source}: variants.{run.variant}: folds: {run.folds}, but datasets.{run.dataset}."
                              f"prepare.val_folds makes {folds}")
    for run in runs:
        if run.method not in known_methods:
            raise ConfigError(f"{source}: datasets.{run.dataset}.methods: unknown method {run.method!r}"
                              f"{did_you_mean(run.method, known_methods)}; known: {', '.join(known_methods)}")
        try:
            build_run_config(get_dataset(run.dataset).defaults_for(run.method), run.overrides, run.method)
        except ConfigError as exc:
            section = f"datasets.{run.dataset}.train/per_method.{run.method}"
            if run.variant != "default":
                section += f" + variants.{run.variant}.set"
            raise ConfigError(f"{source}: {section}: {exc}") from None
        if run.overrides.get("selection") == "val" and "val_folds" not in config["datasets"][run.dataset].get(
                "prepare", {}):
            raise ConfigError(f"{source}: datasets.{run.dataset}: {run.method} ({run.variant}) has selection: val, "
                              f"which needs a validation split: add prepare: {{val_folds: 4}} to the dataset")
        if run.overrides.get("evaluate_test") is False:
            raise ConfigError(f"{source}: {run.dataset}/{run.method} ({run.variant}): evaluate_test: false is for "
                              f"tuning trials (hdml tune); a run of the report needs its test metrics")
        fold = run.overrides.get("val_fold", 0)
        if fold and run.overrides.get("selection") != "val":
            raise ConfigError(f"{source}: {run.dataset}/{run.method} ({run.variant}): val_fold: {fold} only "
                              f"applies to selection: val (other selections train on every fold)")
        folds = config["datasets"][run.dataset].get("prepare", {}).get("val_folds")
        if folds and fold >= folds:
            raise ConfigError(f"{source}: {run.dataset}/{run.method} ({run.variant}): val_fold: {fold}, but "
                              f"prepare: {{val_folds: {folds}}} makes folds 0..{folds - 1}")
    check_tuning(config, runs, source)
    tsne = config.get("tsne")
    if tsne:
        wanted = Run(tsne["dataset"], tsne["method"], "default", tsne.get("seed", min(config["seeds"])))
        if wanted not in runs:
            raise ConfigError(f"{source}: tsne: {wanted.path} is not a run of this config (the t-SNE map shows "
                              f"one of its default runs)")
    return runs


def schema_error(exc: jsonschema.ValidationError) -> str:
    """One line for a schema violation: where, what; for unknown keys, the known ones and the
    closest (instead of jsonschema's dump of the whole schema)."""
    where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
    if exc.validator == "additionalProperties" and isinstance(exc.instance, dict):
        known = list(exc.schema.get("properties", {}))
        unknown = [k for k in exc.instance if k not in known]
        if unknown and known:
            hints = "; ".join(f"unknown key {k!r}{did_you_mean(str(k), known)}" for k in unknown)
            return f"{where}: {hints}; known keys: {', '.join(known)}"
    return f"{where}: {exc.message}"


def selected(config: dict, dataset: str, method: str, variant: str) -> bool:
    """Whether the config's `only` section keeps the runs of (dataset, method, variant)."""
    only = config.get("only") or {}
    return all(value in only.get(key, [value]) for key, value in
               (("datasets", dataset), ("methods", method), ("variants", variant)))


def check_only(config: dict, source: str) -> None:
    """Every name in `only` must name something of the grid (a typo would narrow to nothing, or
    keep what it meant to drop). A `tsne` map of a run `only` drops is dropped too, in place: the
    Snakefile reads the same dict."""
    only = config.get("only") or {}
    known = {"datasets": list(config["datasets"]), "methods": method_names(),
             "variants": ["default", *(config.get("variants") or {})]}
    for key, names in only.items():
        for name in names:
            if name not in known[key]:
                raise ConfigError(f"{source}: only.{key}: unknown {key[:-1]} {name!r}"
                                  f"{did_you_mean(name, known[key])}; known: {', '.join(known[key])}")
    tsne = config.get("tsne")
    if only and tsne and not selected(config, tsne["dataset"], tsne["method"], "default"):
        del config["tsne"]


def plan_runs(config: dict) -> list[Run]:
    runs: list[Run] = []
    for dataset, entry in config["datasets"].items():
        for method in entry["methods"]:
            if not selected(config, dataset, method, "default"):
                continue
            base = method_overrides(config, dataset, method)
            runs += [Run(dataset, method, "default", s, base) for s in config["seeds"]]
    for variant, entry in (config.get("variants") or {}).items():
        if variant == reference.VARIANT:
            raise ConfigError(f"variants.{variant}: the name is reserved for the untrained reference runs "
                              "(hdml/core/reference.py); name the variant otherwise")
        for dataset in entry["datasets"]:
            if dataset not in config["datasets"]:
                raise ConfigError(f"variants.{variant}.datasets: {dataset!r} is not under datasets"
                                  f"{did_you_mean(dataset, list(config['datasets']))}")
            check_variant_methods(variant, entry)
            check_variant_sections(variant, entry)
            for method in entry["methods"]:
                if not selected(config, dataset, method, variant):
                    continue
                base = method_overrides(config, dataset, method)
                overrides = {**base, **drop_foreign(entry["set"], method)}
                tuned, folds = entry.get("tuned", False), entry.get("folds", 0)
                for s in entry.get("seeds", config["seeds"]):
                    runs.append(Run(dataset, method, variant, s, overrides, tuned, folds))
                    runs += [Run(dataset, method, fold_variant(variant, f), s, {**overrides, "val_fold": f}, tuned,
                                 part_of=variant) for f in range(folds)]
    return runs + reference_runs(config, runs)


def reference_runs(config: dict, runs: list[Run]) -> list[Run]:
    """The network before metric learning (hdml.core.reference), the reference row, once per seed for each
    dataset the grid (narrowed by `only`) trains on: as variant VARIANT of its first method planned
    (which one is immaterial: it never steps)."""
    out = []
    for dataset, entry in config["datasets"].items():
        planned = [r.method for r in runs if r.dataset == dataset]
        if not planned:
            continue
        first = next((m for m in entry["methods"] if m in planned), planned[0])
        out += [Run(dataset, first, reference.VARIANT, s, {**method_overrides(config, dataset, first),
                                                           **reference.OVERRIDES}) for s in config["seeds"]]
    return out


def check_variant_methods(variant: str, entry: dict[str, Any]) -> None:
    """Method names first: a misspelt one would otherwise surface as a section none of the
    variant's methods uses."""
    known = method_names()
    for method in entry["methods"]:
        if method not in known:
            raise ConfigError(f"variants.{variant}.methods: unknown method {method!r}"
                              f"{did_you_mean(method, known)}; known: {', '.join(known)}")


def fold_variant(variant: str, fold: int) -> str:
    """The variant name of fold `fold`'s model of a variant with `folds` (hdml.eval.ensemble)."""
    return f"{variant}.fold{fold}"


def check_variant_sections(variant: str, entry: dict[str, Any]) -> None:
    """A variant's `set` may hold plug-in sections only some of its methods use (`protocol=paper`
    sets `hdml.beta` for HDML and DAML runs alike; each run drops the sections it lacks), but a
    section none of them uses would change nothing: an error, not a silent copy of the default."""
    sections = all_config_sections()
    for key in entry["set"]:
        head = key.partition(".")[0]
        if head in sections and not set(sections[head][1]) & set(entry["methods"]):
            raise ConfigError(f"variants.{variant}.set: {key}: the {head} section belongs to "
                              f"{', '.join(sections[head][1])}, none of this variant's methods "
                              f"({', '.join(entry['methods'])})")


def tune_settings(config: dict) -> dict[str, Any]:
    """The workflow config's `tune` section with its defaults filled in."""
    return {**DEFAULTS, **config.get("tune", {})}


def tune_studies(config: dict) -> dict[tuple[str, str], dict[str, Any]]:
    """The (dataset, method) studies the tuned variants need, each with the variant's `set`, which
    its trials train with too (so a trial trains as the final runs do); two tuned variants of one
    study must agree on it."""
    studies: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for variant, entry in (config.get("variants") or {}).items():
        if not entry.get("tuned"):
            continue
        for key in ((d, m) for d in entry["datasets"] for m in entry["methods"] if selected(config, d, m, variant)):
            first = studies.setdefault(key, (variant, entry["set"]))
            if first[1] != entry["set"]:
                raise ConfigError(f"variants.{variant}: tuned like variants.{first[0]} on {key[0]}/{key[1]} but with "
                                  f"another `set`; one study per dataset and method trains its trials with one")
    return {key: dict(value) for key, (_, value) in sorted(studies.items())}


def trial_overrides(config: dict, dataset: str, method: str) -> dict[str, Any]:
    """A trial's run-config overrides: the method's on the dataset, its tuned variant's `set`,
    then `tune.set`; the trial adds `selection: val` and its point of the search space."""
    return {**method_overrides(config, dataset, method), **tune_studies(config)[(dataset, method)],
            **tune_settings(config)["set"]}


def check_tuning(config: dict, runs: list[Run], source: str) -> None:
    """A tuned variant needs a `tune` section, a validation split, and a method with search
    ranges that its plug-ins' checks accept at both ends."""
    tuned = [r for r in runs if r.tuned]
    if tuned and "tune" not in config:
        raise ConfigError(f"{source}: variants.{tuned[0].variant}: tuned: true needs a `tune` section "
                          f"(e.g. tune: {{trials: 30}})")
    settings = tune_settings(config)
    for dataset, method in tune_studies(config):
        where = f"{source}: tune: {dataset}/{method}"
        if "val_folds" not in config["datasets"][dataset].get("prepare", {}):
            raise ConfigError(f"{where}: trials are scored on a validation split: add prepare: {{val_folds: 4}} "
                              f"to datasets.{dataset}")
        if settings["folds"] > config["datasets"][dataset]["prepare"]["val_folds"]:
            raise ConfigError(f"{where}: tune.folds {settings['folds']}, but datasets.{dataset}.prepare.val_folds "
                              f"makes {config['datasets'][dataset]['prepare']['val_folds']} folds")
        base = {**trial_overrides(config, dataset, method), "selection": "val",
                "selection_metric": settings["metric"]}
        try:
            check_space(method, get_dataset(dataset).defaults_for(method), base)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def method_overrides(config: dict, dataset: str, method: str) -> dict[str, Any]:
    """The dataset's `train` section (less the sections of plug-ins this method does not use),
    then its `per_method` section for this method."""
    entry = config["datasets"][dataset]
    return {**drop_foreign(entry.get("train", {}), method), **entry.get("per_method", {}).get(method, {})}


def set_args(overrides: dict[str, Any]) -> list[str]:
    """`--set` arguments reproducing `overrides` (values as YAML flow scalars)."""
    out = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            out += set_args({f"{key}.{k}": v for k, v in value.items()})
        else:
            out.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out
