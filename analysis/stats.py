"""The statistics of a leaderboard: a mean with its t-interval, and paired tests between two optimizers.

Pure functions of plain sequences of finite floats; the caller decides which runs count
(docs/statistics.md). Where a statistic is undefined (one value, no pairs) it is None, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
#: differences that agree to within this many units of rounding of the values compared are equal:
#: what sets them apart is floating-point error, not variation between seeds
_ROUNDING = 16 * np.finfo(float).eps


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float | None
    #: the two-sided t-interval for the mean; None below two values
    ci_low: float | None
    ci_high: float | None


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI:
    """The mean and its Student-t interval: mean ± t(1 - α/2, n - 1) · s / √n, with s the sample
    standard deviation. Values that are all equal give the zero-width interval [mean, mean], the
    limit as s → 0 (scipy would answer NaN there)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return MeanCI(0, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(1, mean, None, None)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0:
        return MeanCI(n, mean, mean, mean)
    from scipy import stats  # here, not at import: scipy.stats alone costs the worker ~0.9 s to start

    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return MeanCI(n, mean, float(low), float(high))


@dataclass(frozen=True)
class PairedTest:
    n_pairs: int
    #: mean of (candidate - baseline) over the pairs: negative means the candidate ends lower
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    #: paired t-test (scipy.stats.ttest_rel), two-sided: is the mean difference zero?
    t_pvalue: float | None
    #: Wilcoxon signed-rank test (scipy.stats.wilcoxon), two-sided: are the differences symmetric about zero?
    wilcoxon_pvalue: float | None


def paired_test(candidate: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """Compare two optimizers on matched seeds: ``candidate[i]`` and ``baseline[i]`` share a seed.

    The t-test needs two pairs and differences that are not all equal (otherwise its statistic is 0/0
    or ±∞: the difference is deterministic and ``mean_diff`` says everything). The Wilcoxon test
    needs two pairs and a difference that is not zero; scipy drops zero differences and uses the
    exact distribution for small samples (by permutation, over all 2^n sign flips, where differences
    tie). Equal and zero are up to floating-point rounding."""
    if len(candidate) != len(baseline):
        raise ValueError(f"{len(candidate)} candidate values but {len(baseline)} baseline values")
    candidates, baselines = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    diffs = candidates - baselines
    interval = mean_ci(diffs, confidence)
    t_pvalue = wilcoxon_pvalue = None
    noise = _ROUNDING * max(np.abs(candidates).max(initial=0), np.abs(baselines).max(initial=0))
    if len(diffs) >= 2 and np.abs(diffs).max() > noise:
        from scipy import stats

        if np.ptp(diffs) > noise:
            t_pvalue = float(stats.ttest_rel(candidates, baselines).pvalue)
            wilcoxon_pvalue = float(stats.wilcoxon(diffs).pvalue)
        else:
            # one difference n times, so one sign: exactly 2/2^n, which scipy's permutation test for
            # tied differences also finds, after seconds from n = 10 on
            wilcoxon_pvalue = 2.0 / 2 ** len(diffs)
    return PairedTest(interval.n, interval.mean, interval.ci_low, interval.ci_high, t_pvalue, wilcoxon_pvalue)
