"""The report's "Synthetic hard samples, side by side" section: HDML − DAML per base loss with a
Welch 95% interval, checked against scipy's Welch t-test on the seeds themselves."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from hdml.report.stats import summary
from hdml.report.synthetic import synthetic_rows, synthetic_section

SEEDS = {"daml-triplet": [0.48, 0.50, 0.53], "hdml-triplet": [0.53, 0.55, 0.61],
         "daml-npair": [0.60, 0.61], "hdml-npair": [0.62, 0.66], "triplet": [0.40, 0.41, 0.42]}


def summ() -> pd.DataFrame:
    long = pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "metric": "nmi", "value": v}
                         for m, values in SEEDS.items() for v in values])
    return summary(long, ["dataset", "method", "variant", "metric"])


def test_difference_and_interval_match_welchs_t_test() -> None:
    rows = {r[1]: r for r in synthetic_rows(summ())}
    hdml, daml = SEEDS["hdml-triplet"], SEEDS["daml-triplet"]
    ci = stats.ttest_ind(hdml, daml, equal_var=False).confidence_interval(0.95)
    diff, half = (ci.low + ci.high) / 2, (ci.high - ci.low) / 2
    assert rows["Triplet"][:5] == ["digits", "Triplet", "nmi", "50.3", "56.3"]
    assert rows["Triplet"][5] == f"{100 * diff:+.1f} ± {100 * half:.1f}"
    assert diff == pytest.approx(0.06) and 100 * half > 1  # not a degenerate interval


def test_too_few_seeds_show_the_difference_without_an_interval() -> None:
    rows = {r[1]: r for r in synthetic_rows(summ())}
    assert rows["N-pair"][5] == "+3.5 (n=2, 2)"


@dataclass
class FakeReport:
    out_dir: Path
    sections: list[tuple[str, str, str]] = field(default_factory=list)

    def section(self, key: str, title: str, body: str) -> None:
        self.sections.append((key, title, body))


def test_section_and_table_written(tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    rep = FakeReport(tmp_path)
    synthetic_section(rep, summ())
    [(key, title, body)] = rep.sections
    assert key == "synthetic" and title == "Synthetic hard samples, side by side" and "Triplet" in body
    table = (tmp_path / "tables" / "synthetic.md").read_text()
    assert "| digits | N-pair | nmi | 60.5 | 64.0 | +3.5 (n=2, 2) |" in table


def test_no_pair_no_section(tmp_path: Path) -> None:
    rep = FakeReport(tmp_path)
    s = summ()
    synthetic_section(rep, s[~s.method.isin(["daml-triplet", "daml-npair"])])
    assert rep.sections == []


def test_generator_curves_drawn_per_dataset(tmp_path: Path) -> None:
    """With losses, one figure of J_gen / J_syn per dataset, rows for the DAML and HDML methods only."""
    from hdml.report import Report

    (tmp_path / "tables").mkdir()
    losses = pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "seed": seed, "step": step,
                            "metric": t, "value": 1.0 / step + seed}
                           for m in ("daml-triplet", "hdml-triplet", "triplet") for seed in (0, 1, 2)
                           for step in (1, 2, 3) for t in ("j_gen", "j_syn", "j_m")])
    rep = Report(tmp_path)
    synthetic_section(rep, summ(), losses)
    assert (tmp_path / "figures" / "synthetic-losses_digits.png").exists()
    assert rep.toc == [("synthetic", "Synthetic hard samples, side by side")]
    assert 'id="fig-synthetic-losses_digits"' in rep.sections[0]
