"""What a planned grid costs before anything runs: device-hours and disk, projected from the
figures of hdml/resources/costs.yaml (each with its kind, goal, measured or estimate, and its source in
docs/benchmarks.md), so that `hdml check-config`, `hdml status` and the README quote one source.

Device time counts the training jobs, runs and tuning trials: their steps, their evaluation points
(embedding the test split, and the validation classes under `selection: val`, then the test
metrics) and their start-up. Prepare, cache, aggregate and report run on the host and are left out
(minutes to an hour for the paper's grid: docs/benchmarks.md, "Projection to the real run").
"""
from __future__ import annotations

import functools
import importlib
import importlib.resources
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from hdml.core.config import build_run_config
from hdml.core.schedule import eval_due
from hdml.data.datasets import get_dataset
from hdml.workflow.plan import Run, trial_overrides, tune_settings, tune_studies

COSTS = ("resources", "costs.yaml")  # inside the hdml package


@functools.cache
def load_costs() -> dict[str, Any]:
    return yaml.safe_load(importlib.resources.files("hdml").joinpath(*COSTS).read_text())


def evaluation_points(cfg: dict[str, Any]) -> int:
    """How many times a run evaluates (hdml.core.schedule.eval_due, counted step by step)."""
    return _points(cfg["steps"], cfg["eval_every"], cfg["eval_every_late"], cfg["eval_late_from"], cfg["protocol"])


@functools.cache
def _points(steps: int, every: int, late: int, late_from: int, protocol: str) -> int:
    cfg = {"steps": steps, "eval_every": every, "eval_every_late": late, "eval_late_from": late_from,
           "protocol": protocol}
    if steps == 0:  # the reference run (hdml.core.reference): one evaluation, of the network at initialisation
        return 1
    return sum(eval_due(step, cfg) for step in range(1, steps + 1))


@dataclass(frozen=True)
class Job:
    """One training job's projection: where it runs, its seconds, its disk."""

    device: str | None  # "gpu", "cpu"; None: no figures for its backbone
    seconds: float
    steps: int
    result_bytes: float  # left behind: model.pt, embeddings, logs
    checkpoint_bytes: float  # held while it trains


def project_job(dataset: str, cfg: dict[str, Any], val_folds: int | None) -> Job:
    costs = load_costs()
    backbone = cfg["backbone"]
    if backbone not in costs["step"]:
        return Job(None, 0.0, cfg["steps"], 0.0, 0.0)
    step = costs["step"][backbone]
    device = "cpu" if cfg["device"] == "cpu" else step["device"]
    images = costs["images"][dataset]
    embedded = images["test"] if cfg["evaluate_test"] else 0
    if cfg["selection"] == "val" and val_folds:
        embedded += images["train"] / val_folds
    metric = costs["metrics_seconds"][dataset][cfg["eval_kmeans"]] if cfg["evaluate_test"] else 0.0
    per_point = embedded / costs["embed_images_per_second"][backbone]["value"] + metric
    seconds = cfg["steps"] * step["seconds"] + evaluation_points(cfg) * per_point + costs["job_seconds"]["value"]
    sizes = costs["run_bytes"][backbone]
    embeddings = images["test"] * cfg["embedding_dim"] * 4 if cfg["evaluate_test"] else 0
    return Job(device, seconds, cfg["steps"], sizes["model"] + embeddings + costs["small_files_bytes"],
               sizes["checkpoint"] * cfg["keep_checkpoints"])


@dataclass
class Projection:
    """A grid's projected cost; `seconds` by device ("gpu", "cpu"), `disk` bytes by part."""

    runs: int = 0
    trials: int = 0
    jobs: int = 0
    steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    disk: dict[str, float] = field(default_factory=dict)
    checkpoint_bytes: float = 0.0  # the most one training job holds in checkpoints while it runs
    run_seconds: dict[str, float] = field(default_factory=dict)  # Run.path -> projected seconds
    unprojected: list[str] = field(default_factory=list)  # backbones without figures
    backbones: set[str] = field(default_factory=set)  # those with figures, which the projection used

    def hours(self, device: str) -> float:
        return self.seconds.get(device, 0.0) / 3600

    def disk_total(self) -> float:
        return sum(self.disk.values())


def run_config(run: Run) -> dict[str, Any]:
    return build_run_config(get_dataset(run.dataset).defaults_for(run.method), run.overrides, run.method)


