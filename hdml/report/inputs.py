"""The report's inputs, checked: the long tables of `hdml aggregate`, the runs' losses.csv, and the
paper's published numbers. A bad file is a ValueError naming it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from hdml.core import reference
from hdml.core.slug import check_slug
from hdml.eval.aggregate import COSTS_COLUMNS, CURVES_COLUMNS, METRICS_COLUMNS, RUNS_COLUMNS, read_long, run_key
from hdml.eval.tsne import TsneMap, read_map
from hdml.report.names import dataset_sort, loss_terms
from hdml.report.stats import summary


def paper_table() -> pd.DataFrame:
    """The paper's Tables 1-3 (dataset, method as the paper's row, metric, value in %)."""
    with resources.files("hdml").joinpath("resources/paper_tables.csv").open() as fh:
        return pd.read_csv(fh)


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A long table of `hdml aggregate`, its names (also file names: hdml.core.slug) and numbers checked."""
    return read_long(path, columns)


def read_metrics(path: Path) -> pd.DataFrame:
    table = read_table(path, METRICS_COLUMNS)
    bad = ~table.value.between(0, 1)
    if bad.any():
        r = table[bad].iloc[0]
        raise ValueError(f"{path}: {r.dataset}/{r.method}/{r.variant}/seed{r.seed} {r.metric} = {r.value}; "
                         f"values must be fractions in [0, 1]")
    table["variant"] = table.variant.astype(str)
    return table

# Swept run-config keys of HDML (runs.csv columns): a variant that changes one of them alone is a
# point of its sweep (hdml.report.settings), plotted at the value its runs were configured with.
# A variant named KEY=VALUE must have run with that value, so that its name on the page does not mislead.
SWEEPS = {"alpha": "α (pulling factor)", "lambda0": "λ0 (fixed hardness, no adaptation)"}


def variant_value(variant: str, param: str) -> float:
    text = variant.split("=", 1)[1]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"variant {variant!r}: {param} must be a number") from None


def check_variant_settings(runs: pd.DataFrame, source: Path) -> None:
    """A sweep or protocol variant's name must match what its runs were configured with: the
    figures plot the configured value, the tables and file names show the name."""
    for r in runs.itertuples():
        key, _, text = str(r.variant).partition("=")
        if key not in (*SWEEPS, "protocol"):
            continue
        got = getattr(r, key)
        same = str(got) == text if key == "protocol" else (pd.notna(got) and np.isclose(float(got),
                                                                                         variant_value(r.variant, key)))
        if not same:
            raise ValueError(f"{source}: {r.dataset}/{r.method}/{r.variant}/seed{r.seed} ran with {key} = {got}; "
                             f"the variant name says {text}")


LOSS_SMOOTH = 40  # a running mean over 1/40 of the steps: a readable line at 200 or 8,000 steps
LOSS_POINTS = 400  # per run, at most: keeps the SVGs small


def read_losses(paths: list[Path]) -> pd.DataFrame | None:
    """Losses per step of each run (long: dataset, method, variant, seed, step, metric, value),
    each smoothed by a running mean over 1/LOSS_SMOOTH of the run's steps: `j_m`, the metric loss
    (a baseline's `loss`), and the terms the run's method declares (`Method.loss_terms`)."""
    frames = []
    for path in map(Path, paths):
        key = run_key(path.parent)
        if key["variant"] == reference.VARIANT:  # the untrained reference never steps: no losses
            continue
        table = pd.read_csv(path)
        column = "j_m" if "j_m" in table.columns else "loss"
        if not {"step", column} <= set(table.columns) or table.empty:
            raise ValueError(f"{path}: needs rows and the columns step and loss (or j_m); "
                             f"got {','.join(map(str, table.columns))}")
        table = table.sort_values("step")
        terms = {column: "j_m", **{t: t for t in loss_terms(key["method"]) if t in table.columns}}
        smooth = table[list(terms)].rolling(max(1, round(len(table) / LOSS_SMOOTH)), min_periods=1).mean()
        smooth = smooth.rename(columns=terms).assign(step=table.step.to_numpy())
        smooth = smooth.iloc[::math.ceil(len(table) / LOSS_POINTS)]
        frames.append(smooth.melt(id_vars="step", var_name="metric", value_name="value").assign(**key))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["variant"] = out.variant.astype(str)
    return out


def read_tuning(paths: list[Path]) -> pd.DataFrame | None:
    """Each study's budget from its best.yaml (`hdml tune best`: dataset, method, trials) and its
    first trial's run config beside it (trial0/config.yaml: steps; NaN where it is gone)."""
    rows = []
    for path in map(Path, paths):
        best = yaml.safe_load(path.read_text()) or {}
        if not {"dataset", "method", "trials"} <= set(best):
            raise ValueError(f"{path}: needs dataset, method and trials; not a best.yaml of `hdml tune best`")
        trial = path.parent / "trial0" / "config.yaml"
        steps = (yaml.safe_load(trial.read_text()) or {}).get("steps", math.nan) if trial.exists() else math.nan
        rows.append({"dataset": best["dataset"], "method": best["method"], "trials": int(best["trials"]),
                     "steps": steps})
    return pd.DataFrame(rows, columns=["dataset", "method", "trials", "steps"]) if rows else None


@dataclass(frozen=True)
class Inputs:
    """Everything a section builder may draw on, read and checked once. `summ`: mean, CI and
    seed count per (dataset, method, variant, metric); `datasets` in the paper's order."""

    metrics: pd.DataFrame
    summ: pd.DataFrame
    paper: pd.DataFrame
    datasets: list[str]
    curves: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    costs: pd.DataFrame | None = None
    losses: pd.DataFrame | None = None
    tsne: tuple[TsneMap, ...] = ()
    tuning: pd.DataFrame | None = None  # dataset, method, trials, steps: each tuning study's budget


def load_inputs(metrics_csv: Path, curves_csv: Path | None = None, runs_csv: Path | None = None,
                costs_csv: Path | None = None, tsne: list[Path] | None = None,
                losses: list[Path] | None = None, tuning: list[Path] | None = None) -> Inputs:
    metrics = read_metrics(Path(metrics_csv))
    for variant in metrics.variant.unique():  # a sweep variant names a number, with or without runs.csv
        if (key := variant.partition("=")[0]) in SWEEPS:
            variant_value(variant, key)
    curves = read_table(Path(curves_csv), CURVES_COLUMNS) if curves_csv else None
    if curves is not None:
        curves["variant"] = curves.variant.astype(str)
    runs = read_table(Path(runs_csv), RUNS_COLUMNS) if runs_csv else None
    if runs is not None:
        runs["variant"] = runs.variant.astype(str)
        check_variant_settings(runs, Path(runs_csv))
    return Inputs(metrics=metrics, summ=summary(metrics, ["dataset", "method", "variant", "metric"]),
                  paper=paper_table(), datasets=dataset_sort(metrics.dataset), curves=curves, runs=runs,
                  costs=read_table(Path(costs_csv), COSTS_COLUMNS) if costs_csv else None,
                  losses=read_losses(losses or []), tsne=tuple(map(read_tsne, tsne or [])),
                  tuning=read_tuning(tuning or []))


def read_tsne(path: Path) -> TsneMap:
    """A t-SNE map whose run names are safe file names (hdml.core.slug): its figure is named after them."""
    found = read_map(Path(path))
    for key in ("dataset", "method", "variant"):
        check_slug(found.key[key], key, path)
    return found
