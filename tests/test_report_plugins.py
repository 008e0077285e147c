"""The report is driven by the sections its modules register and reads every name it shows from
the plug-ins: a registered section builder appears on the page at its declared place, a loss's
`display_name` and a dataset's `title` and `report_order` reach the tables, HDML's default alpha
is the method's own, and a sweep is plotted at the value its runs were configured with, not at
one parsed from the variant's name."""
from __future__ import annotations

import html
import sys
from dataclasses import replace

import pandas as pd
import pytest

from baselines.ddml import DDMLLoss
from baselines.hdml import HDMLNPair
from baselines.semihard import SemiHardTripletLoss
from hdml.data import datasets
from hdml.eval.aggregate import RUNS_COLUMNS
from hdml.report import Inputs, Report, default_alpha, paper_table, register_section, render, results_table, sections
from hdml.report.names import dataset_sort
from hdml.report.page import note


def write_metrics(path, rows) -> None:
    pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"]).to_csv(path, index=False)


def test_a_registered_section_builder_adds_a_section(tmp_path, monkeypatch):
    sections.builders()  # the shipped ones register in the registry that stays
    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))
    seen: list[Inputs] = []

    @register_section(order=1000)
    def extra(rep: Report, data: Inputs) -> None:
        seen.append(data)
        rep.section("extra", "An extra section", note(f"{len(data.metrics)} metric rows"))

    write_metrics(tmp_path / "m.csv", [("digits", "npair", "default", 0, "nmi", 0.5),
                                       ("digits", "npair", "default", 0, "f1", 0.25)])
    page = render(tmp_path / "m.csv", tmp_path / "r").read_text()
    assert len(seen) == 1 and seen[0].datasets == ["digits"]
    assert '<section id="extra">\n<h2>An extra section</h2>\n<p class="missing">2 metric rows</p>' in page
    assert page.index('id="reality-check"') < page.index('id="extra"')  # its order is past the built-in ones'
    assert '<li><a href="#extra">An extra section</a></li>' in page
    page = render(tmp_path / "m.csv", tmp_path / "r2").read_text()  # built once per render
    assert len(seen) == 2
    monkeypatch.undo()
    assert 'id="extra"' not in render(tmp_path / "m.csv", tmp_path / "r3").read_text()


# The page order the sections declare (`order=`): what the report showed when they were a list.
PAGE_ORDER = ["dataset_sections", "fidelity_section", "ablation_section", "alpha_sweep_section",
              "lambda0_sweep_section", "tsne_section", "protocol_section", "synthetic_samples_section",
              "other_variants_section", "costs_section", "fair_protocol_section", "reality_check_section"]


def test_the_sections_keep_their_declared_page_order():
    assert [b.__name__ for b in sections.builders()] == PAGE_ORDER


SECTION_FILE = """
from hdml.report.names import dataset_sort
from hdml.report.page import note
from hdml.report.sections import register_section


@register_section(order=15)
def from_a_file(rep, data):
    rep.section("from-a-file", "From a file", note("one new file, no other edit"))
"""


def test_a_new_section_file_is_discovered(tmp_path, monkeypatch):
    """A module added to hdml/report/sections/ is on the page at its declared place, with no
    import line anywhere; a module that fails to import is an error naming its file."""
    sections.builders()  # the shipped ones, which stay
    monkeypatch.setattr(sections, "__path__", [*sections.__path__, str(tmp_path)])
    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))
    (tmp_path / "tiny_section.py").write_text(SECTION_FILE)
    write_metrics(tmp_path / "m.csv", [("digits", "npair", "default", 0, "nmi", 0.5)])
    try:
        page = render(tmp_path / "m.csv", tmp_path / "r").read_text()
        assert '<h2>From a file</h2>\n<p class="missing">one new file, no other edit</p>' in page
        assert page.index('id="dataset-digits"') < page.index('id="from-a-file"') < page.index('id="fidelity"')
        (tmp_path / "broken_section.py").write_text("raise RuntimeError('half-written section')\n")
        with pytest.raises(ImportError, match=r"broken_section\.py: report section module .*half-written section"):
            sections.builders()
    finally:
        for name in ("tiny_section", "broken_section"):
            sys.modules.pop(f"hdml.report.sections.{name}", None)


def test_two_sections_cannot_share_a_place(monkeypatch):
    sections.builders()
    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))

    def other(rep: Report, data: Inputs) -> None:
        rep.section("other", "Other", "")

    with pytest.raises(ValueError, match=r"order 10 is taken by hdml\.report\.sections\.datasets\.dataset_sections"):
        register_section(order=10)(other)


def test_datasets_take_the_place_their_plugins_declare(monkeypatch):
    """The report orders datasets by the plug-ins' `report_order` (the paper's tables first), not by
    a list of names; a name without a plug-in goes after the declared ones."""
    assert dataset_sort(["glyphs", "old-folder", "digits", "sop", "cub200", "cars196"]) == [
        "cub200", "cars196", "sop", "digits", "glyphs", "old-folder"]
    datasets.dataset_names()  # load the registry before changing it
    monkeypatch.setitem(datasets.DATASETS, "glyphs", replace(datasets.DATASETS["glyphs"], report_order=1))
    assert dataset_sort(["digits", "glyphs", "cub200"]) == ["glyphs", "cub200", "digits"]


