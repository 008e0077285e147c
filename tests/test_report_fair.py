"""The report's "Paper protocol vs fair protocol" section (hdml/report/sections/fair.py), on fabricated
runs tables whose paired intervals are computed here by hand."""
from __future__ import annotations

from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from hdml.eval.aggregate import METRICS_COLUMNS, RUNS_COLUMNS
from hdml.report import render
from hdml.report.sections.fair import base_loss, gains, paired_gain, per_seed, protocol_runs

# R@1 per seed. Paper protocol (default, last): HDML − triplet = .05, .04, .06.
# Fair protocol (selection val, variant named "tuned"): HDML − triplet = −.01, .03, −.06.
PAPER = {"triplet": [0.45, 0.50, 0.52], "hdml-triplet": [0.50, 0.54, 0.58], "npair": [0.50, 0.51, 0.52],
         "daml-triplet": [0.30, 0.31, 0.32]}  # DAML is built on triplet too, but its gain is not HDML's
FAIR = {"triplet": [0.41, 0.42, 0.44], "hdml-triplet": [0.40, 0.45, 0.38], "npair": [0.30, 0.31, 0.32]}


def run_row(method: str, variant: str, seed: int, selection: str, steps: int = 200) -> dict:
    return {"dataset": "cub200", "method": method, "variant": variant, "seed": seed, "protocol": "code",
            "alpha": None, "lambda0": None, "steps": steps, "selected_step": None, "selection": selection,
            "selection_metric": "map@r"}


def fabricated() -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics, runs = [], []
    for table, variant, selection in ((PAPER, "default", "last"), (FAIR, "tuned", "val")):
        for method, values in table.items():
            for seed, v in enumerate(values):
                runs.append(run_row(method, variant, seed, selection, 200 if selection == "last" else 100))
                metrics += [("cub200", method, variant, seed, "recall@1", v),
                            ("cub200", method, variant, seed, "recall@8", v),
                            ("cub200", method, variant, seed, "selected:recall@1", 0.99)]
    # A variant *named* fair that selects the last checkpoint is not the fair protocol; a base
    # seed HDML lacks is not paired.
    for seed in range(3):
        runs.append(run_row("hdml-triplet", "fair", seed, "last"))
        metrics.append(("cub200", "hdml-triplet", "fair", seed, "recall@1", 0.01))
    runs.append(run_row("triplet", "default", 7, "last"))
    metrics.append(("cub200", "triplet", "default", 7, "recall@1", 0.30))
    return pd.DataFrame(metrics, columns=METRICS_COLUMNS), pd.DataFrame(runs, columns=RUNS_COLUMNS)


def test_base_loss_comes_from_the_plugin():
    assert base_loss("hdml-triplet") == "triplet" and base_loss("hdml-npair") == "npair"
    assert base_loss("triplet") is None and base_loss("multisimilarity") is None
    assert base_loss("daml-triplet") is None  # built on triplet, but not HDML


def test_protocols_from_the_selection_column_not_the_variant_name():
    metrics, runs = fabricated()
    tagged, notes = protocol_runs(runs)
    fair = tagged[tagged.protocol_kind == "fair"]
    assert set(fair.variant) == {"tuned"} and len(fair) == 9
    assert set(tagged[tagged.protocol_kind == "paper"].variant) == {"default"}
    assert "fair" not in set(tagged.variant) and notes == []
    seeds = per_seed(metrics, tagged)
    assert not seeds.metric.str.startswith("selected:").any()


def test_paired_interval_by_hand():
    metrics, runs = fabricated()
    found = {(r[3], r[4]): r[5] for r in gains(per_seed(metrics, protocol_runs(runs)[0]))}
    assert set(found) == {("recall@1", "paper"), ("recall@1", "fair")}
    paper, fair = found["recall@1", "paper"], found["recall@1", "fair"]
    # Paper: d = .05, .04, .06; mean .05, sd .01, half = t(.975, 2) * .01 / sqrt(3) = 4.302653 * .0057735.
    assert paper.seeds == (0, 1, 2)  # triplet's seed 7 has no HDML partner
    assert paper.mean == pytest.approx(0.05) and paper.half == pytest.approx(0.0248414, abs=1e-6)
    assert paper.excludes_zero() is True
    # Fair: d = -.01, .03, -.06; mean -.013333, sd sqrt(.0040667 / 2) = .0450925, half = .1120162.
    assert fair.mean == pytest.approx(-0.0133333, abs=1e-6) and fair.half == pytest.approx(0.1120162, abs=1e-6)
    assert fair.excludes_zero() is False
    oracle = stats.ttest_rel(FAIR["hdml-triplet"], FAIR["triplet"]).confidence_interval(0.95)
    assert (fair.mean - fair.half, fair.mean + fair.half) == pytest.approx((oracle.low, oracle.high))


def test_pairing_uses_common_seeds_only_and_two_pairs_give_no_verdict():
    g = paired_gain(pd.Series({0: 0.5, 1: 0.7, 5: 0.1}), pd.Series({0: 0.4, 1: 0.5, 2: 0.9}))
    assert g.seeds == (0, 1) and g.mean == pytest.approx(0.15) and g.excludes_zero() is None
    assert paired_gain(pd.Series({0: 0.5}), pd.Series({1: 0.5})) is None


