# Config validation (schema, then every run's own config) before any job, and the run plan.
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from hdml.core.config import ConfigError, build_run_config
from hdml.data.datasets import get_dataset
from hdml.workflow.plan import (
    fold_variant,
    schema_path,
    set_args,
    trial_overrides,
    tune_settings,
    tune_studies,
    validate_workflow_config,
)

# Jobs find the `hdml` installed beside the Python running Snakemake (`.venv/bin/snakemake`
# works without activating the environment). With `--sdm conda` the rule environment comes first,
# and its post-deploy script installs hdml from HDML_SOURCE, this checkout. `envvars` hands both
# to jobs on executors that do not inherit the environment.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["HDML_SOURCE"] = str(Path(workflow.basedir).resolve())


envvars:
    "PATH",
    "HDML_SOURCE",


# hdml's check first: one line per error (Snakemake's own validation dumps the whole schema).
try:
    RUNS = {(r.dataset, r.method, r.variant, str(r.seed)): r for r in validate_workflow_config(config)}
except ConfigError as exc:
    raise ValueError(f"invalid workflow config: {exc}") from None
# The schema shipped inside the hdml package (hdml/schemas), the only copy.
validate(config, str(schema_path()))

DATA = config["data_root"]
RESULTS = config["results_dir"]
REPORT = config["report_dir"]
RUN_DIR = f"{RESULTS}/runs/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}"
# The runs the report shows: fold models (hdml.eval.ensemble) only through the seed folder joining them.
RUN_DIRS = [f"{RESULTS}/runs/{r.path}" for r in RUNS.values() if r.part_of is None]
# Variants of final models per fold, whose seed folders the ensemble jobs write; "(?!)" matches nothing.
FOLDED = "|".join(re.escape(v) for v in sorted({r.variant for r in RUNS.values() if r.folds})) or "(?!)"


wildcard_constraints:
    dataset="[a-z0-9]+",
    method="[a-z0-9-]+",
    variant="[A-Za-z0-9_.=-]+",
    seed="[0-9]+",
    size="[0-9]+",
    trial="[0-9]+",
    fold="[0-9]+",


RESOURCE_DEFAULTS = {"threads": 1, "gpu": 0, "mem_mb": 2000, "runtime": 30}


def res(rule: str, key: str):
    """A rule's resource from the config's `resources` section, else `default`, else built-in."""
    table = config.get("resources", {})
    return table.get(rule, {}).get(key, table.get("default", {}).get(key, RESOURCE_DEFAULTS[key]))


def rule_resources(rule: str) -> dict:
    """A rule's `resources:` (everything but threads), as `res` reads them."""
    return {key: res(rule, key) for key in RESOURCE_DEFAULTS if key != "threads"}


# Every rule's software (`--sdm conda`); paths in rules are relative to their file.
HDML_ENV = "../envs/hdml.yaml"


def cache_size(dataset: str) -> int:
    """The image side a dataset's runs read (image.resize of its `train` section)."""
    overrides = config["datasets"][dataset].get("train", {})
    return build_run_config(get_dataset(dataset).run_defaults, overrides)["image"]["resize"]


def run_cache(wildcards) -> list[str]:
    """The image cache a run reads, when the run uses the dataset's image size."""
    run = RUNS[(wildcards.dataset, wildcards.method, wildcards.variant, wildcards.seed)]
    size = build_run_config(get_dataset(run.dataset).defaults_for(run.method), run.overrides)["image"]["resize"]
    if size != cache_size(run.dataset):
        return []
    return [f"{DATA}/{run.dataset}/cache-{size}/meta.json"]


def run_sets(wildcards) -> str:
    """`--set` arguments of one run, shell-quoted."""
    run = RUNS[(wildcards.dataset, wildcards.method, wildcards.variant, wildcards.seed)]
    return " ".join(f"--set {shlex.quote(s)}" for s in set_args(run.overrides))


def ensemble_parts(wildcards) -> list[str]:
    """The evaluated fold models a seed of a `folds` variant joins, fold 0 first."""
    run = RUNS[(wildcards.dataset, wildcards.method, wildcards.variant, wildcards.seed)]
    parts = [fold_variant(run.variant, f) for f in range(run.folds)]
    return [f"{RESULTS}/runs/{run.dataset}/{run.method}/{v}/seed{run.seed}/evaluation.json" for v in parts]


