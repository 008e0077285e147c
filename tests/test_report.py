"""The report on synthetic results (see test_aggregate.make_results): the paper's values and
ours - paper in the right cells, 'not run' rows, the paper's marks, the test-selected table kept
apart, every figure inlined, LaTeX tables of the right shape, missing sections as notes."""
from __future__ import annotations

import base64
import math
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_aggregate import aggregate_all, make_results
from threadpoolctl import threadpool_limits

from hdml.cli import main
from hdml.report import (check_variant_settings, ci95, default_alpha, paper_table, pick_embeddings, render,
                         results_table, summary, tex, tsne_figure)

PAPER_ROWS = ["Contrastive", "DDML", "Lifted", "Angular", "Triplet", "Triplet hard", "DAML (Triplet)",
              "HDML (Triplet)", "N-pair", "DAML (N-pair)", "HDML (N-pair)"]
FIGURES = {"curves_cub200", "curves_digits", "ablation_cub200-hdml-npair", "sweep-alpha_cub200-hdml-npair",
           "sweep-lambda0_cub200-hdml-npair", "tsne_cub200"}


class Page(HTMLParser):
    """Tables by id (flattened header 'NMI ours', rows of (text, classes)) and <img> sources."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.images: list[str] = []
        self.figure_ids: list[str] = []
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a["id"], {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"text": "", "classes": set((a.get("class") or "").split()),
                          "colspan": int(a.get("colspan", 1)), "rowspan": int(a.get("rowspan", 1)), "tag": tag}
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "figure":
            self.figure_ids.append(a["id"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            kind = "head" if self._row and self._row[0]["tag"] == "th" else "rows"
            self._table[kind].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def columns(table: dict) -> list[str]:
    """Flattened column names: 'Method', 'seeds', 'NMI ours', 'NMI paper', ..."""
    head = table["head"]
    if len(head) == 1:
        return [c["text"] for c in head[0]]
    names, subs = [], iter(head[1])
    for c in head[0]:
        if c["rowspan"] == 2:
            names.append(c["text"])
        else:
            names += [f"{c['text']} {next(subs)['text']}" for _ in range(c["colspan"])]
    return names


def grid(table: dict) -> dict[str, dict[str, dict]]:
    """{row label: {column name: cell}}."""
    cols = columns(table)
    return {row[0]["text"]: dict(zip(cols, row)) for row in table["rows"]}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("results")
    out = aggregate_all(root)
    embeddings = sorted(root.glob("runs/*/*/*/*/embeddings.npz"))
    with threadpool_limits(1):  # t-SNE's OpenMP threads on a shared machine
        page = render(out["metrics"], root / "report", out["curves"], out["runs"], out["costs"], embeddings)
    text = page.read_text()
    return {"root": root, "dir": root / "report", "html": text, "page": Page(text), **out}


def test_ci95_is_student_t_by_hand():
    # [0.5, 0.6, 0.7]: sd 0.1, se 0.1/sqrt(3); t(0.975, 2) = 4.302653 -> 0.248414
    assert ci95(np.array([0.5, 0.6, 0.7])) == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    lo, hi = stats.t.interval(0.95, 1, loc=0.3, scale=0.1)  # [0.2, 0.4]: se 0.1, one degree of freedom
    assert ci95(np.array([0.2, 0.4])) == pytest.approx((hi - lo) / 2) == pytest.approx(1.2706205, abs=1e-6)
    assert math.isnan(ci95(np.array([0.7])))


def test_summary_per_group(report):
    summ = summary(pd.read_csv(report["metrics"]), ["dataset", "method", "variant", "metric"]).set_index(
        ["dataset", "method", "variant", "metric"])
    row = summ.loc[("cub200", "npair", "default", "nmi")]
    assert row["mean"] == pytest.approx(0.51) and row["n"] == 3
    assert row["ci"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), abs=1e-6)


def test_table1_ours_paper_and_difference_in_their_cells(report):
    table = report["page"].tables["table-cub200"]
    cells = grid(table)
    assert [r[0]["text"] for r in table["rows"]] == PAPER_ROWS  # the paper's rows, in its order
    npair, hdml = cells["N-pair"], cells["HDML (N-pair)"]
    assert npair["seeds"]["text"] == "3"
    # N-pair NMI over seeds 0.50, 0.51, 0.52; the paper's 60.2
    assert (npair["NMI ours"]["text"], npair["NMI paper"]["text"], npair["NMI Δ"]["text"]) == ("51.0 ± 2.5", "60.2",
                                                                                             "-9.2")
    # R@1: 0.602, 0.612, 0.622 vs 51.9
    assert (npair["R@1 ours"]["text"], npair["R@1 paper"]["text"], npair["R@1 Δ"]["text"]) == ("61.2 ± 2.5", "51.9",
                                                                                             "+9.3")
    assert (hdml["R@8 ours"]["text"], hdml["R@8 paper"]["text"], hdml["R@8 Δ"]["text"]) == ("56.5 ± 2.5", "85.7",
                                                                                          "-29.2")
    # Beyond the paper: ours only
    assert npair["MAP@R ours"]["text"] == "51.6 ± 2.5" and npair["R-Prec ours"]["text"] == "51.7 ± 2.5"
    assert "MAP@R paper" not in npair
    md = (report["dir"] / "tables/cub200.md").read_text()
    assert "| N-pair | 3 | 51.0 ± 2.5 | 60.2 | -9.2 | 51.1 ± 2.5 | 28.2 | +22.9 |" in md


def test_methods_not_run_show_the_paper(report):
    cells = grid(report["page"].tables["table-cub200"])
    ddml = cells["DDML"]
    assert ddml["seeds"]["text"] == "—"
    assert ddml["NMI ours"]["text"] == ddml["R@8 ours"]["text"] == ddml["MAP@R ours"]["text"] == "not run"
    assert (ddml["NMI paper"]["text"], ddml["F1 paper"]["text"], ddml["R@8 paper"]["text"]) == ("47.3", "13.1", "67.1")
    assert ddml["NMI Δ"]["text"] == ""
    assert cells["HDML (Triplet)"]["R@1 paper"]["text"] == "43.6"


def test_paper_marks_best_red_and_hdml_bold(report):
    cells = grid(report["page"].tables["table-cub200"])
    best_paper_nmi = [label for label, row in cells.items() if "best" in row["NMI paper"]["classes"]]
    assert best_paper_nmi == ["HDML (N-pair)"]  # 62.6
    bold_paper_nmi = {label for label, row in cells.items() if "bold" in row["NMI paper"]["classes"]}
    assert bold_paper_nmi == {"HDML (N-pair)", "HDML (Triplet)"}  # 62.6 > 60.2, 55.1 > 49.8
    # Ours follow our numbers: N-pair has the best R@1, so HDML is neither red nor bold there.
    assert [lab for lab, row in cells.items() if "best" in row["R@1 ours"]["classes"]] == ["N-pair"]
    assert not {"best", "bold"} & cells["HDML (N-pair)"]["R@1 ours"]["classes"]
    assert {"best", "bold"} <= cells["HDML (N-pair)"]["NMI ours"]["classes"]
    # SOP: DAML (N-pair) has the best NMI (89.4); HDML (N-pair) 89.3 is bold (> N-pair 87.9), not red.
    summ = pd.DataFrame([{"dataset": "sop", "method": "npair", "variant": "default", "metric": "nmi",
                          "mean": 0.8, "n": 1, "ci": math.nan}])
    sop = results_table(summ, paper_table(), "sop", selected=False)
    col = sop.flat_header().index("NMI paper")
    marks = {row[0].text: (row[col].best, row[col].bold) for row in sop.rows}
    assert marks["DAML (N-pair)"] == (True, False) and marks["HDML (N-pair)"] == (False, True)
    assert marks["N-pair"] == (False, False)
    assert r"\textcolor{red}{\textbf{62.6}}" in (report["dir"] / "tables/cub200.tex").read_text()


def test_test_selected_numbers_in_their_own_table(report):
    page = report["page"]
    last, chosen = grid(page.tables["table-cub200"]), grid(page.tables["table-cub200-selected"])
    assert last["N-pair"]["NMI ours"]["text"] == "51.0 ± 2.5"
    assert chosen["N-pair"]["NMI ours"]["text"] == "56.0 ± 2.5"  # selected = last + 0.05
    assert chosen["N-pair"]["NMI Δ"]["text"] == "-4.2"
    html = unescape(report["html"])
    heading = html.index("test-selected checkpoint (as the authors' code; optimistic)")
    assert html.index('id="table-cub200"') < heading < html.index('id="table-cub200-selected"')
    assert "optimistic" in (report["dir"] / "tables/cub200.md").read_text()


def test_digits_table_has_ours_only(report):
    table = report["page"].tables["table-digits"]
    assert columns(table) == ["Method", "seeds", "NMI", "F1", "R@1", "R@2", "R@4", "R@8", "MAP@R", "R-Prec"]
    assert [r[0]["text"] for r in table["rows"]] == ["Triplet", "N-pair"]
    assert grid(table)["N-pair"]["NMI"]["text"] == "50.5 ± 6.4"  # 0.50, 0.51; t(0.975, 1) = 12.706


def test_every_figure_written_and_inlined(report):
    pngs = {p.stem: p.read_bytes() for p in (report["dir"] / "figures").glob("*.png")}
    assert set(pngs) == FIGURES
    page = report["page"]
    assert sorted(page.figure_ids) == sorted(f"fig-{n}" for n in FIGURES)
    assert len(page.images) == len(FIGURES)
    inlined = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        inlined.append(base64.b64decode(src.split(",", 1)[1]))
    assert sorted(inlined) == sorted(pngs.values())
    assert not re.search(r"<(link|script)\b|src=\"(?!data:)", report["html"])  # nothing fetched


def latex_columns(line: str) -> int:
    cells = re.split(r"(?<!\\)&", line.removesuffix(r"\\").strip())
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


@pytest.mark.parametrize("dataset, width", [("cub200", 2 + 6 * 3 + 2), ("digits", 2 + 8)])
def test_latex_tables_shape(report, dataset, width):
    text = (report["dir"] / f"tables/{dataset}.tex").read_text()
    specs = re.findall(r"\\begin\{tabular\}\{([lr|]+)\}", text)
    assert len(specs) == text.count(r"\end{tabular}") == 2  # last checkpoint, test-selected
    assert all(len(s.replace("|", "")) == width for s in specs)
    body = [ln for ln in text.splitlines() if ln.endswith(r"\\")]
    assert len(body) == 2 * (len(PAPER_ROWS if dataset == "cub200" else ["Triplet", "N-pair"])
                             + (2 if dataset == "cub200" else 1))
    assert all(latex_columns(ln) == width for ln in body)
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 2
    assert "±" not in text and "Δ" not in text  # symbols become LaTeX macros


def test_tex_escapes():
    assert tex("a_b & 50% ± Δ") == r"a\_b \& 50\% $\pm$ $\Delta$"


def test_sweeps_ablation_protocol_costs(report):
    tables = report["page"].tables
    alpha = grid(tables["sweep-alpha-cub200-hdml-npair"])
    assert list(alpha) == ["0", "30", "180", "default (α = 90)"]
    assert alpha["30"]["NMI"]["text"] == "54.5 ± 6.4"  # 0.54, 0.55
    assert alpha["default (α = 90)"]["NMI"]["text"] == "56.0 ± 2.5"
    assert list(grid(tables["sweep-lambda0-cub200-hdml-npair"])) == ["0.2", "0.6", "default (adaptive)"]
    ablation = grid(tables["ablation-cub200-hdml-npair"])
    assert list(ablation) == ["N-pair (baseline)", "HDML (N-pair)", "HDML (N-pair) w/o softmax loss",
                              "HDML (N-pair) w/o reconstruction loss"]
    assert ablation["HDML (N-pair) w/o softmax loss"]["NMI"]["text"] == "35.5 ± 6.4"
    protocol = [r for r in tables["protocol"]["rows"] if r[2]["text"] == "NMI"]
    assert [c["text"] for c in protocol[0]] == ["cub200", "HDML (N-pair)", "NMI", "56.0 ± 2.5 (n=3)",
                                                "58.5 ± 6.4 (n=2)", "+2.5", "62.6"]
    costs = [[c["text"] for c in r] for r in tables["costs"]["rows"]]
    assert ["cub200", "N-pair", "default", "train", "3", "0:03:20", "0:05:00", "1100", "1200"] in costs
    assert ["cub200", "N-pair", "default", "evaluate", "3", "0:00:10", "0:00:10", "—", "—"] in costs
    assert [c["text"] for c in tables["variants"]["rows"][0]][:4] == ["cub200", "N-pair", "embedding=128", "1"]
    for name in ("protocol", "costs", "variants"):
        assert (report["dir"] / f"tables/{name}.md").exists()


def test_tsne_run_choice_and_subsample(report, tmp_path):
    runs = report["root"] / "runs"
    cub = runs / "cub200/hdml-npair/default/seed0/embeddings.npz"
    digits = runs / "digits/npair/default/seed0/embeddings.npz"
    later = runs / "cub200/hdml-npair/default/seed1/embeddings.npz"
    assert pick_embeddings([digits, later, cub]) == cub
    assert pick_embeddings([digits]) == digits and pick_embeddings([]) is None
    assert "96 test embeddings (12 classes) of CUB-200-2011: HDML (N-pair), default, seed 0" in report["html"]
    with threadpool_limits(1):
        png, caption = tsne_figure(cub, max_points=40)
    assert png.startswith(b"\x89PNG") and caption.startswith("Barnes-Hut t-SNE of 40 test embeddings")
    assert "random subsample" in caption


def test_default_alpha_configured_or_paper():
    runs = pd.DataFrame({"dataset": ["cub200"] * 2, "method": ["hdml-npair"] * 2, "variant": ["default"] * 2,
                         "alpha": [50.0, 50.0]})
    assert default_alpha(runs, "cub200", "hdml-npair") == 50.0
    assert default_alpha(runs.assign(alpha=np.nan), "cub200", "hdml-npair") == 90.0
    assert default_alpha(None, "cub200", "hdml-triplet") == 7.0
    assert default_alpha(None, "cub200", "npair") is None


def test_variant_names_must_match_run_settings(report):
    runs = pd.read_csv(report["runs"])
    check_variant_settings(runs, report["runs"])  # the synthetic runs are consistent
    bad = runs.copy()
    bad.loc[bad.variant == "alpha=30", "alpha"] = 40.0
    with pytest.raises(ValueError, match=r"hdml-npair/alpha=30/seed0 ran with alpha = 40.0; the variant name says 30"):
        check_variant_settings(bad, report["runs"])
    bad = runs.copy()
    bad.loc[bad.variant == "protocol=paper", "protocol"] = "code"
    with pytest.raises(ValueError, match="ran with protocol = code"):
        check_variant_settings(bad, report["runs"])


def test_sections_without_data_become_notes(tmp_path, capsys):
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame([{"dataset": "digits", "method": "npair", "variant": "default", "seed": 0, "metric": "nmi",
                   "value": 0.5}]).to_csv(metrics, index=False)
    assert main(["report", "--metrics", str(metrics), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r/report.html").read_text()
    for text in ("No ablation runs", "No alpha=&lt;value&gt; variants", "No lambda0=&lt;value&gt; variants",
                 "No test embeddings", "No protocol=paper variant", "No benchmark records",
                 "No learning curves", "No test-selected numbers"):
        assert text in html, text
    assert "<img" not in html and not any((tmp_path / "r/figures").iterdir())
    assert "| N-pair | 1 | 50.0 |" in (tmp_path / "r/tables/digits.md").read_text()
    assert capsys.readouterr().out.strip().endswith("report.html")


@pytest.mark.parametrize("rows, message", [
    ([("digits", "npair", "default", 0, "nmi", 62.6)], "nmi = 62.6; values must be fractions"),
    ([("cub200", "hdml-npair", "alpha=big", 0, "nmi", 0.5)], "variant 'alpha=big': alpha must be a number"),
])
def test_bad_metrics_named(tmp_path, capsys, rows, message):
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"]).to_csv(metrics, index=False)
    assert main(["report", "--metrics", str(metrics), "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("dataset,method,value\n")
    with pytest.raises(ValueError, match="bad.csv: header must be dataset,method,variant,seed,metric,value"):
        render(tmp_path / "bad.csv", tmp_path / "r")


def test_demo_results_from_aggregate_cli_render(tmp_path):
    """The files `hdml aggregate` writes are what `hdml report` reads."""
    runs = [r for r in make_results(tmp_path) if "digits" in str(r)]
    out = tmp_path / "res"
    assert main(["aggregate", *map(str, runs), "--out", str(out / "metrics.csv"), "--curves", str(out / "curves.csv"),
                 "--runs-table", str(out / "runs.csv"), "--benchmarks", str(tmp_path / "benchmarks"),
                 "--costs", str(out / "costs.csv")]) == 0
    assert main(["report", "--metrics", str(out / "metrics.csv"), "--curves", str(out / "curves.csv"),
                 "--runs", str(out / "runs.csv"), "--costs", str(out / "costs.csv"), "--out", str(tmp_path / "r")]) == 0
    page = Page((tmp_path / "r/report.html").read_text())
    assert {"table-digits", "table-digits-selected", "costs"} <= set(page.tables)
    assert Path(tmp_path / "r/figures/curves_digits.png").exists()