def test_gain_verdicts_are_holm_corrected_over_the_table():
    """Two gains (paper and fair evaluation): the smaller p-value is doubled (Holm, m = 2); a
    third, noisy comparison (another metric) makes m = 3, and the verdict follows the corrected p."""
    metrics, runs = fabricated()
    found = {(r[3], r[4]): r[5] for r in gains(per_seed(metrics, protocol_runs(runs)[0]))}
    paper, fair = found["recall@1", "paper"], found["recall@1", "fair"]
    p_paper = stats.ttest_rel(PAPER["hdml-triplet"], PAPER["triplet"]).pvalue
    assert paper.comparisons == fair.comparisons == 2
    assert paper.test.p_holm == pytest.approx(2 * p_paper) and paper.excludes_zero() == (2 * p_paper < 0.05)
    assert paper.raw_excludes_zero() is True and fair.excludes_zero() is False
    # A third comparison, NMI of the paper-evaluated pair: d = .03, .01, .05.
    nmi = {"triplet": [0.40, 0.42, 0.40], "hdml-triplet": [0.43, 0.43, 0.45]}
    extra = pd.DataFrame([("cub200", m, "default", s, "nmi", v) for m, vs in nmi.items() for s, v in enumerate(vs)],
                         columns=metrics.columns)
    found = {(r[3], r[4]): r[5] for r in gains(per_seed(pd.concat([metrics, extra]), protocol_runs(runs)[0]))}
    assert {g.comparisons for g in found.values()} == {3}
    assert found["recall@1", "paper"].test.p_holm == pytest.approx(3 * p_paper)
    assert found["recall@1", "paper"].excludes_zero() == (3 * p_paper < 0.05)


def write_inputs(tmp_path: Path, metrics: pd.DataFrame, runs: pd.DataFrame) -> tuple[Path, Path]:
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path / "metrics.csv", tmp_path / "runs.csv"


def section_html(page: str) -> str:
    start = page.index('<section id="fair">')
    return page[start:page.index("</section>", start)]


def test_html_section_tables_and_figure(tmp_path):
    m, r = write_inputs(tmp_path, *fabricated())
    page = unescape(render(m, tmp_path / "report", runs_csv=r).read_text())
    body = section_html(page)
    assert "Paper evaluation vs fair evaluation" in body and "less the validation classes" in body
    assert "selection val by map@r on the validation classes, 100 steps" in body
    assert "paper evaluation: selection last, 200 steps" in body
    assert "Tuning budget: not given to the report" in body
    # Gain rows: paired mean ± raw interval in points, Holm over the 2 gains, and the verdict.
    assert "+5.0 ± 2.5" in body and "yes: HDML better" in body and "excludes 0? (Holm, 2 comparisons)" in body
    assert "-1.3 ± 11.2" in body
    assert "Under paper evaluation, HDML against its base loss: 1 of 1 comparisons exclude 0" in body
    assert "Under fair evaluation, HDML's gain over its base loss is inside the seeds' noise" in body
    # No ranks: a rank of means would claim an order the seeds do not support.
    table = (tmp_path / "report" / "tables" / "fair.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "Method" not in line}
    assert "rank by" not in table and len(rows["Triplet"]) == 4  # seeds; R@1 paper, paper evaluation, fair
    assert rows["Triplet"][:4] == ["4 / 3", "35.9", "44.2 ± 15.8", "42.3 ± 3.8"]  # seeds; R@1 paper, ours x2
    for fmt in ("png", "svg"):
        assert (tmp_path / "report" / "figures" / f"fair-gain.{fmt}").stat().st_size > 1000
    assert 'id="fig-fair-gain"' in body


def test_no_fair_runs_is_said(tmp_path):
    metrics, runs = fabricated()
    keep = runs.selection != "val"
    m, r = write_inputs(tmp_path, metrics.merge(runs[keep][["dataset", "method", "variant", "seed"]]), runs[keep])
    body = section_html(unescape(render(m, tmp_path / "report", runs_csv=r).read_text()))
    assert "No fair-evaluation runs in these results" in body and "fig-fair-gain" not in body


def test_tuning_budget_is_read_from_the_studies(tmp_path):
    """trials from each study's best.yaml, steps from its first trial's run config, never assumed."""
    m, r = write_inputs(tmp_path, *fabricated())
    studies = []
    for method, steps in (("triplet", 100), ("hdml-triplet", 100), ("daml-triplet", 50)):
        study = tmp_path / "tune" / "cub200" / method
        (study / "trial0").mkdir(parents=True)
        (study / "best.yaml").write_text(f"dataset: cub200\nmethod: {method}\nmetric: map@r\ntrials: 2\nset: {{}}\n")
        (study / "trial0" / "config.yaml").write_text(f"steps: {steps}\n")
        studies.append(study / "best.yaml")
    body = section_html(unescape(render(m, tmp_path / "report", runs_csv=r, tuning=studies).read_text()))
    # DAML ran no fair runs here: its study is not the fair runs' budget
    assert "Tuning budget: 2 trials of 100 steps (Triplet on cub200, HDML (Triplet) on cub200)" in body
    (studies[0].parent / "best.yaml").write_text("set: {}\n")
    with pytest.raises(ValueError, match="best.yaml: needs dataset, method and trials"):
        render(m, tmp_path / "report2", runs_csv=r, tuning=studies)
