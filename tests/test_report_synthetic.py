"""The report's "Synthetic hard samples, side by side" section: HDML − DAML per base loss with a
Welch 95% interval, checked against scipy's Welch t-test on the seeds themselves."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from hdml.report.sections.synthetic import synthetic_rows, synthetic_section
from hdml.report.stats import summary

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
    assert rows["Triplet"][:5] == ["digits", "Triplet", "NMI", "50.3", "56.3"]
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
    assert "| digits | N-pair | NMI | 60.5 | 64.0 | +3.5 (n=2, 2) | not tested (fewer than 3 seeds) |" in table
    assert "excludes 0? (Holm, 1 comparisons)" in table


def test_verdict_is_welchs_p_value_holm_corrected() -> None:
    """Triplet: Welch's p of HDML − DAML is scipy's; alone in its family it is its own Holm p. A
    second, noisy base loss makes two comparisons: p doubles, and the verdict follows it."""
    hdml, daml = SEEDS["hdml-triplet"], SEEDS["daml-triplet"]
    p = stats.ttest_ind(hdml, daml, equal_var=False).pvalue
    rows = {r[1]: r for r in synthetic_rows(summ())}
    assert rows["Triplet"][6].startswith(("yes: HDML better" if p < 0.05 else "no") + f" (p = {p:.3f};")
    seeds = {**SEEDS, "daml-npair": [0.50, 0.70, 0.55], "hdml-npair": [0.52, 0.69, 0.60]}
    long = pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "metric": "nmi", "value": v}
                         for m, values in seeds.items() for v in values])
    rows = {r[1]: r for r in synthetic_rows(summary(long, ["dataset", "method", "variant", "metric"]))}
    p2 = stats.ttest_ind(seeds["hdml-npair"], seeds["daml-npair"], equal_var=False).pvalue
    holm_p = min(1, 2 * p) if p <= p2 else min(1, max(2 * p2, p))  # Holm with m = 2, by hand
    assert f"p = {holm_p:.3f};" in rows["Triplet"][6]
    assert rows["N-pair"][6].startswith("no (p = ")


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


def test_protocol_section_shows_daml_beside_hdml(tmp_path: Path) -> None:
    """The demo's protocol=paper variant runs DAML too: its rows stand in the protocol table, code
    and paper protocol side by side with the paper's number."""
    from hdml.report import Report, paper_table
    from hdml.report.inputs import Inputs
    from hdml.report.sections.protocol import protocol_section
    from hdml.report.settings import SETTINGS

    variants = {"default": 0.0, "protocol=paper": 0.02}
    long = pd.DataFrame([{"dataset": "cub200", "method": m, "variant": v, "seed": seed, "metric": "nmi",
                          "value": x + shift}
                         for m in ("daml-npair", "hdml-npair") for v, shift in variants.items()
                         for seed, x in enumerate((0.50, 0.51, 0.52))])
    runs = pd.DataFrame([{"dataset": "cub200", "method": m, "variant": v, "seed": seed, "protocol": v.partition("=")[2]
                          or "code"} for m in ("daml-npair", "hdml-npair") for v in variants for seed in range(3)])
    data = Inputs(metrics=long, summ=summary(long, ["dataset", "method", "variant", "metric"]), paper=paper_table(),
                  datasets=["cub200"], runs=runs.reindex(columns=[*runs.columns, *SETTINGS[1:]]))
    (tmp_path / "tables").mkdir()
    protocol_section(Report(tmp_path), data)
    table = (tmp_path / "tables" / "protocol.md").read_text()
    # paired by seed: +.02 on every seed, no spread: p = 0, a difference even after Holm over 2
    assert ("| cub200 | DAML (N-pair) | NMI | 51.0 ± 2.5 (n=3) | 53.0 ± 2.5 (n=3) | **+2.0 ± 0.0** | "
            "**yes: paper formulas better** | 61.3 | — |") in table
    assert "| cub200 | HDML (N-pair) | NMI |" in table


def fabricated_losses() -> pd.DataFrame:
    """losses as hdml.report.read_losses gives them: DAML and HDML log J_gen and J_syn alike,
    besides each one's own terms; the baseline J_m alone."""
    logged = {"npair": ["j_m"], "hdml-npair": ["j_m", "j_syn", "j_gen", "j_recon", "j_soft"],
              "daml-npair": ["j_m", "j_syn", "j_gen", "j_hard", "j_reg", "j_adv"]}
    return pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "seed": seed, "step": step,
                          "metric": t, "value": 1.0 / step + seed}
                         for m, terms in logged.items() for t in terms for seed in (0, 1, 2) for step in (1, 2, 3)])


