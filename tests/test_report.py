"""The report on synthetic results (see test_aggregate.make_results): the paper's values and
ours - paper in the right cells, 'not run' rows, the paper's marks, the test-selected table kept
apart, every figure inlined, LaTeX tables of the right shape, missing sections as notes."""
from __future__ import annotations

import base64
import math
import re
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats
from threadpoolctl import threadpool_limits

from hdml.cli import main
from hdml.eval.tsne import read_map, tsne_map
from hdml.report import (
    check_variant_settings,
    default_alpha,
    fmt_mean_ci,
    method_order,
    method_series,
    paper_table,
    pick_tsne,
    read_losses,
    render,
    results_table,
    tex,
    tsne_figure,
)
from hdml.report.figures import Series, curve_grid, encode, loss_grid, recall_grid, sweep_figure
from hdml.report.stats import ci95, summary
from test_aggregate import aggregate_all, make_results, write_embeddings
from test_tsne import write_maps

REFERENCE = "Network before metric learning (reference)"
PAPER_ROWS = ["Contrastive", "DDML", "Lifted", "Angular", "Triplet", "Triplet hard", "DAML (Triplet)",
              "HDML (Triplet)", "N-pair", "DAML (N-pair)", "HDML (N-pair)"]
FIGURES = {"curves_cub200", "curves_digits", "ablation_cub200-hdml-npair", "sweep-alpha_cub200-hdml-npair",
           "sweep-lambda0_cub200-hdml-npair", "tsne_cub200", "losses_cub200", "losses_digits", "recall_cub200",
           "recall_digits", "losses-hdml_cub200"}


class Page(HTMLParser):
    """Tables by id (flattened header 'NMI ours', rows of (text, classes)) and <img> sources."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.images: list[str] = []
        self.links: list[str] = []
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
        elif tag == "a":
            self.links.append(a["href"])
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
    return {row[0]["text"]: dict(zip(cols, row, strict=True)) for row in table["rows"]}


def write_losses(run: Path, steps: int = 100) -> Path:
    """losses.csv as the trainer writes it: `loss` for a baseline; HDML's also has j_m (its J_m)."""
    seed = int(run.name.removeprefix("seed"))
    step = np.arange(1, steps + 1)
    table = pd.DataFrame({"step": step, "loss": 2.0 / step + 0.01 * seed})
    if run.parents[1].name.startswith("hdml-"):
        table = table.assign(j_m=table.loss + 0.5, j_gen=1.0)
    table.to_csv(run / "losses.csv", index=False)
    return run / "losses.csv"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("results")
    out = aggregate_all(root)
    maps = write_maps(root)  # `hdml tsne`'s job: the report only draws them
    losses = [write_losses(r) for r in sorted(root.glob("runs/*/*/*/seed*"))]
    page = render(out["metrics"], root / "report", out["curves"], out["runs"], out["costs"], maps, losses)
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
    # the untrained network first (the reference every row is read against), then the paper's rows in its order
    assert [r[0]["text"] for r in table["rows"]] == [REFERENCE, *PAPER_ROWS]
    assert cells[REFERENCE]["NMI ours"]["text"] == "21.0 ± 2.5" and cells[REFERENCE]["NMI paper"]["text"] == "—"
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
    # 0.50, 0.51: two seeds, too few for an interval (t(0.975, 1) = 12.706 would give ± 6.4)
    assert grid(table)["N-pair"]["NMI"]["text"] == "50.5 (n=2)"
    assert "(n=k): the mean of k < 3 seeds, too few for a 95% interval" in unescape(report["html"])


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


def test_every_figure_also_as_svg_linked_from_the_page(report):
    svgs = sorted((report["dir"] / "figures").glob("*.svg"))
    assert {p.stem for p in svgs} == FIGURES
    for path in svgs:
        root = ElementTree.parse(path).getroot()  # well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg", path
        assert root.findall(".//{http://www.w3.org/2000/svg}path"), f"{path}: no vector paths"
    links = set(report["page"].links)
    for name in FIGURES:
        assert {f"figures/{name}.svg", f"figures/{name}.png"} <= links, name
        assert (report["dir"] / f"figures/{name}.svg").exists()  # the link resolves from report.html


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
    assert len(body) == 2 * (len([REFERENCE, *PAPER_ROWS] if dataset == "cub200" else ["Triplet", "N-pair"])
                             + (2 if dataset == "cub200" else 1))
    assert all(latex_columns(ln) == width for ln in body)
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 2
    assert "±" not in text and "Δ" not in text  # symbols become LaTeX macros


