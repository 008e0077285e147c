"""The report's sections, each built by one function in SECTIONS, in page order.

A builder takes the page being built (`Report`) and the checked inputs (`Inputs`) and adds one
section, or a short note where the results hold nothing for it; it may also write its tables
under tables/. A new section is one function decorated with `register_section`. Ours are
last-checkpoint numbers, mean and Student-t 95% CI over seeds; the authors' test-selected
checkpoint has its own table, labelled as optimistic, never mixed into the main one.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from hdml.core import reference
from hdml.core.io import write_text
from hdml.eval.tsne import TsneMap
from hdml.report.conclude import paragraph, span, verdict
from hdml.report.figures import Series, curve_grid, loss_grid, own_terms, recall_grid, sweep_figure, tsne_figure
from hdml.report.inputs import LOSS_SMOOTH, SWEEPS, Inputs
from hdml.report.names import (
    DATASET_ORDER,
    PAPER_TABLE,
    TSNE_PAPER_ROW,
    base_loss,
    dataset_sort,
    dataset_title,
    display,
    family,
    paper_alpha,
    paper_row,
)
from hdml.report.page import Report, note
from hdml.report.stats import MIN_SEEDS, PairedTest, ci95, paired_diffs, paired_tests, shown, supported_best
from hdml.report.synthetic import synthetic_section
from hdml.report.table import (
    DASH,
    Cell,
    Table,
    fmt_diff,
    fmt_mean_ci,
    metric_label,
    metric_order,
    paper_marks,
    simple_table,
    summary_table,
)

SectionBuilder = Callable[[Report, Inputs], None]


def register_section(builder: SectionBuilder) -> SectionBuilder:
    """Decorator: add `builder` to the page, after the sections registered before it."""
    SECTIONS.append(builder)
    return builder


ABLATIONS = {"no-softmax": "w/o softmax loss", "no-recon": "w/o reconstruction loss"}
PROTOCOL_VARIANT = "protocol=paper"
CURVE_METRICS = ["nmi", "f1", "recall@1"]
SELECTED = "selected:"


SEEDS_KEY = (f"Thick line: the mean over seeds; thin lines: each seed; shaded: the 95% CI, drawn only from "
             f"{MIN_SEEDS} seeds on (a panel with fewer says so); grey: the other panels' means.")
CURVE_KEY = (f"{SEEDS_KEY} Dashed: an HDML method's base loss; dotted: the paper's value after its 8,000 steps, "
             "where it has one.")
POINTS_KEY = (f"Line: the mean over seeds; points: each seed; shaded: the 95% CI, drawn only from {MIN_SEEDS} "
              "seeds on.")
SWEEP_KEY = (f"Line: the mean over seeds; points: each seed; error bars: the 95% CI, drawn only from {MIN_SEEDS} "
             "seeds on (a legend entry says where there are fewer); the metrics sit side by side around each value.")
LOSS_SMOOTHING = f"each seed smoothed by a running mean over 1/{LOSS_SMOOTH} of its steps"


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


def recall_points(metrics: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per-seed last-checkpoint Recall@K of the default variant, with K as a number."""
    r = metrics[(metrics.dataset == dataset) & (metrics.variant == "default")
                & metrics.metric.str.fullmatch(r"recall@\d+")]
    return r.assign(k=r.metric.str.removeprefix("recall@").astype(int))


