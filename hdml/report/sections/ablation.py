"""HDML without J_soft or J_recon against the full method (paper Figures 4-5)."""
from __future__ import annotations

import pandas as pd

from hdml.report.comparisons import variant_tests
from hdml.report.conclude import paragraph, verdict
from hdml.report.figures import CURVE_KEY, Series, curve_grid
from hdml.report.inputs import Inputs
from hdml.report.names import base_loss, dataset_title, display
from hdml.report.page import Report, note
from hdml.report.rows import CURVE_METRICS, SELECTED, curve_metrics, paper_values, reference_series
from hdml.report.sections import register_section
from hdml.report.settings import changing
from hdml.report.table import summary_table

# the HDML switch a variant turns off alone (runs.csv, hdml.report.settings) -> its label
ABLATIONS = {"softmax": "w/o softmax loss", "recon": "w/o reconstruction loss"}


def ablation_variants(runs: pd.DataFrame | None) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """{(dataset, method): [(variant, label), ...]}: the variants that turn one of ABLATIONS off alone."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for setting, label in ABLATIONS.items():
        for dataset, method, variant in sorted(changing(runs, setting)):
            found.setdefault((dataset, method), []).append((variant, label))
    return found


@register_section(order=30)
def ablation_section(rep: Report, data: Inputs) -> None:
    """Figures 4-5: the baseline, HDML, HDML without J_soft, HDML without J_recon."""
    summ, paper, curves = data.summ, data.paper, data.curves
    title = "Ablation: HDML without the softmax or reconstruction loss (paper Figures 4-5)"
    if data.runs is None:
        rep.section("ablation", title, note("No runs table (runs.csv) given: which variant turns a loss of HDML off "
                                            "is read from it."))
        return
    found = ablation_variants(data.runs)
    if not found:
        rep.section("ablation", title, note("No ablation runs (a variant that turns HDML's hdml.softmax or hdml.recon "
                                            "off, and nothing else) in these results."))
        return
    parts = []
    for dataset in data.datasets:
        for method in sorted(m for d, m in found if d == dataset):
            variants = found[dataset, method]
            base = base_loss(method)
            base_label = f"{display(base)} (baseline)" if base else None
            lines = [Series(base, "default", base_label, paper=paper_values(paper, dataset, base))] if base else []
            lines.append(Series(method, "default", display(method), base_label, paper_values(paper, dataset, method)))
            lines += [Series(method, v, f"{display(method)} {label}", base_label) for v, label in variants]
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
            tests = variant_tests(data.metrics, dataset, method, [v for v, _ in variants], sorted(set(last.metric)))
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
