"""The report's multiple-comparison correction (hdml/report/stats.py): Holm-Bonferroni adjusted
p-values against hand-computed values and statsmodels, and the per-comparison intervals whose
verdict agrees with the correction."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hdml.report.stats import ALPHA, holm, holm_levels, paired_p, paired_tests


def test_holm_by_hand():
    # sorted: .01 (x4) = .04, .03 (x3) = .09, .04 (x2) = .08 -> .09 (monotone), .2 (x1) = .2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, math.nan, 0.02])  # NaN is not a comparison: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]).shape == (0,)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip(
        "statsmodels.stats.multitest",
        reason="statsmodels is a test extra: pip install -e '.[test]', then pytest tests/test_report_stats.py")
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 9, 30):
        p = rng.uniform(0, 0.2, m) ** 2
        reject, adjusted, _, _ = multitest.multipletests(p, alpha=ALPHA, method="holm")
        assert holm(p) == pytest.approx(adjusted)
        assert list(holm(p) < ALPHA) == list(reject)


def test_levels_step_down_and_stop_at_the_first_acceptance():
    # Unsorted, all rejected: .001 <= .05/4, .01 <= .05/3, .02 <= .05/2, .03 <= .05/1.
    assert holm_levels([0.03, 0.001, 0.01, 0.02]) == pytest.approx([0.05, 0.0125, 0.05 / 3, 0.025])
    # .001 <= .05/3 rejected; .03 > .05/2 stops; .04, below its own .05/1, is tested at .025 too.
    p = np.array([0.04, 0.001, 0.03])
    levels = holm_levels(p)
    assert levels == pytest.approx([0.025, 0.05 / 3, 0.025])
    assert (p < levels).tolist() == [False, True, False] == (holm(p) < ALPHA).tolist()


def test_corrected_interval_agrees_with_the_adjusted_p_value():
    rng = np.random.default_rng(3)
    for _ in range(50):
        family = [rng.normal(rng.uniform(-0.05, 0.05), 0.02, size=rng.integers(3, 6)) for _ in range(6)]
        tests = paired_tests(family)
        for d, t in zip(family, tests, strict=True):
            assert t.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
            assert t.comparisons == 6
            excludes = t.mean - t.half_corrected > 0 or t.mean + t.half_corrected < 0
            assert excludes == t.excludes_zero() == (t.p_holm < ALPHA)
            assert t.half_corrected >= t.half  # never narrower than the raw 95% interval
            oracle = stats.ttest_1samp(d, 0).confidence_interval(1 - t.level)
            assert (t.mean - t.half_corrected, t.mean + t.half_corrected) == pytest.approx((oracle.low, oracle.high))


def test_raw_gain_can_be_significant_alone_and_not_after_correction():
    # Nine comparisons: one raw interval excludes 0 (p ~ .02), the other eight are noise.
    clear = np.array([0.05, 0.03, 0.07])
    noise = [np.array([0.01, -0.02, 0.02]) for _ in range(8)]
    tests = paired_tests([clear, *noise])
    assert tests[0].raw_excludes_zero() is True and tests[0].p < ALPHA
    assert tests[0].excludes_zero() is False and tests[0].comparisons == 9
    assert tests[0].p_holm == pytest.approx(min(1.0, 9 * tests[0].p))


def test_too_few_pairs_are_shown_not_tested():
    tests = paired_tests([np.array([0.1, 0.2]), np.array([0.05, 0.04, 0.06])])
    assert tests[0].excludes_zero() is None and math.isnan(tests[0].p) and tests[0].comparisons == 1
    assert tests[1].excludes_zero() is True  # alone in its family: its own 95% test
    assert paired_p(np.zeros(3)) == 1.0 and paired_p(np.full(3, 0.01)) == 0.0


def test_sentence_counts_the_corrected_verdicts_and_the_signs():
    from hdml.report.conclude import verdict

    # two clear losses and one noisy one, Holm over 3: worded from the tests, not written ahead
    tests = paired_tests([np.array([-0.10, -0.11, -0.12]), np.array([-0.06, -0.07, -0.065]),
                          np.array([-0.01, 0.02, -0.04])])
    decided = [t.excludes_zero() for t in tests]
    text = verdict("The paper's formulas", tests, "better", "worse", "Noise")
    assert text.startswith(f"The paper's formulas: {sum(decided)} of 3 comparisons exclude 0 (Holm-corrected over 3)")
    assert "differences of −11.0 to −1.0 points; every one of the 3 differences is negative." in text
    noise = verdict("S", paired_tests([np.array([0.01, -0.02, 0.02])]), "b", "w", "Inside the noise")
    assert noise == ("Inside the noise: 0 of 1 comparisons exclude 0 (Holm-corrected over 1); "
                     "differences of +0.3 points.")