def results_table(summ: pd.DataFrame, paper: pd.DataFrame, dataset: str, selected: bool,
                  seeds: pd.DataFrame | None = None) -> Table | None:
    """Tables 1-3: per method and metric, ours (mean ± CI), the paper's value and ours - paper.

    `selected` builds the same table from the test-selected checkpoint instead of the last.
    `seeds` (metrics.csv, per seed) mark our columns on evidence: bold where HDML (X) is above X
    by a paired interval excluding 0 after Holm's correction over the table's comparisons, red
    where the seeds single out the column's best (stats.supported_best); without them, no marks.
    The table's `tests` keep HDML's comparisons for the section's sentence.
    """
    rows = summ[(summ.dataset == dataset) & (summ.variant == "default")]
    rows = rows[rows.metric.str.startswith(SELECTED) == selected]
    if rows.empty:
        return None
    rows = rows.assign(metric=rows.metric.str.removeprefix(SELECTED) if selected else rows.metric)
    ref = paper[paper.dataset == dataset]
    labels_of = {}
    for method in rows.method.unique():
        label = paper_row(method)
        if label in labels_of:
            raise ValueError(f"methods {labels_of[label]!r} and {method!r} both display as {label!r}")
        labels_of[label] = method
    ours = {(paper_row(r.method), r.metric): r for r in rows.itertuples()}
    n_seeds = rows.groupby("method")["n"].max()
    ours_metrics = set(rows.metric)
    compared = metric_order(set(ref.metric) | {m for m in ours_metrics if m.startswith("recall@")}
                            | ({"nmi", "f1"} & ours_metrics)) if len(ref) else []
    extra = metric_order(ours_metrics - set(compared))
    paper_value = {(r.method, r.metric): float(r.value) for r in ref.itertuples()}
    known = list(dict.fromkeys(paper.method))
    labels = [lab for lab in known if lab in set(ref.method) or lab in labels_of]
    labels += sorted(set(labels_of) - set(labels), key=str.lower)
    if display(reference.NAME) in labels_of:  # the untrained network first: what training adds is read against it
        labels.insert(0, labels.pop(labels.index(display(reference.NAME))))
    per_seed = seed_values(seeds, dataset, "default", selected)
    tests = hdml_tests(per_seed, {label: labels_of[label] for label in labels if label in labels_of},
                       compared + extra)

    if selected:
        title = f"{dataset_title(dataset)}: test-selected checkpoint (as the authors' code; optimistic)"
        key = f"table-{dataset}-selected"
    else:
        number = PAPER_TABLE.get(dataset)
        title = (f"Table {number}: " if number else "") + f"{dataset_title(dataset)}, last checkpoint"
        key = f"table-{dataset}"
    groups = [(metric_label(m), ["ours", "paper", "Δ"]) for m in compared]
    groups += [(metric_label(m), ["ours"] if compared else [""]) for m in extra]
    table = Table(key, title, ["Method", "seeds"], groups)
    columns: list[list[Cell]] = []
    rows_body = [[Cell(label, muted=labels_of.get(label) == reference.NAME),
                  Cell(str(int(n_seeds[labels_of[label]])) if label in labels_of else DASH)] for label in labels]
    for m in compared + extra:
        ours_cells, paper_cells, paper_vals, diff_cells = [], [], [], []
        for label in labels:
            hit = ours.get((label, m))
            ref_value = paper_value.get((label, m), math.nan)
            if label not in labels_of:
                ours_cells.append(Cell("not run", muted=True))
            else:
                ours_cells.append(Cell(fmt_mean_ci(hit.mean, hit.ci, hit.n) if hit else DASH))
            paper_cells.append(Cell(f"{ref_value:.1f}" if np.isfinite(ref_value) else DASH))
            paper_vals.append(ref_value)
            diff_cells.append(Cell(fmt_diff(100 * hit.mean - ref_value) if hit and np.isfinite(ref_value) else "",
                                   muted=True))
        best = supported_best({label: per_seed.get((labels_of[label], m), pd.Series(dtype=float))
                               for label in labels if label in labels_of})
        for label, cell in zip(labels, ours_cells, strict=True):
            cell.best = label == best
            test = tests.get((labels_of.get(label), m))
            cell.bold = bool(test is not None and test.excludes_zero() and test.mean > 0)
        columns.append(ours_cells)
        if m in compared:
            paper_marks(paper_cells, paper_vals, labels)
            columns += [paper_cells, diff_cells]
    body = [row + [cells[i] for cells in columns] for i, row in enumerate(rows_body)]
    table.rows = body
    table.tests = tests
    what = "test-selected (best test NMI over the curve)" if selected else "last checkpoint"
    table.note = f"Ours: {what}, mean ± 95% CI (Student t) over seeds, in %. "
    if display(reference.NAME) in labels_of:
        table.note += f"{reference.DISPLAY}: the network as initialised, not trained by any method. "
    if dataset in PAPER_TABLE:
        table.note += (f"Paper: Table {PAPER_TABLE[dataset]} of Zheng et al. 2019; Δ = ours − paper, in points; "
                       "'not run': a method of the paper this suite did not run. ")
        beyond = [label for label in labels_of if label not in set(ref.method) and label != reference.DISPLAY]
        if beyond:
            table.note += f"Paper {DASH}: beyond the paper, no published number ({', '.join(beyond)}). "
    else:
        table.note += "No published numbers for this dataset. "
    if seeds is None:
        table.note += "No per-seed values given: our columns carry no marks. "
    else:
        m = max((t.comparisons for t in tests.values()), default=0)
        table.note += (f"Bold in our columns: Holm-corrected over {m} comparisons of an HDML method with its base "
                       "loss (one per metric); red: over the column's comparisons of its best row with each other. ")
    table.marks = True
    return table


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