def test_display_name_and_dataset_title_come_from_the_plugins(tmp_path, monkeypatch):
    monkeypatch.setattr(DDMLLoss, "display_name", "Deep DML (renamed)")
    datasets.dataset_names()  # load the registry before adding to it
    monkeypatch.setitem(datasets.DATASETS, "digits2",
                        replace(datasets.DATASETS["digits"], name="digits2", title="Digits, second copy"))
    write_metrics(tmp_path / "m.csv", [("digits2", "ddml", "default", 0, "nmi", 0.5),
                                       ("digits2", "npair", "default", 0, "nmi", 0.4)])
    page = render(tmp_path / "m.csv", tmp_path / "r").read_text()
    table = (tmp_path / "r/tables/digits2.md").read_text()
    assert "**Digits, second copy, last checkpoint**" in table
    # one seed each: no interval, so no best the seeds could support (no †)
    assert "| Deep DML (renamed) | 1 | 50.0 (n=1) |" in table and "| N-pair | 1 | 40.0 (n=1) |" in table
    assert "<h2>Digits, second copy</h2>" in page and "DDML" not in table
    # the banner follows the plug-in's `demo` flag (copied from digits), not the dataset's name
    assert 'id="demo-banner"' in page and "Digits, second copy is a demo dataset" in page
    monkeypatch.setitem(datasets.DATASETS, "digits2", replace(datasets.DATASETS["digits2"], demo=False))
    assert 'id="demo-banner"' not in render(tmp_path / "m.csv", tmp_path / "r4").read_text()


def test_a_method_without_display_name_shows_its_name(tmp_path):
    write_metrics(tmp_path / "m.csv", [("digits", "old-method", "default", 0, "nmi", 0.5)])
    render(tmp_path / "m.csv", tmp_path / "r")
    assert "| old-method | 1 | 50.0 (n=1) |" in (tmp_path / "r/tables/digits.md").read_text()


def test_default_alpha_is_the_methods_own(monkeypatch):
    assert default_alpha(None, "cub200", "hdml-npair") == HDMLNPair.default_alpha == 90.0
    monkeypatch.setattr(HDMLNPair, "default_alpha", 42.0)
    assert default_alpha(None, "cub200", "hdml-npair") == 42.0


def sweep_inputs(tmp_path, alpha: float):
    rows, runs = [], []
    for variant, a in (("default", None), ("alpha=30", alpha)):
        for seed in range(3):
            rows += [("digits", "hdml-npair", variant, seed, m, 0.5 + 0.01 * seed) for m in ("nmi", "recall@1")]
            runs.append(("digits", "hdml-npair", variant, seed, "code", a, None, 1, 1, 100, 50, "last",
                         "map@r"))
    write_metrics(tmp_path / "m.csv", rows)
    pd.DataFrame(runs, columns=RUNS_COLUMNS).to_csv(tmp_path / "runs.csv", index=False)


def test_sweep_values_come_from_the_run_configs(tmp_path):
    """30.0003 passes the name check (within rounding of 30) and is what the table shows."""
    sweep_inputs(tmp_path, 30.0003)
    page = html.unescape(render(tmp_path / "m.csv", tmp_path / "r", runs_csv=tmp_path / "runs.csv").read_text())
    assert '<td class="stub">30.0003</td>' in page and '<td class="stub">30</td>' not in page
    assert '<td class="stub">default (α = 90)</td>' in page  # HDMLNPair.default_alpha: alpha null in its runs
    without = html.unescape(render(tmp_path / "m.csv", tmp_path / "r2").read_text())
    assert ("No runs table (runs.csv) given: which variants sweep alpha, and at which value, comes from their runs' "
            "settings there.") in without


def test_a_sweep_variant_with_several_configured_values_is_an_error(tmp_path):
    sweep_inputs(tmp_path, 30.0)
    runs = pd.read_csv(tmp_path / "runs.csv")
    runs.loc[(runs.variant == "alpha=30") & (runs.seed == 2), "alpha"] = 30.0002
    runs.to_csv(tmp_path / "runs.csv", index=False)
    with pytest.raises(ValueError, match=r"runs table: digits/hdml-npair/alpha=30 ran with alpha \[30.0, 30.0002\]"):
        render(tmp_path / "m.csv", tmp_path / "r", runs_csv=tmp_path / "runs.csv")


def test_paper_name_puts_a_method_in_the_papers_row(monkeypatch):
    """A method the report names otherwise fills the paper's row by its `paper_name`."""
    monkeypatch.setattr(SemiHardTripletLoss, "display_name", "Semi-hard triplet")
    summ = pd.DataFrame([{"dataset": "cub200", "method": "semihard", "variant": "default", "metric": "nmi",
                          "mean": 0.5, "n": 3, "ci": 0.01}])
    rows = {r[0].text: r for r in results_table(summ, paper_table(), "cub200", selected=False).rows}
    assert "Semi-hard triplet" in rows and rows["Triplet hard"][2].text == "not run"
    monkeypatch.setattr(SemiHardTripletLoss, "paper_name", "Triplet hard", raising=False)
    rows = {r[0].text: r for r in results_table(summ, paper_table(), "cub200", selected=False).rows}
    assert "Semi-hard triplet" not in rows
    paper = paper_table()
    nmi = paper[(paper.dataset == "cub200") & (paper.method == "Triplet hard") & (paper.metric == "nmi")].value.iloc[0]
    assert [c.text for c in rows["Triplet hard"][1:5]] == ["3", "50.0 ± 1.0", f"{nmi:.1f}", f"{50 - nmi:+.1f}"]
