"""Collect finished runs into long tables: `metrics.csv` (final metrics) and `curves.csv`."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hdml.io import write_with

KEYS = ["dataset", "method", "variant", "seed"]


def run_key(run_dir: Path) -> dict[str, object]:
    """(dataset, method, variant, seed) from a run directory .../D/M/V/seedN."""
    seed_dir = run_dir.name
    if not seed_dir.startswith("seed"):
        raise ValueError(f"{run_dir}: run directory must end in seedN")
    return {"dataset": run_dir.parents[2].name, "method": run_dir.parents[1].name,
            "variant": run_dir.parent.name, "seed": int(seed_dir[4:])}


def aggregate(run_dirs: list[Path], out_metrics: Path, out_curves: Path) -> pd.DataFrame:
    rows, curves = [], []
    for run_dir in map(Path, run_dirs):
        key = run_key(run_dir)
        result = json.loads((run_dir / "evaluation.json").read_text())
        rows += [{**key, "metric": m, "value": v} for m, v in result["metrics"].items()]
        rows += [{**key, "metric": f"selected:{m}", "value": v} for m, v in result["test_selected"].items()]
        curve = pd.read_csv(run_dir / "curve.csv")
        long = curve.melt(id_vars="step", var_name="metric", value_name="value")
        curves.append(long.assign(**key))
    table = pd.DataFrame(rows, columns=[*KEYS, "metric", "value"]).sort_values([*KEYS, "metric"])
    write_with(out_metrics, lambda p: table.to_csv(p, index=False))
    curve_table = pd.concat(curves)[[*KEYS, "step", "metric", "value"]] if curves else \
        pd.DataFrame(columns=[*KEYS, "step", "metric", "value"])
    write_with(out_curves, lambda p: curve_table.to_csv(p, index=False))
    return table