def drawn(monkeypatch: pytest.MonkeyPatch, *modules) -> list[tuple[str, list[str], list[str]]]:
    """Every curve grid the report draws: (title, methods by row, metrics by column)."""
    from hdml.report import figures

    calls = []

    def recording(curves, series, metrics, title, percent=True):
        calls.append((title, [s.method for s in series], [m for m, _ in metrics]))
        return figures.curve_grid(curves, series, metrics, title, percent)

    for module in modules:
        monkeypatch.setattr(module, "curve_grid", recording)
    return calls


def test_hdml_figure_takes_the_methods_whose_plugin_declares_it(tmp_path: Path, monkeypatch) -> None:
    """DAML logs j_gen and j_syn too: "HDML's own losses" still has HDML's rows alone, chosen by
    the plug-in's `loss_figure`, not by which columns a run happens to log."""
    from hdml.report import Report, paper_table
    from hdml.report.inputs import Inputs
    from hdml.report.sections import datasets

    calls = drawn(monkeypatch, datasets)
    long = pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "seed": s, "metric": "nmi",
                          "value": 0.5 + s / 100} for m in ("npair", "hdml-npair", "daml-npair") for s in (0, 1, 2)])
    data = Inputs(metrics=long, summ=summary(long, ["dataset", "method", "variant", "metric"]), paper=paper_table(),
                  datasets=["digits"], losses=fabricated_losses())
    (tmp_path / "tables").mkdir()
    datasets.dataset_sections(Report(tmp_path), data)
    [(title, methods, terms)] = [c for c in calls if "HDML's own losses" in c[0]]
    assert methods == ["hdml-npair"] and terms == ["j_syn", "j_gen", "j_recon", "j_soft"]


def test_daml_generator_terms_get_their_own_curves(tmp_path: Path, monkeypatch) -> None:
    """The side-by-side figure keeps J_gen and J_syn of both generators; DAML's J_hard, J_reg and
    J_adv get a figure of their own, one row per DAML method."""
    from hdml.report import Report
    from hdml.report.sections import synthetic

    calls = drawn(monkeypatch, synthetic)
    (tmp_path / "tables").mkdir()
    rep = Report(tmp_path)
    synthetic_section(rep, summ(), fabricated_losses())
    assert [(m, t) for _, m, t in calls] == [(["daml-npair", "hdml-npair"], ["j_gen", "j_syn"]),
                                             (["daml-npair"], ["j_hard", "j_reg", "j_adv"])]
    assert (tmp_path / "figures" / "synthetic-daml-terms_digits.png").exists()
    assert 'id="fig-synthetic-daml-terms_digits"' in rep.sections[0]


def test_read_losses_keeps_the_terms_the_plugin_declares(tmp_path: Path) -> None:
    """A DAML run's losses.csv: J_m plus its declared terms; bookkeeping columns stay out."""
    from hdml.report import read_losses

    run = tmp_path / "runs/digits/daml-npair/default/seed0"
    run.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2], "j_m": [1.0, 0.5], "j_gen": 2.0, "j_hard": 1.0, "j_reg": 0.5, "j_adv": 0.1,
                  "j_syn": 0.3, "j_metric": 0.9, "adversarial": 1.0}).to_csv(run / "losses.csv", index=False)
    got = read_losses([run / "losses.csv"])
    assert set(got.metric) == {"j_m", "j_gen", "j_hard", "j_reg", "j_adv", "j_syn"}


def test_a_small_objective_keeps_its_own_scale_beside_a_large_one() -> None:
    """DAML's J_gen (~0.1) and HDML's (~100) in one loss figure: each panel is scaled to its own
    row's curve, with no other method's line in it to flatten it."""
    from hdml.report.figures import Series, curve_grid

    losses = pd.DataFrame([{"dataset": "digits", "method": m, "variant": "default", "seed": seed, "step": step,
                            "metric": "j_gen", "value": scale * (1 + 0.1 * step + 0.01 * seed)}
                           for m, scale in (("daml-triplet", 0.1), ("hdml-triplet", 100.0)) for seed in (0, 1, 2)
                           for step in (1, 2, 3)])
    fig = curve_grid(losses, [Series("daml-triplet", "default", "DAML"), Series("hdml-triplet", "default", "HDML")],
                     [("j_gen", "J_gen")], "t", percent=False)
    daml, hdml = fig.axes[0].get_ylim(), fig.axes[1].get_ylim()
    assert daml[1] < 1 and hdml[0] > 10  # neither axis spans the other's curve