def test_tex_escapes():
    assert tex("a_b & 50% ± Δ") == r"a\_b \& 50\% $\pm$ $\Delta$"


def test_sweeps_ablation_protocol_costs(report):
    tables = report["page"].tables
    alpha = grid(tables["sweep-alpha-cub200-hdml-npair"])
    assert list(alpha) == [REFERENCE, "0", "30", "default (α = 90)", "180"]  # by value, the default at its alpha
    assert alpha["30"]["NMI"]["text"] == "54.5 (n=2)"  # 0.54, 0.55
    assert alpha["default (α = 90)"]["NMI"]["text"] == "56.0 ± 2.5"
    assert list(grid(tables["sweep-lambda0-cub200-hdml-npair"])) == [REFERENCE, "0.2", "0.6", "default (adaptive)"]
    ablation = grid(tables["ablation-cub200-hdml-npair"])
    assert list(ablation) == [REFERENCE, "N-pair (baseline)", "HDML (N-pair)", "HDML (N-pair) w/o softmax loss",
                              "HDML (N-pair) w/o reconstruction loss"]
    assert ablation["HDML (N-pair) w/o softmax loss"]["NMI"]["text"] == "35.5 (n=2)"
    protocol = [r for r in tables["protocol"]["rows"] if r[2]["text"] == "NMI"]
    # paired by seed: seeds 0 and 1, d = +.03 each: 2 pairs, no interval, not tested
    assert [c["text"] for c in protocol[0]] == ["cub200", "HDML (N-pair)", "NMI", "56.0 ± 2.5 (n=3)",
                                                "58.5 (n=2)", "+3.0 (n=2)", "not tested (fewer than 3 paired seeds)",
                                                "62.6", "21.0 ± 2.5 (n=3)"]
    costs = [[c["text"] for c in r] for r in tables["costs"]["rows"]]
    assert ["cub200", "N-pair", "default", "train", "3", "0:03:20", "0:05:00", "1100", "1200"] in costs
    assert ["cub200", "N-pair", "default", "evaluate", "3", "0:00:10", "0:00:10", "—", "—"] in costs
    assert [c["text"] for c in tables["variants"]["rows"][0]][:4] == ["cub200", "N-pair", "embedding=128", "1"]
    for name in ("protocol", "costs", "variants"):
        assert (report["dir"] / f"tables/{name}.md").exists()


def test_tsne_run_choice_and_subsample(report, tmp_path):
    maps = report["root"] / "tsne"
    cub = read_map(maps / "cub200/hdml-npair/default/seed0.csv")
    digits = read_map(maps / "digits/npair/default/seed0.csv")
    later = replace(cub, key={**cub.key, "seed": 1})
    assert pick_tsne([digits, later, cub]) is cub
    assert pick_tsne([digits]) is digits and pick_tsne([]) is None
    assert "96 test embeddings (12 classes) of CUB-200-2011: HDML (N-pair), default, seed 0" in report["html"]
    with threadpool_limits(1):
        fig, caption = tsne_figure(tsne_map(report["root"] / "runs/cub200/hdml-npair/default/seed0/embeddings.npz",
                                            max_points=40))
    assert encode(fig)["png"].startswith(b"\x89PNG") and caption.startswith("Barnes-Hut t-SNE of 40 test embeddings")
    assert "random subsample" in caption
    few = tmp_path / "digits/npair/default/seed0"
    few.mkdir(parents=True)
    write_embeddings(few, classes=5, per_class=8, seed=0)
    with threadpool_limits(1):
        fig, _ = tsne_figure(tsne_map(few / "embeddings.npz"))
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # the class key beside the map


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


