"""Report section "Synthetic hard samples, side by side": DAML's adversarial generator against
HDML's hardness-aware one on the same base loss (triplet, N-pair), under one backbone, batch
layout, seed set and protocol, so the difference is the generator's. Beside the table, the
generators' objectives over training (J_gen, and J_syn, the base loss on the synthetic tuples),
and the terms of DAML's J_gen (J_hard, J_reg, J_adv: the methods whose plug-in declares
`loss_figure = "generator"`) in a figure of their own.

The difference HDML − DAML of each metric's mean over seeds carries a Welch 95% interval built
from the summary's per-method intervals (se = ci / t_{0.975, n−1}, Welch–Satterthwaite degrees of
freedom). The two methods run on the same seeds, but seeds do not pair their batches (the
samplers draw differently), so the unpaired interval is the honest one. Below MIN_SEEDS seeds on
either side the difference is shown without an interval, marked with the seed counts.
"""
from __future__ import annotations

import html
import math
from typing import Protocol

import matplotlib.pyplot as plt
import pandas as pd
from scipy import stats

from hdml.core.io import write_text
from hdml.report.conclude import paragraph
from hdml.report.figures import Series, curve_grid, own_terms
from hdml.report.inputs import Inputs
from hdml.report.names import display, families
from hdml.report.page import Report
from hdml.report.sections import register_section
from hdml.report.stats import ALPHA, holm, holm_levels, shown
from hdml.report.table import metric_label, simple_table

GENERATOR_TERMS = [("j_gen", "J_gen (generator)"), ("j_syn", "J_syn (metric on synthetics)")]
TITLE = "Synthetic hard samples, side by side"
NOTE = ("HDML − DAML on the same base loss, last checkpoint, in points: mean over seeds ± Welch 95% interval "
        "(unpaired; from the per-method Student-t intervals), uncorrected. The verdict is Holm-corrected over the "
        "{m} tested differences: Holm's adjusted p-value and the Welch interval at the level Holm tests that "
        "difference at. DAML: adversarial hard-negative generator (baselines/daml.py); HDML: hardness-aware "
        "interpolation and label-preserving generator (baselines/hdml.py).")


class Section(Protocol):
    """What this section needs of the report being built (hdml.report.Report)."""

    out_dir: object

    def section(self, key: str, title: str, body: str) -> None: ...

    def figure(self, name: str, fig: plt.Figure, caption: str) -> str: ...


