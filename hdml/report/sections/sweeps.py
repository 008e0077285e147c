"""The sweeps of HDML's pulling factor α (paper Figures 6-7) and of a fixed hardness λ0: the
last-checkpoint metrics against the value each variant's runs were configured with, and the
hardness they realised."""
from __future__ import annotations

import math

import pandas as pd

from hdml.core import reference
from hdml.report.comparisons import variant_tests
from hdml.report.conclude import paragraph, verdict
from hdml.report.figures import sweep_figure
from hdml.report.inputs import SWEEPS, Inputs
from hdml.report.names import dataset_title, display
from hdml.report.page import Report, note
from hdml.report.rows import SELECTED, default_alpha
from hdml.report.sections import register_section
from hdml.report.settings import DEFAULT, changing, of
from hdml.report.stats import MIN_SEEDS, ci95, shown
from hdml.report.table import Table, metric_label, metric_order, simple_table, summary_table

SWEEP_KEY = (f"Line: the mean over seeds; points: each seed; error bars: the 95% CI, drawn only from {MIN_SEEDS} "
             "seeds on (a legend entry says where there are fewer); the metrics sit side by side around each value.")


def sweep_panels(metrics) -> list[tuple[str, list[tuple[str, str]]]]:
    """Figures 6-7's two panels: clustering (NMI, F1) and retrieval (Recall@K)."""
    panels = [("Clustering", [(m, metric_label(m)) for m in ("nmi", "f1") if m in set(metrics)]),
              ("Retrieval", [(m, metric_label(m)) for m in metric_order(metrics) if m.startswith("recall@")])]
    return [(name, ms) for name, ms in panels if ms]


def configured_values(runs: pd.DataFrame, param: str, keys: pd.DataFrame) -> list[float]:
    """The value of `param` each (dataset, method, variant) row of `keys` ran with, from the runs
    table (the run configs), one per variant."""
    values = runs.groupby(["dataset", "method", "variant"])[param].agg(lambda v: sorted(set(v.dropna())))
    out = []
    for key in zip(keys.dataset, keys.method, keys.variant, strict=True):
        found = values.get(key, [])
        if len(found) != 1:
            raise ValueError(f"runs table: {'/'.join(key)} ran with {param} {found or 'unset'}; a sweep variant "
                             f"needs one configured {param}")
        out.append(float(found[0]))
    return out


