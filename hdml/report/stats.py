"""Intervals over seeds and the multiple-comparison correction every marked difference goes through.

With 2 seeds the t factor is 12.7 (one degree of freedom), so an interval from two close seeds
still spans tens of points and, clipped to 0-100, swamps a plot. The report therefore shows an
interval only from MIN_SEEDS seeds on; below that it shows the seeds themselves and says so.

A table that marks several differences ("HDML beats its base" in every column, a gain per metric
and protocol) tests several hypotheses: at 95% each, one in twenty null differences would look
real. `holm` is the Holm-Bonferroni step-down correction (family-wise error at ALPHA), and
`holm_levels` gives each comparison the level its step tests it at, so that the interval printed
with a verdict excludes 0 exactly when the corrected verdict says so. `paired_tests` applies
both to per-seed differences (the paired Student-t test); an unpaired section computes its own
p-values and intervals (e.g. Welch's) and uses `holm_levels` the same way.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS = 3
ALPHA = 0.05  # family-wise error rate of each correction family


def ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval of the mean; NaN for fewer than two seeds."""
    return ci_half(values, 0.95)


def ci_half(values: np.ndarray, level: float) -> float:
    """Half-width of the Student-t interval of the mean at confidence `level`; NaN below two values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


def summary(long: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width and count of `value` per group (fractions, as given)."""
    g = long.groupby(by, sort=False)["value"]
    out = g.agg(mean="mean", n="count").reset_index()
    out["ci"] = g.apply(lambda v: ci95(v.to_numpy())).to_numpy()
    return out


def shown(n: int | float) -> bool:
    """Whether an interval over `n` seeds is drawn or printed."""
    return n >= MIN_SEEDS


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (as statsmodels' multipletests(method="holm")): sorted
    ascending, p_(k) * (m − k + 1), made non-decreasing, capped at 1. NaN p-values stay NaN and
    do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def holm_levels(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """The error level Holm's step-down tests each comparison at: alpha / (m − k + 1) for the k-th
    smallest p-value while the steps reject, and for every comparison after the first that is not
    rejected, the level of that step. An interval at confidence 1 − level excludes 0 exactly when
    Holm rejects (for a test whose p-value is < level iff its interval excludes 0, as the t test's).
    NaN where the p-value is NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    stopped = None
    for k, i in enumerate(order):
        level = alpha / (m - k) if stopped is None else stopped
        if stopped is None and p[i] > level:
            stopped = level
        out[i] = level
    return out


@dataclass(frozen=True)
class PairedTest:
    """One difference over paired seeds, as fractions: its mean, the raw 95% interval, the paired
    t test's p-value, Holm's adjusted p-value and the interval at the level Holm tests it at
    (`half_corrected`); NaN below MIN_SEEDS pairs, which are shown but not tested."""

    mean: float
    half: float
    n: int
    p: float = math.nan
    p_holm: float = math.nan
    level: float = math.nan  # Holm's error level for this comparison (confidence 1 − level)
    half_corrected: float = math.nan
    comparisons: int = 0  # m: how many comparisons the family corrects for
    alpha: float = ALPHA

    def excludes_zero(self) -> bool | None:
        """The corrected verdict: whether Holm rejects "no difference"; None where untested."""
        if not math.isfinite(self.p_holm):
            return None
        return bool(self.p_holm < self.alpha)

    def raw_excludes_zero(self) -> bool | None:
        """Whether the uncorrected 95% interval excludes 0 (shown beside the corrected verdict)."""
        if not (shown(self.n) and math.isfinite(self.half)):
            return None
        return bool(self.mean - self.half > 0 or self.mean + self.half < 0)


def paired_p(diffs: np.ndarray) -> float:
    """Two-sided p-value of the paired t test of `diffs` against 0; NaN below MIN_SEEDS values.
    Identical differences (no spread) give 0 unless they are all 0 (then 1)."""
    d = np.asarray(diffs, dtype=float)
    if not shown(len(d)):
        return math.nan
    if np.allclose(d, d[0], rtol=0, atol=1e-12):  # no spread (up to rounding): t is infinite or undefined
        return 1.0 if abs(d[0]) <= 1e-12 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def paired_tests(diffs: Sequence[np.ndarray], alpha: float = ALPHA) -> list[PairedTest]:
    """Each family member's paired test, Holm-corrected over the members with MIN_SEEDS pairs or more."""
    arrays = [np.asarray(d, dtype=float) for d in diffs]
    p = np.array([paired_p(d) for d in arrays])
    adjusted, levels = holm(p), holm_levels(p, alpha)
    m = int(np.isfinite(p).sum())
    out = []
    for d, pi, pa, lv in zip(arrays, p, adjusted, levels, strict=True):
        corrected = ci_half(d, 1 - lv) if math.isfinite(lv) else math.nan
        out.append(PairedTest(float(d.mean()) if len(d) else math.nan, ci95(d), len(d), float(pi), float(pa),
                              float(lv), corrected, m, alpha))
    return out


def paired_diffs(a: pd.Series, b: pd.Series) -> np.ndarray:
    """a − b over the seeds both {seed: value} series have, in seed order."""
    seeds = sorted(set(a.index) & set(b.index))
    return np.array([a[s] - b[s] for s in seeds], dtype=float)


def supported_best(values: dict[str, pd.Series]) -> str | None:
    """The row of highest mean among {row: {seed: value}}, when its paired difference with every
    other row is positive and excludes 0 after Holm's correction over those comparisons; else None
    (the seeds do not single out a best row)."""
    rows = {k: v for k, v in values.items() if len(v)}
    if len(rows) < 2:
        return None
    best = max(rows, key=lambda k: rows[k].mean())
    tests = paired_tests([paired_diffs(rows[best], rows[k]) for k in rows if k != best])
    return best if all(t.excludes_zero() and t.mean > 0 for t in tests) else None
