"""The rows of the checked inputs a section reads, and how it orders them: methods in the paper's
row order, a method's paper values, per-seed values of one dataset and variant, the headline
metric, HDML's configured alpha. Shared by the section modules (hdml.report.sections)."""
from __future__ import annotations

import pandas as pd

from hdml.core import reference
from hdml.report.figures import Series
from hdml.report.names import base_loss, display, paper_alpha, paper_row
from hdml.report.table import metric_label, metric_order

SELECTED = "selected:"
CURVE_METRICS = ["nmi", "f1", "recall@1"]


def method_order(methods, paper: pd.DataFrame) -> list[str]:
    """The untrained reference first, the paper's row order (Contrastive ... HDML (N-pair)), then any
    other method by name."""
    known = list(dict.fromkeys(paper.method))
    return sorted(set(methods), key=lambda m: (m != reference.NAME,
                                                known.index(paper_row(m)) if paper_row(m) in known else len(known),
                                                display(m).lower()))


def paper_values(paper: pd.DataFrame, dataset: str, method: str) -> dict[str, float]:
    """{metric: %} of `method` in the paper's table for `dataset`; empty where it has none."""
    mine = paper[(paper.dataset == dataset) & (paper.method == paper_row(method))]
    return {r.metric: float(r.value) for r in mine.itertuples()}


def method_series(methods: list[str], paper: pd.DataFrame, dataset: str) -> list[Series]:
    """One panel per method: a method built on a base loss X (HDML (X), DAML (X)) beside X, and the
    paper's numbers where it has them."""
    out = []
    for m in methods:
        base = base_loss(m)
        out.append(Series(m, "default", display(m), display(base) if base in methods else None,
                          paper_values(paper, dataset, m)))
    return out


def curve_metrics(curves: pd.DataFrame) -> list[tuple[str, str]]:
    return [(m, metric_label(m)) for m in CURVE_METRICS if m in set(curves.metric)]


def seed_values(seeds: pd.DataFrame | None, dataset: str, variant: str,
                selected: bool = False) -> dict[tuple[str, str], pd.Series]:
    """{(method, metric): {seed: value}} of one dataset and variant (the test-selected metrics,
    their prefix removed, when `selected`); empty without per-seed values."""
    if seeds is None:
        return {}
    mine = seeds[(seeds.dataset == dataset) & (seeds.variant == variant)]
    mine = mine[mine.metric.str.startswith(SELECTED) == selected]
    return {(method, metric.removeprefix(SELECTED)): g.set_index("seed").value
            for (method, metric), g in mine.groupby(["method", "metric"])}


def headline(metrics) -> str:
    """The metric a section's sentence speaks of: Recall@1 where there is one, else the first."""
    return "recall@1" if "recall@1" in set(metrics) else metric_order(metrics)[0]


def default_alpha(runs: pd.DataFrame | None, dataset: str, method: str) -> float | None:
    """The alpha of the default variant: the configured value, else the paper's for the method."""
    if runs is not None:
        mine = runs[(runs.dataset == dataset) & (runs.method == method) & (runs.variant == "default")]
        values = mine.alpha.dropna().unique()
        if len(values) == 1:
            return float(values[0])
        if len(values) > 1:
            raise ValueError(f"runs table: {dataset}/{method}/default has several alphas {sorted(values)}")
    return paper_alpha(method)


def reference_series() -> Series:
    """The untrained network (hdml.core.reference) as a row of a variant table."""
    return Series(reference.NAME, "default", reference.DISPLAY)
