"""Collect finished runs into long tables for the report.

Outputs (all written atomically):
The untrained reference runs (hdml.core.reference) are filed as method `untrained`, variant `default`.
- `metrics.csv`: dataset,method,variant,seed,metric,value; last-checkpoint metrics as
  fractions, and the authors' test-selected ones (best test NMI over the curve) as
  `selected:<metric>`, so the two can never be confused; a run of fold models (hdml.eval.ensemble)
  adds the mean over its fold models as `separated:<metric>` (its `metrics` are concatenated).
- `curves.csv`: dataset,method,variant,seed,step,metric,value (metrics and train_* losses at
  every periodic evaluation).
- `runs.csv`: one row per run: the settings the report plots against (protocol, HDML's alpha
  and lambda0 as configured, empty when null), steps, and the step the test selection picked.
- `costs.csv` (with a benchmark folder): dataset,method,variant,seed,stage,seconds,
  max_rss_mb,cpu_seconds from Snakemake's benchmark TSVs, stage `train` or `evaluate`.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hdml.core import reference
from hdml.core.config import read_yaml
from hdml.core.io import write_with
from hdml.core.slug import check_slug

log = logging.getLogger("hdml.eval.aggregate")

KEYS = ["dataset", "method", "variant", "seed"]
METRICS_COLUMNS = [*KEYS, "metric", "value"]
CURVES_COLUMNS = [*KEYS, "step", "metric", "value"]
RUNS_COLUMNS = [*KEYS, "protocol", "alpha", "lambda0", "softmax", "recon", "steps", "selected_step", "selection",
                "selection_metric"]
COSTS_COLUMNS = [*KEYS, "stage", "seconds", "max_rss_mb", "cpu_seconds"]
STAGES = ("train", "evaluate")
# What each column of the long tables holds, checked by `read_long`: text (names are also file
# names, hdml.core.slug), integers or numbers; the columns of OPTIONAL may be empty.
TEXT = {"dataset", "method", "variant", "metric", "protocol", "selection", "selection_metric", "stage"}
INTEGER = {"seed", "step", "steps", "selected_step", "softmax", "recon"}
OPTIONAL = {"protocol", "alpha", "lambda0", "softmax", "recon", "steps", "selected_step", "selection_metric",
            "seconds", "max_rss_mb", "cpu_seconds", "value"}
CHOICES = {"selection": ("last", "val", "test"), "stage": STAGES}  # the values hdml.eval.selection and costs know


def run_key(run_dir: Path) -> dict[str, Any]:
    """(dataset, method, variant, seed) from a run directory .../D/M/V/seedN."""
    run_dir = Path(run_dir)
    seed_dir = run_dir.name
    if not (seed_dir.startswith("seed") and seed_dir[4:].isdigit()) or len(run_dir.parts) < 4:
        raise ValueError(f"{run_dir}: a run directory must be .../DATASET/METHOD/VARIANT/seedN")
    key = {"dataset": run_dir.parents[2].name, "method": run_dir.parents[1].name, "variant": run_dir.parent.name}
    for what, name in key.items():
        check_slug(name, what, run_dir)
    return {**key, "seed": int(seed_dir[4:])}


def read_long(path: Path, columns: list[str]) -> pd.DataFrame:
    """A long table of `aggregate` (metrics, curves, runs, costs), checked: its header, names
    that are safe file names, integers and numbers where they belong; a ValueError naming the
    file, row and column otherwise."""
    try:
        table = pd.read_csv(path, dtype={c: str for c in columns if c in TEXT}, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if list(table.columns) != columns:
        raise ValueError(f"{path}: header must be {','.join(columns)}; got {','.join(map(str, table.columns))}")
    for column in columns:
        where = table[column].isna()
        if column not in OPTIONAL and where.any():
            raise ValueError(f"{path}: row {int(where.to_numpy().argmax()) + 2}: {column} is empty")
        if column in TEXT:
            if column in ("dataset", "method", "variant"):
                for name in table[column].dropna().unique():
                    check_slug(name, column, path)
            if column in CHOICES and (bad := ~table[column].isin(CHOICES[column])).any():
                row = int(bad.to_numpy().argmax())
                raise ValueError(f"{path}: row {row + 2}: {column} = {table[column].iloc[row]!r} is not one of "
                                 f"{', '.join(CHOICES[column])}")
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() & ~where
        if column in INTEGER:
            bad |= numbers.notna() & (numbers != numbers.round())
        if bad.any():
            row = int(bad.to_numpy().argmax())
            kind = "an integer" if column in INTEGER else "a number"
            raise ValueError(f"{path}: row {row + 2}: {column} = {table[column].iloc[row]!r} is not {kind}")
        table[column] = numbers.astype("int64") if column in INTEGER and not numbers.isna().any() else numbers
    return table


def table_key(key: dict[str, Any]) -> dict[str, Any]:
    """The key a run's rows are filed under: an untrained reference run (.../D/M/untrained/seedN)
    as method `untrained`, variant `default` (hdml.core.reference), every other run as its directory says."""
    if key["variant"] == reference.VARIANT:
        return {**key, "method": reference.NAME, "variant": "default"}
    return key


def checked_metrics(values: Any, path: Path, section: str) -> dict[str, float]:
    """A {metric: fraction} section of evaluation.json, every value finite and in [0, 1]."""
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{path}: '{section}' must be a non-empty mapping of metric to value")
    out = {}
    for name, value in values.items():
        if section == "test_selected" and name == "step":
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"{path}: {section}.{name} = {value!r}; metrics must be fractions in [0, 1]")
        out[name] = float(value)
    return out


def read_run(run_dir: Path) -> tuple[list[dict], pd.DataFrame, dict]:
    """Metric rows, long curve and settings row of one run directory."""
    key = table_key(run_key(run_dir))
    path = run_dir / "evaluation.json"
    result = json.loads(path.read_text())
    if not isinstance(result, dict):
        raise ValueError(f"{path}: must be a JSON object, not {type(result).__name__}")
    for section in ("metrics", "test_selected"):
        if section not in result:
            raise ValueError(f"{path}: missing '{section}'")
    rows = [{**key, "metric": m, "value": v} for m, v in checked_metrics(result["metrics"], path, "metrics").items()]
    rows += [{**key, "metric": f"selected:{m}", "value": v}
             for m, v in checked_metrics(result["test_selected"], path, "test_selected").items()]
    if "separated" in result:  # a run of fold models (hdml.eval.ensemble): `metrics` are the concatenated ones
        rows += [{**key, "metric": f"separated:{m}", "value": v}
                 for m, v in checked_metrics(result["separated"], path, "separated").items()]
    curve = pd.read_csv(run_dir / "curve.csv")
    if "step" not in curve.columns:
        raise ValueError(f"{run_dir / 'curve.csv'}: no 'step' column")
    long = curve.melt(id_vars="step", var_name="metric", value_name="value").assign(**key)
    config = read_yaml(run_dir / "config.yaml")
    hdml = config.get("hdml") or {}
    reported = result.get("selection") or {}
    step = result["test_selected"].get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step)):
        raise ValueError(f"{path}: test_selected.step = {step!r} is not a step number")
    if not isinstance(hdml, dict) or not isinstance(reported, dict):
        raise ValueError(f"{run_dir}: config.yaml (and its `hdml` section) and evaluation.json's `selection` must be "
                         "mappings")
    settings = {**key, "protocol": config.get("protocol"), "alpha": hdml.get("alpha"),
                "lambda0": hdml.get("lambda0"), "steps": config.get("steps"),
                # HDML's loss switches (the ablation), 1 or 0; empty for a method without them
                **{k: None if hdml.get(k) is None else int(hdml[k]) for k in ("softmax", "recon")},
                "selected_step": step,
                # which checkpoint `metrics` are from (hdml.eval.selection; absent: the last)
                "selection": reported.get("mode", "last"), "selection_metric": reported.get("metric")}
    return rows, long[CURVES_COLUMNS], settings


def read_benchmark(path: Path) -> dict[str, float]:
    """Wall seconds (mean over repeats), peak RSS in MB and CPU seconds (max) of one TSV;
    NaN where Snakemake could not sample (`NA`, `-`, or an RSS of 0 for a job that ended
    before its first sample)."""
    table = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    missing = {"s", "max_rss"} - set(table.columns)
    if missing or table.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (needs rows and columns s, max_rss)")
    cpu = table["cpu_time"].max() if "cpu_time" in table.columns else math.nan
    rss = table["max_rss"].where(table["max_rss"] > 0)
    return {"seconds": float(table["s"].mean()), "max_rss_mb": float(rss.max()),
            "cpu_seconds": float(cpu)}


def collect_costs(keys: list[dict], benchmarks: Path) -> pd.DataFrame:
    """Each run's (`run_key`) benchmark records, filed under its `table_key`."""
    rows, missing = [], []
    for key in keys:
        for stage in STAGES:
            path = benchmarks / stage / key["dataset"] / key["method"] / key["variant"] / f"seed{key['seed']}.tsv"
            if path.exists():
                rows.append({**table_key(key), "stage": stage, **read_benchmark(path)})
            else:
                missing.append(path)
    if missing:
        log.warning("%d benchmark file(s) missing, left out of the costs (first: %s)", len(missing), missing[0])
    return pd.DataFrame(rows, columns=COSTS_COLUMNS)


