"""Adaptive seeding's sequential test (analysis.sequential): its boundaries against published tables
and against scipy's multivariate normal, its decisions on hand-made pairs, and a simulation of the
whole procedure: the false-positive rate under the null stays within alpha plus sampling error, and
under a real difference it stops earlier on average than a fixed-size test of the same power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.sequential import Design, decide_pair, look_sizes, run_looks, spent, z_boundaries

FIVE = (0.2, 0.4, 0.6, 0.8, 1.0)


def test_boundaries_match_the_published_lan_demets_tables():
    # two-sided alpha 0.05, five equally spaced looks: ldbounds (Casper & Perez) and gsDesign give
    # O'Brien-Fleming type 4.8769 3.3569 2.6803 2.2898 2.0310, Pocock type 2.4380 2.4268 2.4101 2.3966 2.3859
    assert z_boundaries(0.05, FIVE, "obrien_fleming") == pytest.approx(
        [4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-4
    )
    assert z_boundaries(0.05, FIVE, "pocock") == pytest.approx([2.4380, 2.4268, 2.4101, 2.3966, 2.3859], abs=2e-4)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_each_look_spends_what_the_spending_function_says(spending):
    """P(|Z_j| ≥ c_j for some j ≤ k) under the null, from scipy's multivariate normal CDF of
    (Z_1, ..., Z_k), whose correlations are √(t_i / t_j), is the alpha spent by t_k."""
    fractions = (0.15, 0.4, 0.7, 1.0)
    alpha = 0.1
    c = z_boundaries(alpha, fractions, spending)
    t = np.array(fractions)
    for k in range(1, len(t) + 1):
        corr = np.sqrt(np.minimum.outer(t[:k], t[:k]) / np.maximum.outer(t[:k], t[:k]))
        inside = stats.multivariate_normal(np.zeros(k), corr).cdf(np.array(c[:k]), lower_limit=-np.array(c[:k]))
        assert 1 - inside == pytest.approx(spent(alpha, fractions[k - 1], spending), abs=2e-5)


def test_looks_and_t_boundaries():
    assert look_sizes(3, 30, 3) == (3, 6, 9, 12, 15, 18, 21, 24, 27, 30)
    assert look_sizes(3, 10, 4) == (3, 7, 10)
    assert look_sizes(5, 5, 2) == (5,)
    design = Design.of(3, 10, 4, 0.05, "pocock", 0.1)
    # the t boundary has the z boundary's tail probability at n - 1 degrees of freedom
    for z, t, n in zip(design.z, design.t, design.looks):
        assert stats.t.sf(t, n - 1) == pytest.approx(stats.norm.sf(z), rel=1e-9)
    # one look is the fixed-size t-test, exact without calibration
    alone = Design.of(5, 5, 1, 0.05, "obrien_fleming", 0)
    assert alone.level == 0.05 and alone.t[0] == pytest.approx(stats.t.isf(0.025, 4))
    # several: the t boundaries share the variance estimate and would spend more than alpha at alpha itself
    assert 0.05 / 4 < design.level < 0.05 and design.z == z_boundaries(design.level, (0.3, 0.7, 1.0), "pocock")


def test_decisions_of_hand_made_pairs():
    design = Design.of(3, 9, 3, 0.05, "obrien_fleming", math.log1p(0.05))
    base = [1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    # halves the loss on every seed: zero spread, the interval is the point ln(1/2)
    better = decide_pair([b / 2 for b in base[:3]], base[:3], design, "log")
    assert (better.decision, better.done, better.seeds, better.look) == ("better", True, 3, 1)
    assert better.ci_low == better.ci_high == pytest.approx(math.log(0.5))
    same = decide_pair(base[:3], base[:3], design, "log")
    assert (same.decision, same.done) == ("equivalent", True)
    # noisy: at 3 seeds the interval is as wide as t*_1 = t_2(sf(c_1)) makes it; not decided, more seeds wanted
    noisy = [1.1, 1.8, 4.9]
    open_ = decide_pair(noisy, base[:3], design, "log")
    diffs = np.log(noisy) - np.log(base[:3])
    half = design.t[0] * diffs.std(ddof=1) / math.sqrt(3)
    assert (open_.decision, open_.done, open_.reason) == ("undecided", False, None)
    assert (open_.ci_low, open_.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert open_.statistic == pytest.approx(stats.ttest_1samp(diffs, 0).statistic)
    assert open_.nominal_alpha == pytest.approx(2 * stats.norm.sf(design.z[0]))
    # at max undecided: done
    last = decide_pair([1.1, 1.8, 4.9, 0.9, 2.3, 3.5, 1.0, 2.0, 4.0], base + base[:3], design, "log")
    assert last.look == 3 and last.seeds == 9 and last.done and last.reason == "undecided at max"
    # what the test cannot take ends the pair undecided, with the reason
    assert decide_pair([0.0, 1.0, 1.0], base[:3], design, "log").reason.startswith("a final loss is ≤ 0")
    assert decide_pair([0.0, 1.0, 1.0], base[:3], design, "raw").reason is None
    assert decide_pair([math.inf, 1.0, 1.0], base[:3], design, "raw").reason == "a run of the pair diverged or failed"
    assert decide_pair([None, 1.0, 1.0], base[:3], design, "raw").done


def test_simulated_error_rates_and_expected_seeds():
    """2,000 simulated comparisons per scenario, paired differences N(Δ, 1), looks at 3, 6, ..., 30 seeds."""
    rng = np.random.default_rng(20261206)
    alpha, trials, margin = 0.05, 2000, 0.5
    sampling = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    design = Design.of(3, 30, 3, alpha, "obrien_fleming", 0.0)

    null = run_looks(rng.standard_normal((trials, 30)), design)
    assert (null.code > 0).mean() <= alpha + sampling  # "better" or "worse" where there is no difference

    with_margin = Design.of(3, 30, 3, alpha, "obrien_fleming", margin)
    at_margin = run_looks(rng.standard_normal((trials, 30)) + margin, with_margin)
    assert (at_margin.code == 3).mean() <= alpha + sampling  # "equivalent" where the difference is the margin

    shifted = run_looks(rng.standard_normal((trials, 30)) + 0.7, design)
    power = (shifted.code == 2).mean()
    assert (shifted.code == 1).mean() <= alpha  # the wrong sign
    # the fixed-size two-sided t-test with at least this power: noncentral t
    fixed = next(
        n for n in range(2, 200) if stats.nct.sf(stats.t.isf(alpha / 2, n - 1), n - 1, 0.7 * math.sqrt(n)) >= power
    )
    assert power > 0.8 and shifted.n.mean() < 0.8 * fixed
