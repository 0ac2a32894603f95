"""analysis.stats against hand computations, published results, scipy, statsmodels and rliable's
definitions written out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.stats import (
    Interval,
    holm,
    iqm,
    mean_ci,
    paired_prob_improvement_ci,
    paired_test,
    positive_ci,
    prob_improvement,
    proportion_ci,
    robust_aggregates,
    stratified_bootstrap_ci,
    stratified_resamples,
)

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


# --- intervals that stay in the quantity's range -----------------------------------------------

positive = st.floats(1e-12, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(positive, min_size=2, max_size=30).filter(lambda v: np.std(np.log(v)) > 1e-6))
def test_positive_ci_is_scipys_t_interval_of_the_logs_exponentiated(values):
    logs = np.log(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=logs.mean(), scale=stats.sem(logs))
    result = positive_ci(values)
    assert result.method == "log_t"
    assert result.estimate == pytest.approx(stats.gmean(values), rel=1e-9)
    assert (result.low, result.high) == pytest.approx((math.exp(low), math.exp(high)), rel=1e-9)
    assert 0 < result.low <= result.estimate <= result.high


def test_the_readme_mlp_loss_gets_a_positive_interval():
    # three final losses around 1.5e-6 whose arithmetic t-interval goes below 0, as the README's MLP did
    finals = [0.2e-6, 0.8e-6, 3.4e-6]
    assert mean_ci(finals).ci_low < 0
    result = positive_ci(finals)
    assert result.method == "log_t" and 0 < result.low < result.estimate < result.high
    # hand computation: logs' mean and sample sd, t(0.975, 2) = 4.302653
    logs = [math.log(v) for v in finals]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / 2)
    assert result.low == pytest.approx(math.exp(mean - 4.302653 * sd / math.sqrt(3)), rel=1e-6)
    assert result.high == pytest.approx(math.exp(mean + 4.302653 * sd / math.sqrt(3)), rel=1e-6)


def test_zero_and_negative_values_of_a_positive_quantity_fall_back_to_the_arithmetic_interval():
    # a loss of exactly 0 (float64 on a quadratic): the mean's t-interval, clipped at 0
    with_zero = [0.0, 1e-3, 2e-3]
    low, high = stats.t.interval(0.95, 2, loc=1e-3, scale=stats.sem(with_zero))
    assert low < 0
    assert positive_ci(with_zero) == Interval(pytest.approx(1e-3), 0.0, pytest.approx(high), "t_clipped")
    # a negative value: the quantity is not positive after all, so nothing is clipped
    signed = [-1.0, 1.0, 2.0]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(signed), scale=stats.sem(signed))
    assert positive_ci(signed) == Interval(pytest.approx(2 / 3), pytest.approx(low), pytest.approx(high), "t")
    assert positive_ci([]) == Interval(None, None, None, None)
    assert positive_ci([0.5]) == Interval(pytest.approx(0.5), None, None, "log_t")
    assert positive_ci([0.5, 0.5]) == Interval(pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5), "log_t")


def test_proportion_ci_is_the_t_interval_clipped_to_0_1():
    accuracies = [0.97, 1.0, 0.99]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(accuracies), scale=stats.sem(accuracies))
    assert high > 1
    assert proportion_ci(accuracies) == Interval(
        pytest.approx(np.mean(accuracies)), pytest.approx(low), 1.0, "t_clipped"
    )
    inside = [0.4, 0.5, 0.6, 0.55]
    low, high = stats.t.interval(0.95, 3, loc=np.mean(inside), scale=stats.sem(inside))
    assert (proportion_ci(inside).low, proportion_ci(inside).high) == pytest.approx((low, high))
    assert proportion_ci([0.01, 0.0, 0.02]).low == 0.0


# --- robust aggregates against rliable's definitions -------------------------------------------


def _rliable_iqm(scores):
    """rliable.metrics.aggregate_iqm, written out: scipy.stats.trim_mean(scores, 0.25) cuts
    int(0.25 · n) of the sorted values from each end and averages the rest."""
    ordered = sorted(scores)
    cut = int(0.25 * len(ordered))
    return float(np.mean(ordered[cut : len(ordered) - cut]))


def _rliable_probability_of_improvement(x, y):
    """rliable.metrics.probability_of_improvement for one task, higher is better:
    (1/(m·n)) Σᵢ Σⱼ S(xᵢ, yⱼ), S = 1 if xᵢ > yⱼ, 1/2 if equal, 0 otherwise (Mann–Whitney U / m·n)."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y) / (len(x) * len(y))


def test_iqm_on_fixed_data_is_rliables():
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # the middle four: 3, 4, 5, 6
    seven = [0.9, 0.1, 0.5, 0.3, 0.2, 0.4, 100.0]  # int(1.75) = 1 cut from each end
    assert iqm(seven) == pytest.approx(_rliable_iqm(seven)) == pytest.approx(np.mean([0.2, 0.3, 0.4, 0.5, 0.9]))
    rng = np.random.default_rng(3)
    for n in range(1, 23):
        values = rng.lognormal(size=n)
        assert iqm(values) == pytest.approx(_rliable_iqm(values), rel=1e-12)
        assert iqm(values) == pytest.approx(stats.trim_mean(values, 0.25), rel=1e-12)
    rows = rng.lognormal(size=(4, 9))
    assert iqm(rows, axis=1) == pytest.approx(stats.trim_mean(rows, 0.25, axis=1), rel=1e-12)


