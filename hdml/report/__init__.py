"""The report: the paper's Tables 1-3 beside ours, Figures 4-8 redrawn from our runs, costs.

`render` reads and checks the inputs once (`inputs`), runs every section builder of the
`sections` package in page order on them, and writes `report.html` (`page`): one self-contained
file, figures inlined as base64 PNG, each linked to its SVG copy. Tables are also written as
Markdown and LaTeX under `tables/` (`table`), figures as PNG and SVG under `figures/` (`figures`);
means and intervals over seeds come from `stats`, every name shown from the plug-ins (`names`). A
section without data in the results is replaced by a short note.
"""
from __future__ import annotations

from pathlib import Path

from hdml.report import sections
from hdml.report.figures import tsne_figure
from hdml.report.inputs import Inputs, check_variant_settings, load_inputs, paper_table, read_losses
from hdml.report.page import Report, write_page
from hdml.report.paper_tables import results_table
from hdml.report.rows import default_alpha, method_order, method_series
from hdml.report.sections import register_section
from hdml.report.sections.fidelity import fidelity_section
from hdml.report.sections.tsne import pick_tsne
from hdml.report.table import DASH, fmt_mean_ci, tex

__all__ = ["DASH", "Inputs", "Report", "check_variant_settings", "default_alpha", "fidelity_section", "fmt_mean_ci",
           "method_order", "method_series", "paper_table", "pick_tsne", "read_losses", "register_section", "render",
           "results_table", "sections", "tex", "tsne_figure"]


def render(metrics_csv: Path, out_dir: Path, curves_csv: Path | None = None, runs_csv: Path | None = None,
           costs_csv: Path | None = None, tsne: list[Path] | None = None,
           losses: list[Path] | None = None, tuning: list[Path] | None = None) -> Path:
    """Write report.html, tables/ and figures/ under `out_dir`; returns the HTML path. `losses`:
    the runs' losses.csv (in their run directories), for the training-loss figures; `tsne`: maps
    of `hdml tsne`, candidates for Figure 8; `tuning`: the studies' best.yaml (tuning budget)."""
    data = load_inputs(metrics_csv, curves_csv, runs_csv, costs_csv, tsne, losses, tuning)
    rep = Report(Path(out_dir))
    for sub in ("figures", "tables"):  # both exist even when empty: Snakemake directory() outputs
        (rep.out_dir / sub).mkdir(parents=True, exist_ok=True)
    for build in sections.builders():
        build(rep, data)
    return write_page(rep, data)
