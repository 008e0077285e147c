"""Intervals over seeds: the Student-t 95% CI of a mean, and when one is worth showing.

With 2 seeds the t factor is 12.7 (one degree of freedom), so an interval from two close seeds
still spans tens of points and, clipped to 0-100, swamps a plot. The report therefore shows an
interval only from MIN_SEEDS seeds on; below that it shows the seeds themselves and says so.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 3


def ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval of the mean; NaN for fewer than two seeds."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def summary(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width and count of `value` per group (fractions, as given)."""
    g = long.groupby(by, sort=False)["value"]
    out = g.agg(mean="mean", n="count").reset_index()
    out["ci"] = g.apply(lambda v: ci95(v.to_numpy())).to_numpy()
    return out


def shown(n: int | float) -> bool:
    """Whether an interval over `n` seeds is drawn or printed."""
    return n >= MIN_SEEDS