def test_sections_find_their_variants_by_settings_not_names(report, tmp_path):
    """Renamed variants (config/*.yaml names them freely) land in the same sections with the same
    numbers: a section knows a sweep, protocol or ablation variant by what its runs change against
    the default (runs.csv), not by its name; with no such variant, the section says so."""
    names = {"protocol=paper": "formulas", "alpha=30": "pull-thirty", "lambda0=0.2": "hard-fixed",
             "no-softmax": "quiet-classifier", "no-recon": "free-generator"}
    renamed = {}
    for kind in ("metrics", "curves", "runs", "costs"):
        table = pd.read_csv(report[kind])
        renamed[kind] = tmp_path / f"{kind}.csv"
        table.assign(variant=table.variant.replace(names)).to_csv(renamed[kind], index=False)
    page = Page(render(renamed["metrics"], tmp_path / "r", renamed["curves"], renamed["runs"],
                       renamed["costs"]).read_text())
    before, after = report["page"].tables, page.tables
    for key in ("sweep-alpha-cub200-hdml-npair", "sweep-lambda0-cub200-hdml-npair", "protocol",
                "ablation-cub200-hdml-npair"):
        assert after[key]["rows"] == before[key]["rows"], key
    assert after["variants"]["rows"] == before["variants"]["rows"]  # none of them among the others
    runs = pd.read_csv(report["runs"])
    runs = runs[~runs.variant.isin(["protocol=paper", *(v for v in runs.variant if v.startswith("alpha="))])]
    runs.to_csv(tmp_path / "runs-less.csv", index=False)
    text = unescape(render(report["metrics"], tmp_path / "r2", runs_csv=tmp_path / "runs-less.csv").read_text())
    assert "No variant in these results changes alpha alone." in text
    assert "No variant in these results changes the protocol alone." in text