def welch(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """(b.mean − a.mean, its standard error, Welch–Satterthwaite degrees of freedom) from two
    summary rows (mean, ci, n); NaN error and df where either side has fewer than MIN_SEEDS seeds
    or no interval."""
    diff = b["mean"] - a["mean"]
    if not (shown(a["n"]) and shown(b["n"]) and math.isfinite(a["ci"]) and math.isfinite(b["ci"])):
        return diff, math.nan, math.nan
    va = (a["ci"] / stats.t.ppf(0.975, a["n"] - 1)) ** 2
    vb = (b["ci"] / stats.t.ppf(0.975, b["n"] - 1)) ** 2
    if va + vb == 0:
        return diff, 0.0, math.inf
    df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    return diff, math.sqrt(va + vb), df


def welch_diff(a: pd.Series, b: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """(b.mean − a.mean, half-width of its Welch interval at confidence `level`); NaN half-width
    where `welch` has no standard error."""
    diff, se, df = welch(a, b)
    if not math.isfinite(se):
        return diff, math.nan
    return diff, (float(stats.t.ppf(0.5 + level / 2, df) * se) if se > 0 else 0.0)


def welch_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided p-value of Welch's test of the difference; NaN where `welch` has no error."""
    diff, se, df = welch(a, b)
    if not math.isfinite(se):
        return math.nan
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * stats.t.sf(abs(diff) / se, df))


def pairs() -> dict[str, tuple[str, str]]:
    """{base loss: (DAML method, HDML method)} for every base loss both families build on (the
    plug-ins' `family` and `base`), in the HDML methods' registration order."""
    daml, hdml = families("DAML"), families("HDML")
    return {base: (daml[base], method) for base, method in hdml.items() if base in daml}


def synthetic_rows(summ: pd.DataFrame) -> list[list[str]]:
    """Dataset, base loss, metric, DAML, HDML, difference (± the raw Welch 95% interval), and
    whether it excludes 0 after Holm's correction over every row tested (its interval at the
    level Holm tests it at): one row per metric both methods have."""
    last = summ[(summ.variant == "default") & ~summ.metric.str.startswith("selected:")]
    found = []
    for dataset in sorted(last.dataset.unique()):
        here = last[last.dataset == dataset].set_index(["method", "metric"])
        for base, (daml, hdml) in pairs().items():
            for metric in [m for m in last.metric.unique() if (daml, m) in here.index and (hdml, m) in here.index]:
                found.append((dataset, base, metric, here.loc[(daml, metric)], here.loc[(hdml, metric)]))
    p = [welch_p(a, b) for *_, a, b in found]
    adjusted, levels = holm(p), holm_levels(p)
    rows = []
    for (dataset, base, metric, a, b), pa, level in zip(found, adjusted, levels, strict=True):
        diff, half = welch_diff(a, b)
        shown_diff = (f"{100 * diff:+.1f} ± {100 * half:.1f}" if math.isfinite(half)
                      else f"{100 * diff:+.1f} (n={int(a['n'])}, {int(b['n'])})")
        if math.isfinite(pa):
            wide = welch_diff(a, b, 1 - level)[1]
            verdict = (("yes: HDML better" if diff > 0 else "yes: DAML better") if pa < ALPHA else "no")
            verdict += f" (p = {pa:.3f}; ± {100 * wide:.1f} at {100 * (1 - level):.1f}%)"
        else:
            verdict = "not tested (fewer than 3 seeds)"
        rows.append([dataset, display(base), metric_label(metric), f"{100 * a['mean']:.1f}", f"{100 * b['mean']:.1f}",
                     shown_diff, verdict])
    return rows


def header(m: int) -> list[str]:
    return ["Dataset", "Base loss", "Metric", "DAML", "HDML", "Δ (HDML − DAML) ± raw 95%",
            f"excludes 0? (Holm, {m} comparisons)"]


def generator_figures(rep: Section, losses: pd.DataFrame | None) -> list[str]:
    """Per dataset, the generators' own objectives over training (losses.csv, smoothed as the
    report's other loss figures), one row per DAML/HDML method. Their J_gen are different
    objectives (DAML: hard + reg + adversarial; HDML: reconstruction + softmax), so each panel
    keeps its own scale; J_syn is the base loss on each method's synthetic tuples. Then the
    terms of DAML's J_gen, for the methods whose plug-in draws its terms here."""
    if losses is None:
        return []
    parts = []
    methods = [m for pair in pairs().values() for m in pair]
    mine = losses[(losses.variant == "default") & losses.method.isin(methods)]
    for dataset in sorted(mine.dataset.unique()):
        here = mine[mine.dataset == dataset]
        series = [Series(m, "default", display(m)) for m in methods if m in set(here.method)]
        terms = [t for t in GENERATOR_TERMS if t[0] in set(here.metric)]
        if series and terms:
            fig = curve_grid(here, series, terms, f"{dataset}: generator objectives, default variant", percent=False)
            parts.append(rep.figure(f"synthetic-losses_{dataset}", fig,
                                    f"Generator objective J_gen and metric loss on synthetics J_syn on {dataset}, one "
                                    "row per method (thick: mean over seeds; thin: each seed). DAML's generator starts "
                                    "after its warm-up (daml.warmup); before that its J_gen is computed, not trained."))
        own, declared = own_terms(here, [Series(m, "default", display(m)) for m in sorted(here.method.unique())],
                              "generator")
        daml_terms = [t for t in declared if t[0] not in dict(GENERATOR_TERMS)]
        if own and daml_terms:
            fig = curve_grid(here, own, daml_terms, f"{dataset}: DAML's generator terms, default variant",
                             percent=False)
            parts.append(rep.figure(f"synthetic-daml-terms_{dataset}", fig,
                                    f"The terms of DAML's J_gen = J_hard + λ1 J_reg + λ2 J_adv on {dataset}, one "
                                    "row per DAML method (thick: mean over seeds; thin: each seed): J_hard, the "
                                    "synthetic negative's distance to the anchor; J_reg, to the negative it came from; "
                                    "J_adv, the hinge that makes it harder than the positive (baselines/daml.py)."))
    return parts


def synthetic_section(rep: Section, summ: pd.DataFrame, losses: pd.DataFrame | None = None) -> None:
    """Add the section (and tables/synthetic.md) when the results hold a DAML/HDML pair; `losses`
    (hdml.report.read_losses) adds the generators' training curves."""
    rows = synthetic_rows(summ)
    if not rows:
        return
    m = sum(1 for r in rows if not r[-1].startswith("not tested"))
    table = simple_table("synthetic", "HDML − DAML on the same base loss", header(m), rows, stub=3,
                         note=NOTE.format(m=m))
    for row in table.rows:
        row[-1].bold = row[5].bold = row[-1].text.startswith("yes")
    write_text(rep.out_dir / "tables" / "synthetic.md", table.markdown())
    text = table.caption("html")
    body = f'<h3>{html.escape(table.title)}</h3>\n{table.html()}\n<p class="note">{html.escape(text)}</p>'
    rep.section("synthetic", TITLE, "\n".join([body, paragraph(conclusion(rows)), *generator_figures(rep, losses)]))


def conclusion(rows: list[list[str]]) -> str:
    """What the table supports, counted from its verdicts."""
    tested = [r for r in rows if not r[-1].startswith("not tested")]
    better = {who: sum(r[-1].startswith(f"yes: {who}") for r in tested) for who in ("HDML", "DAML")}
    if not tested:
        return "No difference between HDML and DAML is tested: fewer than 3 seeds on a side."
    if not any(better.values()):
        return (f"HDML's and DAML's generators are inside the seeds' noise of each other: 0 of {len(tested)} "
                "differences exclude 0 (Welch, Holm-corrected).")
    return (f"{better['HDML'] + better['DAML']} of {len(tested)} differences exclude 0 (Welch, Holm-corrected): "
            f"{better['HDML']} with HDML better, {better['DAML']} with DAML better.")


@register_section(order=80)
def synthetic_samples_section(rep: Report, data: Inputs) -> None:
    """DAML against HDML on the same base loss (`synthetic_section`), when both ran."""
    synthetic_section(rep, data.summ, data.losses)
