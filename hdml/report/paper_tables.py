"""Tables 1-3: per dataset, our methods beside the paper's (last and test-selected checkpoint),
marked where the seeds support it, and the sentence that says what the table supports. Ours are
last-checkpoint numbers, mean and Student-t 95% CI over seeds; the authors' test-selected
checkpoint has its own table, labelled as optimistic, never mixed into the main one."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hdml.core import reference
from hdml.report.comparisons import hdml_tests, reference_tests
from hdml.report.conclude import verdict
from hdml.report.names import PAPER_TABLE, dataset_title, display, paper_row
from hdml.report.rows import SELECTED, headline, seed_values
from hdml.report.stats import ci95, supported_best
from hdml.report.table import DASH, Cell, Table, fmt_diff, fmt_mean_ci, metric_label, metric_order, paper_marks


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
