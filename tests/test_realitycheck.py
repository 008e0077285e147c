"""Report section "Reality Check protocol" (hdml.report.sections.realitycheck): the published-table
loader, ours concatenated and separated per seed, and HDML's gains Holm-corrected as one family."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hdml.report import render
from hdml.report.sections.realitycheck import COLUMNS, fold_runs, gain_family, published_table

SEEDS = [0, 1, 2, 3]


def fold_model_metrics() -> pd.DataFrame:
    """metrics.csv rows of two fold-model variants' seeds: HDML (Triplet) beats Triplet by a
    clear +10 points on concatenated MAP@R, and differs by seed noise elsewhere."""
    rng = np.random.default_rng(0)
    rows = []
    for method in ("triplet", "hdml-triplet"):
        for seed in SEEDS:
            for metric in ("recall@1", "r_precision", "map@r", "nmi"):
                for prefix in ("", "separated:", "selected:"):
                    lift = 0.10 if (method == "hdml-triplet" and metric == "map@r" and prefix == "") else 0.0
                    value = 0.5 + lift + 0.01 * seed + rng.normal(scale=0.01)
                    rows.append(["digits", method, "fair", seed, prefix + metric, value])
    rows.append(["digits", "triplet", "default", 0, "recall@1", 0.4])  # a run without fold models: not shown
    return pd.DataFrame(rows, columns=["dataset", "method", "variant", "seed", "metric", "value"])


def test_the_shipped_table_loads_and_every_row_names_its_source():
    table = published_table()
    assert list(table.columns) == COLUMNS
    assert table.source.notna().all()


def test_a_filled_table_is_checked(tmp_path):
    good = tmp_path / "rc.csv"
    good.write_text("# test fixture, not published numbers\n" + ",".join(COLUMNS) + "\n"
                    "digits,triplet,Triplet,concatenated,map@r,25.5,fixture\n")
    assert published_table(good).value.tolist() == [25.5]
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\ndigits,triplet,Triplet,joined,map@r,25.5,fixture\n")
    with pytest.raises(ValueError, match="bad.csv: row digits/triplet/joined/map@r"):
        published_table(bad)


def test_fold_runs_split_concatenated_and_separated():
    seeds = fold_runs(fold_model_metrics())
    assert set(seeds.variant) == {"fair"} and set(seeds.representation) == {"concatenated", "separated"}
    assert set(seeds.metric) == {"recall@1", "r_precision", "map@r"}  # the Reality Check's three


def test_gains_are_one_holm_family_checked_against_scipy(tmp_path):
    metrics = fold_model_metrics()
    family = gain_family(fold_runs(metrics))
    assert len(family) == 6  # 3 metrics x 2 representations, one HDML method
    p = np.array([stats.ttest_1samp(f[5], 0.0).pvalue for f in family])
    m = len(p)
    order = np.argsort(p)
    holm = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)  # by hand: Holm's step-down
    adjusted = np.empty(m)
    adjusted[order] = holm
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    page = render(tmp_path / "metrics.csv", tmp_path / "report").read_text()
    assert "Reality Check protocol" in page and f"{m} comparison(s) tested" in page
    md = (tmp_path / "report" / "tables" / "reality-check.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| Digits") and "HDML" in line]
    assert len(rows) == m
    by_key = {(f[3], f[4]): a for f, a in zip(family, adjusted, strict=True)}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        metric = {"P@1": "recall@1", "R-Prec": "r_precision", "MAP@R": "map@r"}[cells[3]]
        assert float(cells[8]) == pytest.approx(by_key[metric, cells[4]], rel=1e-2)
        assert cells[9].startswith("yes") == (by_key[metric, cells[4]] < 0.05)
    concatenated_map = [line for line in rows if "MAP@R" in line and "concatenated" in line][0]
    assert "yes: HDML better" in concatenated_map