def aggregate(run_dirs: list[Path], out_metrics: Path, out_curves: Path, out_runs: Path | None = None,
              benchmarks: Path | None = None, out_costs: Path | None = None) -> pd.DataFrame:
    """Write the long tables; returns the metrics table."""
    rows, curves, settings = [], [], []
    for run_dir in map(Path, run_dirs):
        r, c, s = read_run(run_dir)
        rows += r
        curves.append(c)
        settings.append(s)
    table = pd.DataFrame(rows, columns=METRICS_COLUMNS).sort_values([*KEYS, "metric"], kind="stable")
    duplicated = table.duplicated([*KEYS, "metric"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ValueError(f"run {first.dataset}/{first.method}/{first.variant}/seed{first.seed} given twice")
    write_with(out_metrics, lambda p: table.to_csv(p, index=False))
    curve_table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVES_COLUMNS)
    write_with(out_curves, lambda p: curve_table.to_csv(p, index=False))
    if out_runs is not None:
        runs = pd.DataFrame(settings, columns=RUNS_COLUMNS)
        write_with(out_runs, lambda p: runs.to_csv(p, index=False))
    if benchmarks is not None:
        if out_costs is None:
            raise ValueError("a benchmark folder needs an output path for the costs table")
        costs = collect_costs([run_key(Path(d)) for d in run_dirs], Path(benchmarks))
        write_with(out_costs, lambda p: costs.to_csv(p, index=False))
    return table