def project(config: dict[str, Any], runs: list[Run]) -> Projection:
    """The projected cost of the runs `config` plans (hdml.workflow.plan.validate_workflow_config) and of
    the tuning trials of its tuned variants. Jobs counted as the Snakefile makes them: prepare per
    dataset, cache per dataset whose runs read its image size, train and evaluate per run, one job
    per trial and per study's `tune best`, the t-SNE map, aggregate, report, all."""
    out = Projection(runs=len(runs))
    sizes = {d: build_run_config(get_dataset(d).run_defaults, entry.get("train", {}))["image"]["resize"]
             for d, entry in config["datasets"].items()}
    cached: set[str] = set()

    def add(dataset: str, cfg: dict[str, Any]) -> Job:
        job = project_job(dataset, cfg, config["datasets"][dataset].get("prepare", {}).get("val_folds"))
        out.steps += job.steps
        if job.device is None:
            if cfg["backbone"] not in out.unprojected:
                out.unprojected.append(cfg["backbone"])
        else:
            out.seconds[job.device] = out.seconds.get(job.device, 0.0) + job.seconds
            out.backbones.add(cfg["backbone"])
        out.disk["results"] = out.disk.get("results", 0.0) + job.result_bytes
        out.checkpoint_bytes = max(out.checkpoint_bytes, job.checkpoint_bytes)
        if cfg["image"]["resize"] == sizes[dataset]:
            cached.add(dataset)
        return job

    for run in runs:
        out.run_seconds[run.path] = add(run.dataset, run_config(run)).seconds
    studies = tune_studies(config)
    tune = tune_settings(config) if studies else {"trials": 0}
    out.trials = len(studies) * tune["trials"]
    for dataset, method in studies:
        overrides = {**trial_overrides(config, dataset, method), "selection": "val", "evaluate_test": False,
                     "selection_metric": tune["metric"]}
        cfg = build_run_config(get_dataset(dataset).defaults_for(method), overrides, method)
        for _ in range(tune["trials"]):
            add(dataset, cfg)
    used = {r.dataset for r in runs} | {d for d, _ in studies}
    out.jobs = (len(used) + len(cached) + 2 * len(runs) + out.trials + len(studies)
                + bool(config.get("tsne")) + 3)
    costs = load_costs()
    for dataset in sorted(used):
        footprint = getattr(importlib.import_module(f"hdml.data.datasets.{dataset}"), "SIZE", None)
        if footprint is not None:  # digits ships with scikit-learn: nothing to download
            out.disk["downloads"] = out.disk.get("downloads", 0.0) + footprint.archive
            out.disk["extracted"] = out.disk.get("extracted", 0.0) + footprint.extracted
        if dataset in cached:
            images = sum(costs["images"][dataset].values())
            out.disk["caches"] = (out.disk.get("caches", 0.0)
                                  + images * get_dataset(dataset).channels * sizes[dataset] ** 2)
    return out


def duration(seconds: float) -> str:
    """Seconds in words at the precision a projection has."""
    if seconds < 3600:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} hours"


def describe(p: Projection) -> list[str]:
    """The projection in lines, for `hdml check-config`."""
    costs = load_costs()
    compute = [f"{p.hours(d):,.1f} {d.upper()}-hours" for d in ("gpu", "cpu") if p.seconds.get(d)]
    said = {"goal": "a goal, not measured"}
    steps = ", ".join(f"{b} {1000 * costs['step'][b]['seconds']:g} ms "
                      f"({said.get(costs['step'][b]['kind'], costs['step'][b]['kind'])})"
                      for b in sorted(p.backbones))
    lines = [f"{p.runs} runs, {p.trials} tuning trials, {p.jobs} Snakemake jobs, {p.steps:,} training steps",
             f"projected compute: {' + '.join(compute) or 'none'} (training jobs: steps, evaluations, start-up; "
             f"a step: {steps or 'none'}; hdml/resources/costs.yaml)"]
    if p.unprojected:
        lines.append(f"not projected: runs with backbone {', '.join(p.unprojected)} (no figures in costs.yaml)")
    parts = ", ".join(f"{k} {v / 1e9:,.1f}" for k, v in p.disk.items() if v)
    lines.append(f"projected disk: {p.disk_total() / 1e9:,.1f} GB ({parts}) + {p.checkpoint_bytes / 1e9:.2f} GB "
                 f"per training job running at once (checkpoints, deleted when it finishes)")
    return lines