def test_sections_without_data_become_notes(tmp_path, capsys):
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame([{"dataset": "digits", "method": "npair", "variant": "default", "seed": 0, "metric": "nmi",
                   "value": 0.5}]).to_csv(metrics, index=False)
    assert main(["report", "--metrics", str(metrics), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r/report.html").read_text()
    for text in ("No runs table (runs.csv) given: which variant turns a loss of HDML off",
                 "No runs table (runs.csv) given: which variants sweep alpha",
                 "No runs table (runs.csv) given: which variants sweep lambda0",
                 "No t-SNE map of test embeddings", "No runs table (runs.csv) given: which variant runs the other "
                 "protocol", "No benchmark records",
                 "No learning curves", "No test-selected numbers", "No training losses"):
        assert text in html, text
    assert "<img" not in html and not any((tmp_path / "r/figures").iterdir())
    assert "| N-pair | 1 | 50.0 (n=1) |" in (tmp_path / "r/tables/digits.md").read_text()
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
    losses = [str(write_losses(r)) for r in runs]
    assert main(["report", "--metrics", str(out / "metrics.csv"), "--curves", str(out / "curves.csv"),
                 "--runs", str(out / "runs.csv"), "--costs", str(out / "costs.csv"), "--losses", *losses,
                 "--out", str(tmp_path / "r")]) == 0
    page = Page((tmp_path / "r/report.html").read_text())
    assert {"table-digits", "table-digits-selected", "costs"} <= set(page.tables)
    for name in ("curves_digits", "losses_digits", "recall_digits"):
        assert Path(tmp_path / f"r/figures/{name}.png").exists() and Path(tmp_path / f"r/figures/{name}.svg").exists()


# ---------------------------------------------------------------- figures: intervals, seeds, legends, new figures

def long_curves(method: str, seeds: list[int]) -> pd.DataFrame:
    """NMI and F1 at steps 50 and 100: 0.3 + step / 1000 + 0.01 * seed."""
    return pd.DataFrame([{"dataset": "cub200", "method": method, "variant": "default", "seed": s, "step": step,
                          "metric": m, "value": 0.3 + step / 1000 + 0.01 * s}
                         for s in seeds for step in (50, 100) for m in ("nmi", "f1")])


def bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_fmt_mean_ci_marks_fewer_than_three_seeds():
    assert fmt_mean_ci(0.5, 0.01, 3) == "50.0 ± 1.0"
    assert fmt_mean_ci(0.5, 0.9, 2) == "50.0 (n=2)"
    assert fmt_mean_ci(0.5, math.nan, 1) == "50.0 (n=1)"


def test_curves_one_panel_per_method_and_no_band_from_two_seeds():
    data = pd.concat([long_curves("npair", [0, 1]), long_curves("hdml-npair", [0, 1, 2])])
    series = [Series("npair", "default", "N-pair", paper={"nmi": 60.2}),
              Series("hdml-npair", "default", "HDML (N-pair)", base="N-pair")]
    fig = curve_grid(data, series, [("nmi", "NMI"), ("f1", "F1")], "title")
    axes = np.array(fig.axes).reshape(2, 2)  # a row per method, a column per metric
    npair, hdml = axes[0, 0], axes[1, 0]
    assert npair.get_title() == "N-pair: NMI\n(2 seeds: no interval)" and not bands(npair)
    assert hdml.get_title() == "HDML (N-pair): NMI" and len(bands(hdml)) == 1
    # The band is the Student-t interval: seeds 0.35, 0.36, 0.37 at step 50 -> 36 ± 2.484 (t(0.975, 2) = 4.3027)
    y = bands(hdml)[0].get_paths()[0].vertices[:, 1]
    assert y.min() == pytest.approx(36 - 100 * 4.302653 * 0.01 / math.sqrt(3), abs=1e-4)
    assert y.max() == pytest.approx(41 + 100 * 4.302653 * 0.01 / math.sqrt(3), abs=1e-4)
    # N-pair: its 2 seeds, its mean, HDML's mean in grey, the paper's 60.2 dotted
    assert len(npair.lines) == 5
    assert [ln.get_ydata()[0] for ln in npair.lines if ln.get_linestyle() == ":"] == [60.2]
    # HDML: 3 seeds, its mean, its base loss N-pair dashed (mean of seeds 0 and 1: 35.5 at step 50)
    dashed = [ln for ln in hdml.lines if ln.get_linestyle() == "--"]
    assert len(hdml.lines) == 5 and len(dashed) == 1
    assert list(dashed[0].get_ydata()) == pytest.approx([35.5, 40.5])
    fig.canvas.draw()
    below = fig.legends[0].get_window_extent()
    assert all(below.y1 <= ax.get_window_extent().y0 for ax in fig.axes)  # the key is under every panel


def test_sweep_shows_seeds_and_no_interval_from_two():
    points = pd.DataFrame([{"metric": "nmi", "x": x, "seed": s, "value": 0.5 + 0.01 * s + x / 1000}
                           for x in (0.0, 30.0) for s in (0, 1)])
    default = pd.DataFrame([{"metric": "nmi", "seed": s, "value": 0.6 + 0.01 * s} for s in (0, 1, 2)])
    fig = sweep_figure(points, default, [("Clustering", [("nmi", "NMI")])], "α", 90.0, "default (α = 90)", "t")
    ax = fig.axes[0]
    assert not bands(ax)
    seeds = [ln for ln in ax.lines if ln.get_linestyle() == "None" and ln.get_marker() == "o"]
    assert sorted(x for ln in seeds for x in ln.get_xdata()) == [0, 0, 30, 30, 90, 90, 90]  # every seed a point
    bar = ax.containers[-1]  # the default has 3 seeds: its interval is drawn, on the line
    assert bar.has_yerr and list(bar.lines[0].get_xdata()) == [90]
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [90]
    assert "NMI (2 seeds: no interval)" in [t.get_text() for t in ax.get_legend().get_texts()]
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0  # legend below the data
    two = sweep_figure(points, default[default.seed < 2], [("Clustering", [("nmi", "NMI")])], "α", 90.0, "d", "t")
    assert not two.axes[0].containers  # no value with 3 seeds: no interval anywhere
    three = pd.concat([points, points[points.seed == 1].assign(seed=2)])  # 3 seeds at each value: bars drawn
    bars = sweep_figure(three, default, [("Clustering", [("nmi", "NMI")])], "α", 90.0, "d", "t").axes[0].containers
    # the default (α = 90) is a point of the mean line, not only a star beside it
    assert len(bars) == 1 and bars[0].has_yerr and list(bars[0].lines[0].get_xdata()) == [0, 30, 90]
    mean_line = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 1]
    assert [list(ln.get_xdata()) for ln in mean_line] == [[0, 30, 90]]


def test_adaptive_default_is_set_apart_from_the_swept_values():
    points = pd.DataFrame([{"metric": "nmi", "x": x, "seed": s, "value": 0.5 + 0.01 * s}
                           for x in (0.25, 0.75) for s in (0, 1, 2)])
    default = pd.DataFrame([{"metric": "nmi", "seed": s, "value": 0.6 + 0.01 * s} for s in (0, 1, 2)])
    ax = sweep_figure(points, default, [("Clustering", [("nmi", "NMI")])], "λ0", None, "default (adaptive)",
                      "t").axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[-1] == "adaptive\n(default)" and labels[:-1] == ["0.25", "0.75"]
    divider = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    diamond = [c for c in ax.containers if c.lines[0].get_marker() == "D"]
    assert len(divider) == 1 and len(diamond) == 1
    assert 0.75 < divider[0].get_xdata()[0] < diamond[0].lines[0].get_xdata()[0]  # beyond the swept values


def test_read_losses_smooths_j_m_and_names_bad_files(tmp_path):
    run = tmp_path / "cub200/npair/default/seed0"
    run.mkdir(parents=True)
    pd.DataFrame({"step": range(1, 81), "loss": np.arange(1.0, 81)}).to_csv(run / "losses.csv", index=False)
    hdml = tmp_path / "cub200/hdml-npair/default/seed1"
    hdml.mkdir(parents=True)
    pd.DataFrame({"step": range(1, 1001), "loss": -1.0, "j_m": np.arange(1000.0), "j_recon": 2.0,
                  "pulled": 0.5}).to_csv(hdml / "losses.csv", index=False)
    table = read_losses([run / "losses.csv", hdml / "losses.csv"])
    assert set(table[table.method == "npair"].metric) == {"j_m"}  # a baseline's `loss` is its J_m
    assert set(table[table.method == "hdml-npair"].metric) == {"j_m", "j_recon"}  # HDML's terms, no bookkeeping
    table = table[table.metric == "j_m"]
    base = table[table.method == "npair"]
    # 80 steps: a running mean over 80 / 40 = 2 steps
    assert list(base.value[:3]) == [1.0, 1.5, 2.5] and base.seed.unique().tolist() == [0]
    mine = table[table.method == "hdml-npair"]
    assert len(mine) <= 400 and (mine.value >= 0).all()  # HDML's J_m is j_m, not the combined loss
    # every 3rd of 1000 rows (400 at most), a running mean over 25: step 4's covers steps 1-4 (j_m 0..3)
    assert mine.step.iloc[1] == 4 and mine.value.iloc[1] == 1.5
    (run / "losses.csv").write_text("step,other\n1,2\n")
    with pytest.raises(ValueError, match=r"seed0/losses.csv: needs rows and the columns step and loss"):
        read_losses([run / "losses.csv"])


def test_loss_figure_has_hdml_beside_its_base(report):
    table = read_losses(sorted(report["root"].glob("runs/cub200/*/default/seed*/losses.csv")))
    assert set(table.metric) == {"j_m", "j_gen"}
    table = table[table.metric == "j_m"]
    series = method_series(["npair", "hdml-npair"], paper_table(), "cub200")
    fig = loss_grid(table, series, "J_m", "t")
    hdml = fig.axes[1]
    assert hdml.get_title() == "HDML (N-pair)"
    dashed = [ln for ln in hdml.lines if ln.get_linestyle() == "--"]
    mean = [ln for ln in hdml.lines if ln.get_linewidth() == 1.6][0]
    # j_m = loss + 0.5 in write_losses: HDML's mean line sits 0.5 above its base's
    assert mean.get_ydata() - dashed[0].get_ydata() == pytest.approx(0.5)


def test_recall_at_k_with_the_papers_values():
    series = method_series(method_order(["npair", "hdml-npair", "contrastive"], paper_table()), paper_table(),
                           "cub200")
    assert [s.label for s in series] == ["Contrastive", "N-pair", "HDML (N-pair)"]  # the paper's order
    assert series[2].base == "N-pair" and series[1].paper["nmi"] == 60.2
    points = pd.DataFrame([{"method": "npair", "variant": "default", "seed": s, "k": k, "value": 0.5 + 0.01 * s}
                           for s in (0, 1, 2) for k in (1, 2, 4, 8)])
    npair = replace(series[1], paper={1: 51.9, 2: 64.3, 4: 74.9, 8: 83.2})
    ax = recall_grid(points, [npair], "t").axes[0]
    paper = [ln for ln in ax.lines if ln.get_linestyle() == ":"][0]
    assert list(paper.get_xdata()) == [1, 2, 4, 8] and list(paper.get_ydata()) == [51.9, 64.3, 74.9, 83.2]
    assert ax.get_xscale() == "log" and len(bands(ax)) == 1


def test_captions_say_what_the_html_shows(report):
    html = unescape(report["html"])
    assert "Red: best of the column" in html and "†" not in html  # only the Markdown carries †
    assert "†: best of the column" in (report["dir"] / "tables/cub200.md").read_text()
    assert "method spec" not in html and "the fidelity ledger, hdml/fidelity.md" in html
    assert html.count("“Triplet hard” is the paper's name for its semi-hard triplet baseline") == 1
    assert "Learning curves on cub200, one row per method" in html


def seeds_table(values: dict[str, list[float]], metrics: tuple[str, ...] = ("nmi", "recall@1")) -> pd.DataFrame:
    return pd.DataFrame([("cub200", method, "default", seed, metric, v) for method, vs in values.items()
                         for seed, v in enumerate(vs) for metric in metrics],
                        columns=["dataset", "method", "variant", "seed", "metric", "value"])


def our_marks(seeds: pd.DataFrame) -> dict[str, set[str]]:
    summ = summary(seeds, ["dataset", "method", "variant", "metric"])
    table = results_table(summ, paper_table(), "cub200", selected=False, seeds=seeds)
    ours = [i for i, h in enumerate(table.flat_header()) if h.endswith("ours")]
    return {row[0].text: {kind for i in ours for kind in ("best", "bold") if getattr(row[i], kind)}
            for row in table.rows}


def test_means_that_differ_inside_overlapping_intervals_are_not_marked():
    """HDML (Triplet) above Triplet on the mean in every column, and the highest mean of all, but
    the seeds disagree (paired differences +.08, −.04, +.02): neither bold nor red anywhere."""
    noisy = {"triplet": [0.50, 0.56, 0.52], "hdml-triplet": [0.58, 0.52, 0.54], "npair": [0.40, 0.47, 0.41]}
    assert all(not marks for marks in our_marks(seeds_table(noisy)).values())
    # The same means with consistent seeds (+.02 on each seed, small spread): bold and red where the seeds agree.
    clear = {"triplet": [0.50, 0.56, 0.52], "hdml-triplet": [0.52, 0.585, 0.541], "npair": [0.30, 0.37, 0.31]}
    marks = our_marks(seeds_table(clear))
    assert marks["HDML (Triplet)"] == {"bold", "best"}  # above its base, and above both others (Holm over 2)
    assert not marks["Triplet"] and not marks["N-pair"]


def test_dataset_sentence_is_worded_from_the_tests(tmp_path):
    noisy = {"triplet": [0.50, 0.56, 0.52], "hdml-triplet": [0.58, 0.52, 0.54], "untrained": [0.30, 0.31, 0.33]}
    seeds = seeds_table(noisy)
    seeds.to_csv(tmp_path / "metrics.csv", index=False)
    text = unescape(render(tmp_path / "metrics.csv", tmp_path / "report").read_text())
    assert ("HDML's difference from its base loss is inside the seeds' noise: 0 of 2 comparisons exclude 0 "
            "(Holm-corrected over 2)") in text
    assert "the trained methods' R@1: 2 of 2 comparisons exclude 0 (Holm-corrected over 2), 2 above it" in text
    assert 'id="demo-banner"' not in text  # CUB-200 is no demo dataset


def test_every_section_with_results_states_what_its_numbers_support(report):
    """Each section that shows results closes with its generated sentence, the t-SNE map and the
    untested variants included (they say what they cannot support)."""
    sections = re.findall(r'<section id="([^"]+)">(.*?)</section>', report["html"], flags=re.S)
    shown = [key for key, body in sections if "<table" in body or "<img" in body]
    assert {"tsne", "variants"} <= set(shown)
    assert [key for key, body in sections if key in shown and "What the numbers support." not in body] == []
    tsne = dict(sections)["tsne"]
    assert "supports no comparison between methods" in tsne and "What the numbers support." in tsne