def hdml_tests(per_seed: dict[tuple[str, str], pd.Series], methods: dict[str, str],
               metrics: list[str]) -> dict[tuple[str, str], PairedTest]:
    """Each (method, metric) of a method with a base loss beside its base: the paired test of
    method − base, Holm-corrected over all of them (the family of one table)."""
    keys, diffs = [], []
    present = set(methods.values())
    for method in methods.values():
        base = base_loss(method)
        if base not in present or family(method) != "HDML":
            continue
        for m in metrics:
            if (method, m) in per_seed and (base, m) in per_seed:
                keys.append((method, m))
                diffs.append(paired_diffs(per_seed[method, m], per_seed[base, m]))
    return dict(zip(keys, paired_tests(diffs), strict=True))


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


def pick_tsne(maps: list[TsneMap]) -> TsneMap | None:
    """Figure 8's run among the maps given: HDML (N-pair), default, CUB first, lowest seed."""
    if not maps:
        return None

    def rank(m: TsneMap) -> tuple:
        k = m.key
        return (paper_row(k["method"]) != TSNE_PAPER_ROW, k["variant"] != "default",
                DATASET_ORDER.index(k["dataset"]) if k["dataset"] in DATASET_ORDER else 99, k["seed"],
                k["dataset"], k["method"], k["variant"])

    return min(maps, key=rank)


def dataset_sections(rep: Report, data: Inputs) -> None:
    """One section per dataset: Tables 1-3 (last and test-selected checkpoint), learning curves,
    training losses and Recall@K against K."""
    summ, metrics, paper, curves, losses = data.summ, data.metrics, data.paper, data.curves, data.losses
    for dataset in data.datasets:
        parts, md, tex_parts = [], [], []
        for selected in (False, True):
            table = results_table(summ, paper, dataset, selected, metrics)
            if table is None:
                parts.append(note("No test-selected numbers in these results." if selected
                                  else "No runs of the default variant on this dataset."))
                continue
            parts.append(rep.table(table))
            md.append(table.markdown())
            tex_parts.append(table.latex())
            if not selected:
                parts.append(paragraph(dataset_conclusion(metrics, dataset, table)))
        write_text(rep.out_dir / "tables" / f"{dataset}.md", "\n".join(md) if md else "No default-variant runs.\n")
        write_text(rep.out_dir / "tables" / f"{dataset}.tex",
                   "% Needs \\usepackage{xcolor}.\n" + "\n".join(tex_parts))
        name = dataset_title(dataset)
        mine = None if curves is None else curves[(curves.dataset == dataset) & (curves.variant == "default")
                                                  & (curves.method != reference.NAME)]  # no steps, no curve
        methods = method_order(metrics[(metrics.dataset == dataset) & (metrics.variant == "default")].method, paper)
        series = method_series(methods, paper, dataset)
        if mine is not None and len(mine) and set(CURVE_METRICS) & set(mine.metric):
            fig = curve_grid(mine, [s for s in series if s.method in set(mine.method)], curve_metrics(mine),
                             f"{name}: learning curves, default variant")
            parts.append(rep.figure(f"curves_{dataset}", fig, f"Learning curves on {dataset}, one row per method "
                                    f"(default variant). {CURVE_KEY}"))
        else:
            parts.append(note("No learning curves for this dataset in these results."))
        mine = None if losses is None else losses[(losses.dataset == dataset) & (losses.variant == "default")]
        if mine is not None and len(mine):
            j_m = mine[mine.metric == "j_m"]
            fig = loss_grid(j_m, [s for s in series if s.method in set(j_m.method)], "J_m",
                            f"{name}: training loss J_m, default variant")
            parts.append(rep.figure(f"losses_{dataset}", fig, f"Training loss on {dataset} (losses.csv), one panel "
                                    f"per method: the metric loss J_m with the weight penalty, {LOSS_SMOOTHING}. "
                                    "HDML's J_m is the same loss as its base method's (dashed), on real samples."))
            hdml, terms = own_terms(mine, series, "hdml")
            if hdml:
                fig = curve_grid(mine, hdml, terms, f"{name}: HDML's own losses, default variant", percent=False)
                parts.append(rep.figure(f"losses-hdml_{dataset}", fig, f"HDML's own terms on {dataset} "
                                        f"(losses.csv), one row per HDML method, {LOSS_SMOOTHING}: J_syn, the metric "
                                        "loss on the synthetic samples; J_gen, the generator's (J_recon and J_soft "
                                        "combined as the protocol says); J_cls, the classifier's; λ0, the hardness. "
                                        f"{SEEDS_KEY}"))
        else:
            parts.append(note("No training losses (losses.csv) for this dataset given to the report."))
        recall = recall_points(metrics, dataset)
        if len(recall):
            by_k = [replace(s, paper={int(m.split("@")[1]): v for m, v in s.paper.items() if m.startswith("recall@")})
                    for s in series if s.method in set(recall.method)]
            fig = recall_grid(recall, by_k, f"{name}: Recall@K against K, last checkpoint")
            paper_note = (f"Dotted: the paper's Table {PAPER_TABLE[dataset]}." if dataset in PAPER_TABLE
                          else "The paper has no numbers for this dataset.")
            parts.append(rep.figure(f"recall_{dataset}", fig, f"Recall@K against K on {dataset}, one panel per "
                                    f"method (last checkpoint, default variant). {POINTS_KEY} Grey: the other "
                                    f"panels' means. {paper_note}"))
        number = PAPER_TABLE.get(dataset)
        title = f"{dataset_title(dataset)}" + (f" (paper Table {number})" if number else "")
        rep.section(f"dataset-{dataset}", title, "\n".join(parts))