def sweep_section(rep: Report, data: Inputs, param: str) -> None:
    """Figures 6-7 (alpha) and the fixed-lambda0 sweep: last-checkpoint metrics vs the value each
    variant's runs were configured with. Table rows follow that value, the default at its alpha
    (after all values for lambda0, whose default adapts)."""
    summ, metrics, runs = data.summ, data.metrics, data.runs
    title = ("Sweep of HDML's pulling factor α (paper Figures 6-7)" if param == "alpha"
             else "Sweep of a fixed hardness λ0, no adaptation (beyond the paper)")
    if runs is None:
        rep.section(f"sweep-{param}", title, note(f"No runs table (runs.csv) given: which variants sweep {param}, "
                                                  "and at which value, comes from their runs' settings there."))
        return
    points_of = changing(runs, param)
    last = ~summ.metric.str.startswith(SELECTED)
    swept = summ[of(summ, points_of) & last]
    if swept.empty:
        rep.section(f"sweep-{param}", title, note(f"No variant in these results changes {param} alone."))
        return
    swept = swept.assign(x=configured_values(runs, param, swept))
    seeds = metrics[of(metrics, points_of) & ~metrics.metric.str.startswith(SELECTED)]
    seeds = seeds.assign(x=configured_values(runs, param, seeds))
    parts = []
    if param == "alpha":
        parts.append("<p>α = 0 applies no hardness synthesis; the star is the default variant at its α, a point of "
                     "the line like the others. What α changes is the hardness λ0 the runs realise: the table of "
                     "realised λ0 (from losses.csv) follows each figure.</p>")
    else:
        parts.append("<p>The hollow diamond past the dotted divider is the default, adaptive λ = 1 − exp(−α / J_avg): "
                     "not a point of the sweep; the table of realised λ0 (from losses.csv) gives where it sits.</p>")
    for dataset in data.datasets:
        for method in swept[swept.dataset == dataset].method.unique():
            mine = (metrics.dataset == dataset) & (metrics.method == method) & ~metrics.metric.str.startswith(SELECTED)
            points = swept[(swept.dataset == dataset) & (swept.method == method)]
            default = summ[(summ.dataset == dataset) & (summ.method == method) & (summ.variant == DEFAULT) & last]
            x0 = default_alpha(runs, dataset, method) if param == "alpha" and len(default) else None
            label = (f"default (α = {x0:g})" if x0 is not None
                     else "default (adaptive)" if param == "lambda0" else "default")
            name = f"{dataset}-{method}"
            symbol = "α" if param == "alpha" else "λ0"
            fig = sweep_figure(seeds[(seeds.dataset == dataset) & (seeds.method == method)],
                               metrics[mine & (metrics.variant == DEFAULT)], sweep_panels(points.metric.unique()),
                               SWEEPS[param], x0, label.replace("α", symbol),
                               f"{dataset_title(dataset)}, {display(method)}: "
                               f"last checkpoint vs {SWEEPS[param]}")
            parts.append(rep.figure(f"sweep-{param}_{name}", fig,
                                    f"Last-checkpoint metrics of {display(method)} on {dataset} against "
                                    f"{SWEEPS[param]}. {SWEEP_KEY}"))
            rows = points.assign(setting=points.x.map(lambda v: f"{v:g}"))
            if len(default):
                rows = pd.concat([rows, default.assign(x=math.inf if x0 is None else x0, setting=label)])
            untrained = summ[(summ.dataset == dataset) & (summ.method == reference.NAME) & (summ.variant == DEFAULT)
                             & last]
            rows = pd.concat([untrained.assign(x=-math.inf, setting=reference.DISPLAY),
                              rows.sort_values("x", kind="stable")])
            parts.append(rep.table(summary_table(rows, f"sweep-{param}-{name}",
                                                 f"{display(method)} on {dataset_title(dataset)}: "
                                                 f"{SWEEPS[param]}", ["setting"], [symbol],
                                                 "Last checkpoint, mean ± 95% CI over seeds, in %; rows by "
                                                 f"{symbol}, after the untrained reference.")))
            if (realised := realised_lambda0(data.losses, dataset, method, points, default, label, x0)) is not None:
                parts.append(rep.table(realised))
            variants = sorted(points.variant.unique())
            tests = variant_tests(data.metrics, dataset, method, variants, sorted(set(points.metric)))
            parts.append(paragraph(verdict(
                f"On {dataset_title(dataset)}, each swept {symbol} of {display(method)} against the default "
                "(paired by seed, every metric of the table)", tests, "sweep value better", "sweep value worse",
                f"On {dataset_title(dataset)}, no swept {symbol} of {display(method)} differs from the default "
                "beyond the seeds' noise")))
    rep.section(f"sweep-{param}", title, "\n".join(parts))


def realised_lambda0(losses: pd.DataFrame | None, dataset: str, method: str, points: pd.DataFrame,
                     default: pd.DataFrame, default_label: str, default_x: float | None) -> Table | None:
    """The hardness λ0 each setting's runs realised (losses.csv, as HDML logs it each step): per
    setting the mean over its seeds of each run's mean λ0 over training, ± the 95% CI over seeds.
    What a sweep of α really varies is this; None where the losses hold no λ0."""
    if losses is None:
        return None
    mine = losses[(losses.dataset == dataset) & (losses.method == method) & (losses.metric == "lambda0")]
    settings = [(x, v, f"{x:g}") for v, x in points[["variant", "x"]].drop_duplicates().itertuples(index=False)]
    settings += [(math.inf if default_x is None else default_x, DEFAULT, default_label)] if len(default) else []
    rows = []
    for _, variant, setting in sorted(settings, key=lambda s: s[0]):  # by value, the default at its own
        per_run = mine[mine.variant == variant].groupby("seed").value.mean()
        if len(per_run):
            rows.append([setting, str(len(per_run)), fmt_value(per_run.mean(), ci95(per_run.to_numpy()), len(per_run))])
    if not rows:
        return None
    return simple_table(f"realised-lambda0-{dataset}-{method}", f"Realised hardness λ0 of {display(method)} on "
                        f"{dataset_title(dataset)}", ["setting", "seeds", "λ0 (mean over training)"], rows,
                        note="λ0 as logged at every step (losses.csv, smoothed as the loss figures), averaged over "
                             "each run's steps, then over seeds (± 95% CI from 3 seeds on). Settings that realise the "
                             "same λ0 are one hardness, whatever their α.")


def fmt_value(mean: float, ci: float, n: int) -> str:
    """A number that is not a percentage: '0.96 ± 0.01', or '0.96 (n=2)' below MIN_SEEDS seeds."""
    return f"{mean:.2f} ± {ci:.2f}" if shown(n) and math.isfinite(ci) else f"{mean:.2f} (n={n})"


@register_section(order=40)
def alpha_sweep_section(rep: Report, data: Inputs) -> None:
    sweep_section(rep, data, "alpha")


@register_section(order=50)
def lambda0_sweep_section(rep: Report, data: Inputs) -> None:
    sweep_section(rep, data, "lambda0")
