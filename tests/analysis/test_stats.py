"""analysis.stats against hand computations, published results and scipy itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.stats import mean_ci, paired_test

#: Student's sleep data (Cushny & Peebles), extra hours of sleep under two drugs for the same ten patients
SLEEP_DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def test_t_interval_of_1_2_3_4_by_hand():
    # mean 2.5; s² = (1.5² + 0.5² + 0.5² + 1.5²) / 3 = 5/3; sem = s / 2; t(0.975, df=3) = 3.182446 (tables)
    half_width = 3.182446 * math.sqrt(5 / 3) / 2
    result = mean_ci([1, 2, 3, 4])
    assert result.n == 4 and result.mean == 2.5
    assert result.ci_low == pytest.approx(2.5 - half_width, abs=1e-6)
    assert result.ci_high == pytest.approx(2.5 + half_width, abs=1e-6)
    assert result.ci_low == pytest.approx(0.445740, abs=1e-6) and result.ci_high == pytest.approx(4.554260, abs=1e-6)


def test_an_interval_needs_two_values_and_equal_values_give_zero_width():
    assert (mean_ci([]).n, mean_ci([]).mean, mean_ci([]).ci_low) == (0, None, None)
    one = mean_ci([3.5])
    assert (one.n, one.mean, one.ci_low, one.ci_high) == (1, 3.5, None, None)
    same = mean_ci([0.25, 0.25, 0.25])
    assert (same.mean, same.ci_low, same.ci_high) == (0.25, 0.25, 0.25)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=30).filter(lambda v: np.std(v) > 1e-6))
def test_mean_ci_is_scipys_t_interval(values):
    result = mean_ci(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert result.mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-9, abs=1e-9)


def test_paired_t_test_on_the_sleep_data_matches_the_published_result():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE): t = -4.0621, df = 9, p-value = 0.002833,
    # 95 percent confidence interval -2.4598858 -0.7001142, mean difference -1.58
    result = paired_test(SLEEP_DRUG_1, SLEEP_DRUG_2)
    assert result.n_pairs == 10
    assert result.mean_diff == pytest.approx(-1.58, abs=1e-12)
    assert result.ci_low == pytest.approx(-2.4598858, abs=1e-7)
    assert result.ci_high == pytest.approx(-0.7001142, abs=1e-7)
    assert result.t_pvalue == pytest.approx(0.002833, abs=1e-6)
    assert result.wilcoxon_pvalue == stats.wilcoxon(np.subtract(SLEEP_DRUG_1, SLEEP_DRUG_2)).pvalue


def test_wilcoxon_exact_p_values_by_hand():
    # n distinct differences, all positive: W- = 0, and only the empty set of ranks sums to 0, so the
    # two-sided exact p-value is 2 · 1/2^n
    assert paired_test([1, 2, 3, 4, 5], [0] * 5).wilcoxon_pvalue == pytest.approx(2 / 2**5)
    # n = 6 with the smallest difference negative: W- = 1; rank sets summing to ≤ 1 are {} and {1},
    # so p = 2 · 2/2^6
    result = paired_test([-0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0] * 6)
    assert result.wilcoxon_pvalue == pytest.approx(2 * 2 / 2**6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(finite, finite), min_size=2, max_size=20, unique_by=lambda pair: pair[0] - pair[1]).filter(
        lambda pairs: np.std([a - b for a, b in pairs]) > 1e-6
    )
)
def test_paired_test_is_scipys_ttest_rel_and_wilcoxon(pairs):
    candidate, baseline = [a for a, _ in pairs], [b for _, b in pairs]
    result = paired_test(candidate, baseline)
    expected = stats.ttest_rel(candidate, baseline)
    interval = expected.confidence_interval(0.95)
    assert result.n_pairs == len(pairs)
    assert result.mean_diff == pytest.approx(np.mean(np.subtract(candidate, baseline)), rel=1e-12, abs=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9, abs=1e-9)
    assert result.t_pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-12)
    assert result.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(np.subtract(candidate, baseline)).pvalue)


def test_degenerate_pairs_give_none_instead_of_nan():
    single = paired_test([1.0], [2.0])
    assert (single.n_pairs, single.mean_diff) == (1, -1.0)
    assert single.ci_low is single.ci_high is single.t_pvalue is single.wilcoxon_pvalue is None

    empty = paired_test([], [])
    assert (empty.n_pairs, empty.mean_diff, empty.t_pvalue, empty.wilcoxon_pvalue) == (0, None, None, None)

    # a deterministic difference: the t statistic would be ±inf, the interval has zero width; Wilcoxon
    # still applies (three differences, all of one sign: p = 2/2^3)
    constant = paired_test([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert (constant.mean_diff, constant.ci_low, constant.ci_high, constant.t_pvalue) == (0.5, 0.5, 0.5, None)
    assert constant.wilcoxon_pvalue == pytest.approx(0.25)
    for n in (2, 6):
        assert paired_test([1.0] * n, [0.0] * n).wilcoxon_pvalue == pytest.approx(stats.wilcoxon([1.0] * n).pvalue)

    # 0.5 - 0.2, 0.6 - 0.3 and 0.55 - 0.25 differ in the last bits only: that is rounding, not variation
    rounded = paired_test([0.5, 0.6, 0.55], [0.2, 0.3, 0.25])
    assert rounded.mean_diff == pytest.approx(0.3) and rounded.t_pvalue is None

    identical = paired_test([1.0, 2.0], [1.0, 2.0])
    assert (identical.mean_diff, identical.t_pvalue, identical.wilcoxon_pvalue) == (0.0, None, None)

    with pytest.raises(ValueError, match="2 candidate values but 1 baseline"):
        paired_test([1.0, 2.0], [1.0])