def headline(metrics) -> str:
    """The metric a section's sentence speaks of: Recall@1 where there is one, else the first."""
    return "recall@1" if "recall@1" in set(metrics) else metric_order(metrics)[0]


def reference_tests(per_seed: dict[tuple[str, str], pd.Series], metric: str) -> tuple[pd.Series | None,
                                                                                       list[PairedTest]]:
    """The untrained network's {seed: value} on `metric`, and each trained method's paired test
    against it (method − untrained), Holm-corrected over the methods."""
    ref = per_seed.get((reference.NAME, metric))
    if ref is None:
        return None, []
    others = [v for (method, m), v in sorted(per_seed.items()) if m == metric and method != reference.NAME]
    return ref, paired_tests([paired_diffs(v, ref) for v in others])


def dataset_conclusion(metrics: pd.DataFrame, dataset: str, table: Table) -> str:
    """What a dataset's table supports: what training adds over the untrained network on the
    headline metric, and HDML against its base losses."""
    per_seed = seed_values(metrics, dataset, "default")
    metric = headline({m for _, m in per_seed})
    label = metric_label(metric)
    ref, tests = reference_tests(per_seed, metric)
    sentences = []
    if ref is not None:
        shown_ref = fmt_mean_ci(ref.mean(), ci95(ref.to_numpy()), len(ref))
        sentences.append(verdict(f"Against the untrained network ({label} {shown_ref}), the trained methods' "
                                 f"{label}", tests, "above it", "below it",
                                 f"No trained method's {label} is above the untrained network's ({shown_ref}) "
                                 "beyond the seeds' noise"))
    if table.tests:
        sentences.append(verdict("HDML against its base loss", list(table.tests.values()), "HDML better",
                                 "HDML worse", "HDML's difference from its base loss is inside the seeds' noise"))
    return " ".join(sentences) or "No comparison with per-seed values in this table."


