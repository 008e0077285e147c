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

from hdml.io import write_text
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
    paper_alpha,
    paper_row,
)
from hdml.report.page import Report, note
from hdml.report.stats import MIN_SEEDS
from hdml.report.synthetic import synthetic_section
from hdml.report.table import (
    DASH,
    Cell,
    Table,
    fmt_diff,
    fmt_mean_ci,
    mark_column,
    metric_label,
    metric_order,
    simple_table,
    summary_table,
)
from hdml.tsne import TsneMap

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
    """The paper's row order (Contrastive ... HDML (N-pair)), then any other method by name."""
    known = list(dict.fromkeys(paper.method))
    return sorted(set(methods), key=lambda m: (known.index(paper_row(m)) if paper_row(m) in known else len(known),
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


def results_table(summ: pd.DataFrame, paper: pd.DataFrame, dataset: str, selected: bool) -> Table | None:
    """Tables 1-3: per method and metric, ours (mean ± CI), the paper's value and ours - paper.

    `selected` builds the same table from the test-selected checkpoint instead of the last.
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
    seeds = rows.groupby("method")["n"].max()
    ours_metrics = set(rows.metric)
    compared = metric_order(set(ref.metric) | {m for m in ours_metrics if m.startswith("recall@")}
                            | ({"nmi", "f1"} & ours_metrics)) if len(ref) else []
    extra = metric_order(ours_metrics - set(compared))
    paper_value = {(r.method, r.metric): float(r.value) for r in ref.itertuples()}
    known = list(dict.fromkeys(paper.method))
    labels = [lab for lab in known if lab in set(ref.method) or lab in labels_of]
    labels += sorted(set(labels_of) - set(labels), key=str.lower)

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
    rows_body = [[Cell(label), Cell(str(int(seeds[labels_of[label]])) if label in labels_of else DASH)]
                 for label in labels]
    for m in compared + extra:
        ours_cells, ours_vals, paper_cells, paper_vals, diff_cells = [], [], [], [], []
        for label in labels:
            hit = ours.get((label, m))
            ref_value = paper_value.get((label, m), math.nan)
            if label not in labels_of:
                ours_cells.append(Cell("not run", muted=True))
            else:
                ours_cells.append(Cell(fmt_mean_ci(hit.mean, hit.ci, hit.n) if hit else DASH))
            ours_vals.append(100 * hit.mean if hit else math.nan)
            paper_cells.append(Cell(f"{ref_value:.1f}" if np.isfinite(ref_value) else DASH))
            paper_vals.append(ref_value)
            diff_cells.append(Cell(fmt_diff(100 * hit.mean - ref_value) if hit and np.isfinite(ref_value) else "",
                                   muted=True))
        mark_column(ours_cells, ours_vals, labels)
        columns.append(ours_cells)
        if m in compared:
            mark_column(paper_cells, paper_vals, labels)
            columns += [paper_cells, diff_cells]
    body = [row + [cells[i] for cells in columns] for i, row in enumerate(rows_body)]
    table.rows = body
    what = "test-selected (best test NMI over the curve)" if selected else "last checkpoint"
    table.note = f"Ours: {what}, mean ± 95% CI (Student t) over seeds, in %. "
    if dataset in PAPER_TABLE:
        table.note += (f"Paper: Table {PAPER_TABLE[dataset]} of Zheng et al. 2019; Δ = ours − paper, in points; "
                       "'not run': a method of the paper this suite did not run. ")
        beyond = [label for label in labels_of if label not in set(ref.method)]
        if beyond:
            table.note += f"Paper {DASH}: beyond the paper, no published number ({', '.join(beyond)}). "
    else:
        table.note += "No published numbers for this dataset. "
    table.marks = True
    return table


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
            table = results_table(summ, paper, dataset, selected)
            if table is None:
                parts.append(note("No test-selected numbers in these results." if selected
                                  else "No runs of the default variant on this dataset."))
                continue
            parts.append(rep.table(table))
            md.append(table.markdown())
            tex_parts.append(table.latex())
        write_text(rep.out_dir / "tables" / f"{dataset}.md", "\n".join(md) if md else "No default-variant runs.\n")
        write_text(rep.out_dir / "tables" / f"{dataset}.tex",
                   "% Needs \\usepackage{xcolor}.\n" + "\n".join(tex_parts))
        name = dataset_title(dataset)
        mine = None if curves is None else curves[(curves.dataset == dataset) & (curves.variant == "default")]
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
                              for s in present])
            parts.append(rep.table(summary_table(last, f"ablation-{name}",
                                                 f"Ablation on {dataset_title(dataset)}: last checkpoint",
                                                 ["setting"], ["Setting"],
                                                 "Mean ± 95% CI over seeds, in %.")))
    rep.section("ablation", title, "\n".join(parts))


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
        parts.append("<p>α = 0 applies no hardness synthesis; the star is the default variant at its α.</p>")
    else:
        parts.append("<p>The dashed line is the default, adaptive λ = 1 − exp(−α / J_avg), its seeds and "
                     "interval at the right edge.</p>")
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
            parts.append(rep.table(summary_table(rows.sort_values("x", kind="stable"), f"sweep-{param}-{name}",
                                                 f"{display(method)} on {dataset_title(dataset)}: "
                                                 f"{SWEEPS[param]}", ["setting"], [symbol],
                                                 "Last checkpoint, mean ± 95% CI over seeds, in %; rows by "
                                                 f"{symbol}.")))
    rep.section(f"sweep-{param}", title, "\n".join(parts))


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
    rep.section("tsne", title, rep.figure(f"tsne_{chosen.key['dataset']}", fig, caption))


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
    table_section(rep, "fidelity", title, table)


def protocol_section(rep: Report, data: Inputs) -> None:
    """Where the authors' code and the paper's text disagree: both protocols, side by side."""
    summ, paper = data.summ, data.paper
    title = "Code protocol vs paper protocol"
    last = summ[~summ.metric.str.startswith(SELECTED)]
    alt = last[last.variant == PROTOCOL_VARIANT]
    if alt.empty:
        rep.section("protocol", title, note(f"No {PROTOCOL_VARIANT} variant in these results."))
        return
    rows = []
    for dataset in data.datasets:
        for method in alt[alt.dataset == dataset].method.unique():
            mine = last[(last.dataset == dataset) & (last.method == method)]
            code = {r.metric: r for r in mine[mine.variant == "default"].itertuples()}
            other = {r.metric: r for r in mine[mine.variant == PROTOCOL_VARIANT].itertuples()}
            for m in metric_order(set(code) | set(other)):
                c, o = code.get(m), other.get(m)
                ref = paper[(paper.dataset == dataset) & (paper.method == paper_row(method)) & (paper.metric == m)]
                rows.append([dataset, display(method), metric_label(m),
                             with_n(c) if c else "not run", with_n(o) if o else "not run",
                             fmt_diff(100 * (o.mean - c.mean)) if c and o else DASH,
                             f"{ref.value.iloc[0]:.1f}" if len(ref) else DASH])
    table = simple_table("protocol", "Code protocol (default) vs paper protocol, last checkpoint",
                         ["Dataset", "Method", "Metric", "code", "paper protocol", "Δ (paper − code)",
                          "paper reports"], rows, stub=3,
                         note="Mean ± 95% CI over seeds, in %; Δ in points. The protocols differ where the "
                              "authors' code and the paper disagree (HDML: J_avg, J_gen, learning rates, ...; DAML: "
                              "sums or means in J_gen, the generator's output layer, the metric's loss on real and "
                              "synthetic tuples): the fidelity ledger, hdml/fidelity.md, lists each difference and "
                              "which protocol follows which source.")
    table_section(rep, "protocol", title, table)


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
    table_section(rep, "variants", "Other variants", table)


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
    groups = costs.groupby(["dataset", "method", "variant", "stage"], sort=False)
    for (dataset, method, variant, stage), g in sorted(
            groups, key=lambda kv: (datasets.index(kv[0][0]), display(kv[0][1]), kv[0][2] != "default", kv[0][2],
                                    kv[0][3] != "train")):
        rows.append([dataset, display(method), variant, stage, str(len(g)), hms(g.seconds.mean()),
                     hms(g.seconds.max()), fmt_mb(g.max_rss_mb.mean()), fmt_mb(g.max_rss_mb.max())])
    total = costs.seconds.sum() / 3600
    table = simple_table("costs", "Cost per run (from Snakemake benchmarks)",
                         ["Dataset", "Method", "Variant", "Stage", "runs", "wall mean", "wall max",
                          "peak RSS mean (MB)", "peak RSS max (MB)"], rows, stub=4,
                         note=f"Wall time h:mm:ss per run; peak resident memory of the job's processes (host "
                              f"memory, not GPU memory). Total wall time of all these jobs: {total:.2f} h.")
    table_section(rep, "costs", title, table)


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
