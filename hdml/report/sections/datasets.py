"""One section per dataset: Tables 1-3 (hdml.report.paper_tables), the learning curves, the
training losses and Recall@K against K."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from hdml.core import reference
from hdml.core.io import write_text
from hdml.report.conclude import paragraph
from hdml.report.figures import CURVE_KEY, SEEDS_KEY, curve_grid, loss_grid, own_terms, recall_grid
from hdml.report.inputs import LOSS_SMOOTH, Inputs
from hdml.report.names import PAPER_TABLE, dataset_title
from hdml.report.page import Report, note
from hdml.report.paper_tables import dataset_conclusion, results_table
from hdml.report.rows import CURVE_METRICS, curve_metrics, method_order, method_series
from hdml.report.sections import register_section
from hdml.report.stats import MIN_SEEDS

POINTS_KEY = (f"Line: the mean over seeds; points: each seed; shaded: the 95% CI, drawn only from {MIN_SEEDS} "
              "seeds on.")
LOSS_SMOOTHING = f"each seed smoothed by a running mean over 1/{LOSS_SMOOTH} of its steps"


def recall_points(metrics: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per-seed last-checkpoint Recall@K of the default variant, with K as a number."""
    r = metrics[(metrics.dataset == dataset) & (metrics.variant == "default")
                & metrics.metric.str.fullmatch(r"recall@\d+")]
    return r.assign(k=r.metric.str.removeprefix("recall@").astype(int))


@register_section(order=10)
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