def ablation_section(rep: Report, data: Inputs) -> None:
    """Figures 4-5: the baseline, HDML, HDML without J_soft, HDML without J_recon."""
    summ, paper, curves = data.summ, data.paper, data.curves
    title = "Ablation: HDML without the softmax or reconstruction loss (paper Figures 4-5)"
    found = summ[summ.variant.isin(ABLATIONS)][["dataset", "method"]].drop_duplicates()
    if found.empty:
        rep.section("ablation", title, note("No ablation runs (variants no-softmax, no-recon) in these results."))
        return
    parts = []
    for dataset in data.datasets:
        for method in found[found.dataset == dataset].method:
            base = base_loss(method)
            base_label = f"{display(base)} (baseline)" if base else None
            lines = [Series(base, "default", base_label, paper=paper_values(paper, dataset, base))] if base else []
            lines.append(Series(method, "default", display(method), base_label, paper_values(paper, dataset, method)))
            lines += [Series(method, v, f"{display(method)} {label}", base_label) for v, label in ABLATIONS.items()]
            present = [s for s in lines if ((summ.dataset == dataset) & (summ.method == s.method)
                                            & (summ.variant == s.variant)).any()]
            name = f"{dataset}-{method}"
            mine = None if curves is None else curves[(curves.dataset == dataset)]
            if mine is not None and set(CURVE_METRICS) & set(mine.metric):
                fig = curve_grid(mine, present, curve_metrics(mine),
                                 f"{dataset_title(dataset)}: ablation of {display(method)}")
                parts.append(rep.figure(f"ablation_{name}", fig,
                                        f"Learning curves of the ablation on {dataset}, one row per setting: NMI and "
                                        f"F1 (clustering, Figure 4), Recall@1 (retrieval, Figure 5). {CURVE_KEY}"))
            else:
                parts.append(note(f"No learning curves for the ablation on {dataset}."))
            last = pd.concat([summ[(summ.dataset == dataset) & (summ.method == s.method) & (summ.variant == s.variant)
                                   & ~summ.metric.str.startswith(SELECTED)].assign(setting=s.label)
                              for s in [reference_series(), *present]])
            tests = variant_tests(data.metrics, dataset, method, list(ABLATIONS), sorted(set(last.metric)))
            parts.append(rep.table(summary_table(last, f"ablation-{name}",
                                                 f"Ablation on {dataset_title(dataset)}: last checkpoint",
                                                 ["setting"], ["Setting"],
                                                 "Mean ± 95% CI over seeds, in %.")))
            parts.append(paragraph(verdict(f"On {dataset_title(dataset)}, each ablated {display(method)} against the "
                                           "full one (paired by seed, every metric of the table)", tests,
                                           "ablation better", "ablation worse", f"On {dataset_title(dataset)}, "
                                           f"removing a loss of {display(method)} changes nothing beyond the "
                                           "seeds' noise")))
    rep.section("ablation", title, "\n".join(parts))


def reference_series() -> Series:
    """The untrained network (hdml.core.reference) as a row of a variant table."""
    return Series(reference.NAME, "default", reference.DISPLAY)