def benchmark_files() -> list[str]:
    """The benchmark records `hdml aggregate` reads: training and evaluation of each run the report
    shows (a seed of fold models: its ensemble job, recorded as its evaluation)."""
    shown = [r for r in RUNS.values() if r.part_of is None]
    return [
        f"{RESULTS}/benchmarks/{s}/{r.path}.tsv"
        for r in shown
        for s in ("train", "evaluate")
        if s == "evaluate" or not r.folds
    ]


def run_tuned(wildcards) -> list[str]:
    """The tuned settings a run of a `tuned: true` variant trains with (hdml.workflow.tune)."""
    run = RUNS[(wildcards.dataset, wildcards.method, wildcards.variant, wildcards.seed)]
    return [f"{RESULTS}/tune/{run.dataset}/{run.method}/best.yaml"] if run.tuned else []


TUNE = tune_settings(config)
# A trial's job, or with `tune.folds` K > 1 each of its K fold jobs (hdml.workflow.tune).
TRIAL_KEY = "trial{trial}" if TUNE["folds"] == 1 else "trial{trial}/fold{fold}"


def trial_records(w) -> list[str]:
    """Every fold record of the study's `tune.trials` trials."""
    keys = [TRIAL_KEY.format(trial=i, fold=f) for i in range(TUNE["trials"]) for f in range(TUNE["folds"])]
    return [f"{RESULTS}/tune/{w.dataset}/{w.method}/{k}/trial.json" for k in keys]


def trial_resources() -> dict:
    """Trials train like runs: the `tune` resources if given, else train's."""
    name = "tune" if "tune" in config.get("resources", {}) else "train"
    return {"threads": res(name, "threads"), **rule_resources(name)}


def trial_sets(wildcards) -> str:
    """`--set` arguments of a study's trials, shell-quoted."""
    return " ".join(
        f"--set {shlex.quote(s)}" for s in set_args(trial_overrides(config, wildcards.dataset, wildcards.method))
    )


def trial_cache(wildcards) -> list[str]:
    """The image cache the trials read, when they use the dataset's image size."""
    overrides = trial_overrides(config, wildcards.dataset, wildcards.method)
    size = build_run_config(get_dataset(wildcards.dataset).defaults_for(wildcards.method), overrides)["image"]["resize"]
    return [f"{DATA}/{wildcards.dataset}/cache-{size}/meta.json"] if size == cache_size(wildcards.dataset) else []


def end_summary() -> str:
    """The report's path, best method per dataset and the failed runs (see hdml.workflow.status)."""
    from hdml.workflow.status import grid_status, summary

    return summary(
        grid_status(Path(RESULTS), list(RUNS.values())),
        Path(RESULTS) / "metrics.csv",
        Path(REPORT) / "report.html",
    )


def prepare_args(wildcards) -> str:
    """What a dataset's prepared data is, from its `prepare` section: the archive's checksum, the
    validation folds and, with no checksum to pin it, a local archive. A change reruns `prepare`
    and every job downstream (a params rerun trigger)."""
    entry = config["datasets"][wildcards.dataset].get("prepare", {})
    args = []
    if "md5" in entry:
        args.append(f"--md5 {entry['md5']}")
    if "archive" in entry and "md5" not in entry:
        args.append(f"--archive {shlex.quote(entry['archive'])}")
    if "val_folds" in entry:
        args.append(f"--val-folds {entry['val_folds']}")
    return " ".join(args)


def download_args(wildcards, output) -> str:
    """Where a dataset's archive comes from: mirror URLs (a download is checked against `md5`, else
    the published checksum, so another mirror yields the same data) and a local archive that `md5`
    pins. Taking `output` makes this a derived param, which Snakemake does not count as a rerun
    trigger: a moved mirror must not retrain the grid (tests/test_workflow.py pins this). Cars196's
    Kaggle zip has no published checksum: give `md5` when switching to it."""
    entry = config["datasets"][wildcards.dataset].get("prepare", {})
    args = [f"--url {shlex.quote(u)}" for u in entry.get("urls", [])]
    if "archive" in entry and "md5" in entry:
        args.append(f"--archive {shlex.quote(entry['archive'])}")
    return " ".join(args)


def tsne_map() -> list[str]:
    """The t-SNE map (Figure 8) of the run the config's `tsne` names, if it names one."""
    t = config.get("tsne")
    if not t:
        return []
    seed = t.get("seed", min(config["seeds"]))
    return [f"{RESULTS}/tsne/{t['dataset']}/{t['method']}/default/seed{seed}.csv"]