def test_probability_of_improvement_is_rliables_with_lower_better_and_ties_as_half():
    candidate, baseline = [0.1, 0.2, 0.2, 0.5, 0.4], [0.2, 0.3, 0.1, 0.6, 0.4]
    # lower is better: P(candidate < baseline) is rliable's P(-candidate > -baseline)
    expected = _rliable_probability_of_improvement([-v for v in candidate], [-v for v in baseline])
    assert prob_improvement(candidate, baseline) == pytest.approx(expected)
    u = stats.mannwhitneyu(baseline, candidate).statistic  # U counts baseline > candidate, ties 1/2
    assert prob_improvement(candidate, baseline) == pytest.approx(u / 25)
    assert prob_improvement([1.0, 1.0], [1.0, 1.0]) == 0.5 and prob_improvement([], [1.0]) is None


def test_the_bootstrap_keeps_each_task_s_runs_within_the_task():
    # stratified: every resample holds four runs of each task, so the mean over all eight is always 0.5;
    # a bootstrap over the pooled runs would vary
    low, high = stratified_bootstrap_ci([[0.0] * 4, [1.0] * 4], lambda s: s.mean(axis=1))
    assert (low, high) == (0.5, 0.5)


def test_the_bootstrap_interval_is_numpys_percentile_of_the_resamples_statistic():
    rng = np.random.default_rng(4)
    for tasks in ([rng.normal(size=5)], [rng.normal(size=7), np.round(rng.normal(size=3), 1)], [[2.0] * 6]):
        expected = np.percentile(stratified_resamples(tasks).mean(axis=1), [2.5, 97.5])
        assert stratified_bootstrap_ci(tasks, lambda s: s.mean(axis=1)) == pytest.approx(tuple(expected), rel=1e-12)


def test_robust_aggregates_agree_with_scipys_percentile_bootstrap():
    values = np.random.default_rng(7).lognormal(sigma=1.0, size=9)
    result = robust_aggregates(values)
    assert result.n == 9 and result.median == np.median(values) and result.iqm == pytest.approx(_rliable_iqm(values))
    spread = values.max() - values.min()
    for statistic, low, high in [
        (np.median, result.median_ci_low, result.median_ci_high),
        (lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), result.iqm_ci_low, result.iqm_ci_high),
    ]:
        reference = stats.bootstrap(
            (values,), statistic, method="percentile", n_resamples=10_000, random_state=11
        ).confidence_interval
        # two Monte Carlo estimates of the same percentiles
        assert (low, high) == pytest.approx((reference.low, reference.high), abs=0.03 * spread)
        assert values.min() <= low <= high <= values.max()
    assert robust_aggregates(values) == result  # the generator's seed is fixed
    # the sorted-once shortcut gives what the generic bootstrap gives on the same resamples
    median_ci = stratified_bootstrap_ci([values], lambda s: np.median(s, axis=1))
    iqm_ci = stratified_bootstrap_ci([values], lambda s: iqm(s, axis=1))
    assert (result.median_ci_low, result.median_ci_high) == pytest.approx(median_ci, rel=1e-12)
    assert (result.iqm_ci_low, result.iqm_ci_high) == pytest.approx(iqm_ci, rel=1e-12)
    assert robust_aggregates(values[:4]) is None


def test_paired_probability_of_improvement_interval_resamples_seeds_with_their_pairs():
    rng = np.random.default_rng(5)
    baseline = rng.lognormal(size=8)
    candidate = baseline * rng.lognormal(-0.3, 0.3, size=8)  # correlated with the baseline through the seed
    low, high = paired_prob_improvement_ci(candidate, baseline)
    estimates = []
    for _ in range(4000):  # the same bootstrap, a pair at a time
        picks = rng.integers(0, 8, 8)
        estimates.append(prob_improvement(candidate[picks], baseline[picks]))
    assert (low, high) == pytest.approx(tuple(np.percentile(estimates, [2.5, 97.5])), abs=0.04)
    assert low <= prob_improvement(candidate, baseline) <= high
    assert paired_prob_improvement_ci(candidate[:4], baseline[:4]) is None


# --- Holm against statsmodels ------------------------------------------------------------------


def test_holm_is_statsmodels_multipletests_and_skips_missing_p_values():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(2)
    for m in (1, 2, 3, 7, 12, 30):
        # small p-values, ties (rounded) and tests that could not be made (None)
        pvalues = [None if u < 0.1 else round(float(p), 2) for u, p in zip(rng.random(m), rng.beta(0.3, 1, m))]
        adjusted = holm(pvalues)
        assert [p is None for p in adjusted] == [p is None for p in pvalues]
        present = [p for p in pvalues if p is not None]
        if present:
            expected = multipletests(present, method="holm")[1]
            assert [p for p in adjusted if p is not None] == pytest.approx(list(expected), abs=1e-12)


def test_holm_by_hand():
    # sorted: 0.005 (×4), 0.01 (×3), 0.03 (×2), 0.04 (×1), each at least the one before
    assert holm([0.01, None, 0.04, 0.03, 0.005]) == pytest.approx([0.03, None, 0.06, 0.06, 0.02])