def variant_tests(metrics: pd.DataFrame, dataset: str, method: str, variants: list[str],
                  names: list[str]) -> list[PairedTest]:
    """Each variant of `method` against its default variant, per metric of `names`, paired by
    seed and Holm-corrected over all of them (one family per table)."""
    default = seed_values(metrics, dataset, "default")
    diffs = []
    for variant in variants:
        mine = seed_values(metrics, dataset, variant)
        diffs += [paired_diffs(mine[method, m], default[method, m]) for m in names
                  if (method, m) in mine and (method, m) in default]
    return paired_tests(diffs)


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
    prefix = f"{param}="
    title = ("Sweep of HDML's pulling factor α (paper Figures 6-7)" if param == "alpha"
             else "Sweep of a fixed hardness λ0, no adaptation (beyond the paper)")
    last = ~summ.metric.str.startswith(SELECTED)
    swept = summ[summ.variant.str.startswith(prefix) & last]
    if swept.empty:
        rep.section(f"sweep-{param}", title, note(f"No {prefix}<value> variants in these results."))
        return
    if runs is None:
        rep.section(f"sweep-{param}", title, note(f"No runs table (runs.csv) given: the {param} each "
                                                  f"{prefix}<value> variant ran with comes from it."))
        return
    swept = swept.assign(x=configured_values(runs, param, swept))
    seeds = metrics[metrics.variant.str.startswith(prefix) & ~metrics.metric.str.startswith(SELECTED)]
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
            default = summ[(summ.dataset == dataset) & (summ.method == method) & (summ.variant == "default") & last]
            x0 = default_alpha(runs, dataset, method) if param == "alpha" and len(default) else None
            label = (f"default (α = {x0:g})" if x0 is not None
                     else "default (adaptive)" if param == "lambda0" else "default")
            name = f"{dataset}-{method}"
            symbol = "α" if param == "alpha" else "λ0"
            fig = sweep_figure(seeds[(seeds.dataset == dataset) & (seeds.method == method)],
                               metrics[mine & (metrics.variant == "default")], sweep_panels(points.metric.unique()),
                               SWEEPS[param], x0, label.replace("α", symbol),
                               f"{dataset_title(dataset)}, {display(method)}: "
                               f"last checkpoint vs {SWEEPS[param]}")
            parts.append(rep.figure(f"sweep-{param}_{name}", fig,
                                    f"Last-checkpoint metrics of {display(method)} on {dataset} against "
                                    f"{SWEEPS[param]}. {SWEEP_KEY}"))
            rows = points.assign(setting=points.x.map(lambda v: f"{v:g}"))
            if len(default):
                rows = pd.concat([rows, default.assign(x=math.inf if x0 is None else x0, setting=label)])
            untrained = summ[(summ.dataset == dataset) & (summ.method == reference.NAME) & (summ.variant == "default")
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
    settings += [(math.inf if default_x is None else default_x, "default", default_label)] if len(default) else []
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


def alpha_sweep_section(rep: Report, data: Inputs) -> None:
    sweep_section(rep, data, "alpha")


def lambda0_sweep_section(rep: Report, data: Inputs) -> None:
    sweep_section(rep, data, "lambda0")


def tsne_section(rep: Report, data: Inputs) -> None:
    title = "t-SNE of the test embeddings (paper Figure 8)"
    chosen = pick_tsne(list(data.tsne))
    if chosen is None:
        rep.section("tsne", title, note("No t-SNE map of test embeddings (hdml tsne) given to the report."))
        return
    fig, caption = tsne_figure(chosen)
    classes = len(np.unique(chosen.labels))
    rep.section("tsne", title, rep.figure(f"tsne_{chosen.key['dataset']}", fig, caption) + paragraph(
        f"A picture of one run ({display(chosen.key['method'])}, seed {chosen.key.get('seed', DASH)}): "
        f"{len(chosen.xy)} of its {chosen.n_test} test embeddings, {classes} classes; it shows which classes "
        "the embedding keeps apart, and supports no comparison between methods."))


def with_n(r) -> str:
    """A summary row as '56.0 ± 2.5 (n=3)': this table has no seeds column."""
    text = fmt_mean_ci(r.mean, r.ci, r.n)
    return text if text.endswith(")") else f"{text} (n={r.n})"


def table_section(rep: Report, key: str, title: str, table: Table) -> None:
    """A section that is one table: the table on the page and as tables/KEY.md."""
    write_text(rep.out_dir / "tables" / f"{key}.md", table.markdown())
    rep.section(key, title, rep.table(table))


def fidelity_section(rep: Report, data: Inputs | None = None, ledger: Path | None = None) -> None:
    """The fidelity ledger's summary beside the result tables: what "reproduced" means here."""
    from hdml.fidelity import LEDGER, read_ledger
    from hdml.fidelity import proofs as ledger_proofs
    from hdml.fidelity import summary as ledger_summary

    title = "Fidelity to the authors' code"
    path = ledger or LEDGER
    if not path.exists():
        rep.section("fidelity", title, note(f"No fidelity ledger at {path}."))
        return
    ledger_rows = read_ledger(path)
    groups, executed = ledger_summary(ledger_rows), set(ledger_proofs(ledger_rows)["executed"])
    total = sum(len(v) for v in groups.values())
    rows = [[status, str(len(elements)), str(len(executed.intersection(elements))), "; ".join(elements) or DASH]
            for status, elements in groups.items()]
    table = simple_table("fidelity", f"Fidelity ledger: {total} elements (hdml/fidelity.md), {len(executed)} executed "
                                     f"beside the authors' code, {total - len(executed)} read",
                         ["Status", "Elements", "Executed", "Which"], rows,
                         note="match: computed as the authors' TensorFlow code (github.com/wzzheng/HDML) computes "
                              "it; documented difference: a deliberate departure, argued in the ledger; follows "
                              "paper: where paper and code disagree, the default takes the paper's value. Executed: "
                              "the authors' code was run beside the suite's and agreed (bench/authors*.py); the "
                              "others were established by reading it. Each row of the ledger cites the authors' "
                              "file and line and the test that pins it.")
    write_text(rep.out_dir / "tables" / "fidelity.md", table.markdown())
    counts = ", ".join(f"{len(elements)} {status}" for status, elements in groups.items())
    rep.section("fidelity", title, rep.table(table) + "\n" + paragraph(
        f"Of the ledger's {total} elements: {counts}; {len(executed)} of them executed beside the authors' code, "
        f"the others read; what differs from the authors' code is listed there, each with its test."))


def protocol_section(rep: Report, data: Inputs) -> None:
    """Where the authors' code and the paper's text disagree: both formula protocols side by side,
    the difference paired by seed with its interval, Holm-corrected over the table."""
    summ, paper, metrics = data.summ, data.paper, data.metrics
    title = "Code protocol vs paper protocol (the formulas)"
    last = summ[~summ.metric.str.startswith(SELECTED)]
    alt = last[last.variant == PROTOCOL_VARIANT]
    if alt.empty:
        rep.section("protocol", title, note(f"No {PROTOCOL_VARIANT} variant in these results."))
        return
    found = []
    for dataset in data.datasets:
        code_seeds, paper_seeds = seed_values(metrics, dataset, "default"), seed_values(metrics, dataset,
                                                                                        PROTOCOL_VARIANT)
        for method in alt[alt.dataset == dataset].method.unique():
            mine = last[(last.dataset == dataset) & (last.method == method)]
            code = {r.metric: r for r in mine[mine.variant == "default"].itertuples()}
            other = {r.metric: r for r in mine[mine.variant == PROTOCOL_VARIANT].itertuples()}
            for m in metric_order(set(code) | set(other)):
                pair = (paper_seeds.get((method, m)), code_seeds.get((method, m)))
                diffs = paired_diffs(*pair) if all(v is not None for v in pair) else np.array([])
                found.append((dataset, method, m, code.get(m), other.get(m), diffs))
    tests = paired_tests([f[5] for f in found])
    m_total = max((t.comparisons for t in tests), default=0)
    rows = []
    for (dataset, method, m, c, o, _), t in zip(found, tests, strict=True):
        ref = paper[(paper.dataset == dataset) & (paper.method == paper_row(method)) & (paper.metric == m)]
        untrained = last[(last.dataset == dataset) & (last.method == reference.NAME) & (last.variant == "default")
                         & (last.metric == m)]
        decided = t.excludes_zero()
        verdict_text = ("not tested (fewer than 3 paired seeds)" if decided is None else
                        ("yes: paper formulas " + ("better" if t.mean > 0 else "worse")) if decided else "no")
        rows.append([dataset, display(method), metric_label(m),
                     with_n(c) if c else "not run", with_n(o) if o else "not run",
                     fmt_paired(t) if t.n else DASH, verdict_text,
                     f"{ref.value.iloc[0]:.1f}" if len(ref) else DASH,
                     with_n(next(untrained.itertuples())) if len(untrained) else DASH])
    table = simple_table("protocol", "Code protocol (default) vs paper protocol, last checkpoint",
                         ["Dataset", "Method", "Metric", "code", "paper protocol", "Δ (paper − code) ± raw 95%",
                          f"excludes 0? (Holm, {m_total} comparisons)", "paper reports", "untrained (reference)"],
                         rows, stub=3,
                         note="Mean ± 95% CI over seeds, in %; Δ in points, paired by seed (the same seed starts "
                              "both runs from the same weights), its Student-t 95% interval uncorrected; the verdict "
                              f"is Holm-corrected over the table's {m_total} tested comparisons. The protocols differ "
                              "where the authors' code and the paper disagree (HDML: J_avg, J_gen, learning rates, "
                              "...; DAML: sums or means in J_gen, the generator's output layer, the metric's loss on "
                              "real and synthetic tuples): the fidelity ledger, hdml/fidelity.md, lists each "
                              "difference and which protocol follows which source. Untrained: the network before "
                              "metric learning, the same under both protocols.")
    for row in table.rows:
        row[5].bold = row[6].bold = row[6].text.startswith("yes")
    write_text(rep.out_dir / "tables" / "protocol.md", table.markdown())
    sentences = []
    for dataset in data.datasets:
        mine = [t for f, t in zip(found, tests, strict=True) if f[0] == dataset]
        head = [t for f, t in zip(found, tests, strict=True) if f[0] == dataset and f[2] == headline(
            {g[2] for g in found if g[0] == dataset})]
        if mine:
            label = metric_label(headline({g[2] for g in found if g[0] == dataset}))
            sentences.append(verdict(f"On {dataset_title(dataset)}, the paper's formulas against the code's "
                                     f"({label}: {span([t.mean for t in head])})", mine, "paper formulas better",
                                     "paper formulas worse", f"On {dataset_title(dataset)}, the paper's formulas "
                                     f"are inside the seeds' noise of the code's ({label}: "
                                     f"{span([t.mean for t in head])})"))
    rep.section("protocol", title, rep.table(table) + "\n" + paragraph(" ".join(sentences)))


def fmt_paired(t: PairedTest) -> str:
    """'−6.1 ± 2.0' in points; '−6.1 (n=2)' below MIN_SEEDS pairs."""
    if shown(t.n) and math.isfinite(t.half):
        return f"{100 * t.mean:+.1f} ± {100 * t.half:.1f}"
    return f"{100 * t.mean:+.1f} (n={t.n})"


def other_variants_section(rep: Report, data: Inputs) -> None:
    summ = data.summ
    known = summ.variant.isin(["default", PROTOCOL_VARIANT, *ABLATIONS]) | \
        summ.variant.str.startswith(tuple(f"{p}=" for p in SWEEPS))
    rest = summ[~known & ~summ.metric.str.startswith((SELECTED, "separated:"))]  # fold models: realitycheck.py
    if rest.empty:
        return
    rest = rest.assign(method=rest.method.map(display))
    table = summary_table(rest, "variants", "Other variants, last checkpoint", ["dataset", "method", "variant"],
                          ["Dataset", "Method", "Variant"], "Mean ± 95% CI over seeds, in %.")
    write_text(rep.out_dir / "tables" / "variants.md", table.markdown())
    count = rest.groupby(["dataset", "method", "variant"]).ngroups
    rep.section("variants", "Other variants", rep.table(table) + paragraph(
        f"{count} variant{'s' if count != 1 else ''} outside the sections above, each with its seeds' interval "
        "and no test against the default: these rows claim no difference."))


def hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return DASH
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def costs_section(rep: Report, data: Inputs) -> None:
    costs = data.costs
    title = "Costs: wall time and peak memory"
    if costs is None or costs.empty:
        rep.section("costs", title, note("No benchmark records in these results."))
        return
    rows = []
    datasets = dataset_sort(costs.dataset)
    rss = costs.max_rss_mb.where(costs.max_rss_mb >= MIN_RSS_MB)  # below: Snakemake sampled the shell only
    artefacts = int((costs.max_rss_mb < MIN_RSS_MB).sum())
    costs = costs.assign(max_rss_mb=rss)
    groups = costs.groupby(["dataset", "method", "variant", "stage"], sort=False)
    for (dataset, method, variant, stage), g in sorted(
            groups, key=lambda kv: (datasets.index(kv[0][0]), display(kv[0][1]), kv[0][2] != "default", kv[0][2],
                                    kv[0][3] != "train")):
        rows.append([dataset, display(method), variant, stage, str(len(g)), hms(g.seconds.mean()),
                     hms(g.seconds.max()), fmt_mb(g.max_rss_mb.mean()), fmt_mb(g.max_rss_mb.max())])
    total = costs.seconds.sum() / 3600
    dropped = (f" {artefacts} job(s) recorded a peak RSS under {MIN_RSS_MB} MB, less than a Python process that "
               "imports numpy holds: Snakemake's benchmark samples memory every few seconds and, for a job that "
               "ends sooner, saw only the shell that starts it. Those are shown as —, not measured."
               if artefacts else "")
    table = simple_table("costs", "Cost per run (from Snakemake benchmarks)",
                         ["Dataset", "Method", "Variant", "Stage", "runs", "wall mean", "wall max",
                          "peak RSS mean (MB)", "peak RSS max (MB)"], rows, stub=4,
                         note=f"Wall time h:mm:ss per run; peak resident memory of the job's processes (host "
                              f"memory, not GPU memory). Total wall time of all these jobs: {total:.2f} h.{dropped}")
    write_text(rep.out_dir / "tables" / "costs.md", table.markdown())
    by_stage = costs.groupby("stage").seconds.sum() / 3600
    train = costs[(costs.stage == "train") & (costs.method != reference.NAME)].groupby("method").seconds.mean()
    sentence = (f"The jobs here took {total:.2f} h of wall time in all ("
                + ", ".join(f"{stage} {h:.2f} h" for stage, h in by_stage.items()) + ")"
                + (f"; a training run took {hms(train.min())} ({display(train.idxmin())}) to {hms(train.max())} "
                   f"({display(train.idxmax())}) on average." if len(train) else "."))
    rep.section("costs", title, rep.table(table) + "\n" + paragraph(sentence))


MIN_RSS_MB = 20  # a Python job that imports numpy holds more; a smaller peak is a sampling artefact


def fmt_mb(x: float) -> str:
    return DASH if not np.isfinite(x) else f"{x:.0f}"


def synthetic_samples_section(rep: Report, data: Inputs) -> None:
    """DAML against HDML on the same base loss (hdml/report/synthetic.py), when both ran."""
    synthetic_section(rep, data.summ, data.losses)


# The page, in order; `register_section` appends to it.
SECTIONS: list[SectionBuilder] = [dataset_sections, fidelity_section, ablation_section, alpha_sweep_section,
                                  lambda0_sweep_section, tsne_section, protocol_section, synthetic_samples_section,
                                  other_variants_section,
                                  costs_section]
