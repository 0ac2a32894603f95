"""The statistics of a leaderboard: a mean with its t-interval, intervals that stay in the range of
a positive quantity or a proportion, robust aggregates with bootstrap intervals, paired tests between
two optimizers and Holm's correction across them.

Pure functions of plain sequences of finite floats; the caller decides which runs count
(docs/statistics.md). Where a statistic is undefined (one value, no pairs) it is None, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanCI:
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
    half_width = _t_quantile(confidence, n - 1) * sem
    return MeanCI(n, mean, mean - half_width, mean + half_width)


@lru_cache(maxsize=256)
def _t_quantile(confidence: float, df: int) -> float:
    """t(1 - α/2; df), as scipy.stats.t.interval uses it; a summary asks for the same few many times."""
    from scipy import stats  # here, not at import: scipy.stats alone costs the worker ~0.9 s to start

    return float(stats.t.ppf((1 + confidence) / 2, df))


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


# --- intervals that respect the range of the quantity -------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided interval; ``method`` says how the interval was made:

    - ``log_t``: every value is positive; the geometric mean exp(mean log x) and the t-interval of
      mean log x, exponentiated (so the interval is positive and multiplicative: x̄_g ×/÷ factor);
    - ``t_clipped``: the arithmetic mean and its t-interval, clipped to the range the quantity cannot
      leave (at 0 for a non-negative one with a value of exactly 0; to [0, 1] for a proportion). The
      mean itself lies in that range, so clipping never removes it: coverage is unchanged;
    - ``t``: the arithmetic mean and its t-interval: the values include negative numbers, so the
      quantity is not positive after all (a function unbounded below);
    - ``bootstrap``: a percentile bootstrap interval (``stratified_bootstrap_ci``).

    ``low`` and ``high`` are None below two values, ``estimate`` and ``method`` without any."""

    estimate: float | None
    low: float | None
    high: float | None
    method: str | None


def positive_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """For a quantity that is positive by nature (a loss, a perplexity, a time): on the log scale
    while every value is positive, else the arithmetic interval (clipped at 0 unless a value is negative)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Interval(None, None, None, None)
    if (x > 0).all():
        logs = mean_ci(np.log(x), confidence)
        center = math.exp(float(np.log(x).mean()))
        if logs.ci_low is None or logs.ci_high is None:
            return Interval(center, None, None, "log_t")
        return Interval(center, math.exp(logs.ci_low), math.exp(logs.ci_high), "log_t")
    return _clipped(x, 0.0 if (x >= 0).all() else -math.inf, math.inf, confidence)


def proportion_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """For per-seed proportions in [0, 1] (accuracies): the mean and its t-interval clipped to [0, 1].
    (A Wilson interval needs the count of examples behind each accuracy, and a logit-scale interval
    is undefined at accuracies of exactly 0 or 1, which small problems reach.)"""
    return _clipped(np.asarray(values, dtype=float), 0.0, 1.0, confidence)


def _clipped(x: np.ndarray, floor: float, ceiling: float, confidence: float) -> Interval:
    plain = mean_ci(x, confidence)
    method = "t" if math.isinf(floor) and math.isinf(ceiling) else "t_clipped"
    if plain.ci_low is None or plain.ci_high is None:
        return Interval(plain.mean, None, None, method if plain.n else None)
    return Interval(plain.mean, max(plain.ci_low, floor), min(plain.ci_high, ceiling), method)


# --- robust aggregates (rliable: Agarwal et al. 2021) --------------------------------------------

#: fewer seeds make a median or an interquartile mean little more than a mean of one or two values
ROBUST_MIN_SEEDS = 5
#: resamples per bootstrap interval: enough for a 95 % percentile interval (Efron & Tibshirani 1993
#: advise 1,000 or more), few enough for the summary of a 100-setting sweep, which the page polls while
#: it runs, to stay well under a second (rliable's default of 50,000 is for a paper's figures)
BOOTSTRAP_REPS = 2_000
#: the bootstrap's generator starts here on every call, so a summary reads the same every time
BOOTSTRAP_SEED = 0


def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> Any:
    """The interquartile mean along ``axis``: the mean of the middle 50 %, as
    ``scipy.stats.trim_mean(x, 0.25)``, which rliable's ``aggregate_iqm`` calls, computes it: ⌊0.25 n⌋
    values cut from each end of the sorted values, the rest averaged (numpy here: scipy's call costs
    more than the sort on a few seeds)."""
    ordered = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = ordered.shape[axis]
    cut = int(0.25 * n)
    return np.take(ordered, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _percentile_interval(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    """np.percentile's default (linear) interpolation at the two tails, by a partial sort: the same
    values at a fraction of its cost, which a summary pays for every setting."""
    tail = (1 - confidence) / 2
    position = (len(estimates) - 1) * np.array([tail, 1 - tail])
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, len(estimates) - 1)
    ordered = np.partition(estimates, np.unique(np.concatenate([below, above])))
    low, high = ordered[below] + (position - below) * (ordered[above] - ordered[below])
    return float(low), float(high)


def stratified_resamples(
    tasks: Sequence[Sequence[float] | np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """``reps`` stratified bootstrap samples, as rliable's StratifiedBootstrap makes them: each task's
    runs resampled with replacement within the task, the tasks side by side: an array (reps, Σ runs)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [np.asarray(runs, dtype=float)[rng.integers(0, len(runs), (reps, len(runs)))] for runs in tasks], axis=1
    )


@lru_cache(maxsize=64)
def _seed_counts(n: int) -> np.ndarray:
    """How often each of n seeds is drawn in each of BOOTSTRAP_REPS resamples with replacement: the
    same draws for every pair of n seeds (the generator's seed is fixed), so made once per n."""
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (BOOTSTRAP_REPS, n))
    rows = n * np.arange(BOOTSTRAP_REPS)[:, None]
    counts = np.bincount((picks + rows).ravel(), minlength=BOOTSTRAP_REPS * n).reshape(BOOTSTRAP_REPS, n)
    counts = counts.astype(float)
    counts.flags.writeable = False
    return counts


def stratified_bootstrap_ci(
    tasks: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[[np.ndarray], np.ndarray],
    confidence: float = CONFIDENCE,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The percentile interval of ``statistic`` (an array (reps, runs) to one value per row) over
    stratified bootstrap samples."""
    return _percentile_interval(statistic(stratified_resamples(tasks, reps, seed)), confidence)


@dataclass(frozen=True)
class Robust:
    n: int
    median: float
    median_ci_low: float
    median_ci_high: float
    iqm: float
    iqm_ci_low: float
    iqm_ci_high: float


def robust_aggregates(values: Sequence[float], confidence: float = CONFIDENCE) -> Robust | None:
    """Median and interquartile mean over the seeds, each with its stratified bootstrap percentile
    interval (one task: the seeds of one setting); None below ROBUST_MIN_SEEDS values. Both read the
    same resamples, sorted once."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < ROBUST_MIN_SEEDS:
        return None
    ordered = np.sort(stratified_resamples([x]), axis=1)
    medians = (ordered[:, (n - 1) // 2] + ordered[:, n // 2]) / 2
    cut = int(0.25 * n)  # iqm's cut
    iqms = ordered[:, cut : n - cut].mean(axis=1)
    return Robust(
        n,
        float(np.median(x)),
        *_percentile_interval(medians, confidence),
        float(iqm(x)),
        *_percentile_interval(iqms, confidence),
    )


def prob_improvement(candidate: Sequence[float], baseline: Sequence[float]) -> float | None:
    """P(X < Y), lower being better: the chance that a candidate run ends below a baseline run, over
    every (candidate, baseline) pair of runs, a tie counting 1/2 (rliable's probability_of_improvement,
    the Mann–Whitney U statistic over m·n, with the sign turned for losses)."""
    x, y = np.asarray(candidate, dtype=float)[:, None], np.asarray(baseline, dtype=float)[None, :]
    if x.size == 0 or y.size == 0:
        return None
    return float(np.mean((x < y) + 0.5 * (x == y)))


def paired_prob_improvement_ci(
    candidate: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of ``prob_improvement`` on matched seeds: seeds are resampled
    with replacement and each keeps its pair, so the pairing survives; None below ROBUST_MIN_SEEDS pairs."""
    x, y = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    n = len(x)
    if n < ROBUST_MIN_SEEDS:
        return None
    # a resample is how often it drew each seed, c; its estimate is c·K·c / n², K[a, b] comparing
    # candidate seed a with baseline seed b: reps × n² work without a reps × n × n array
    counts = _seed_counts(n)
    wins = (x[:, None] < y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return _percentile_interval(((counts @ wins) * counts).sum(axis=1) / n**2, confidence)


# --- many comparisons ----------------------------------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given: sorted ascending, the i-th
    smallest of the m tests becomes max over j ≤ i of min(1, (m − j + 1) · p₍ⱼ₎). Rejecting where the
    adjusted value is below α keeps the chance of any false rejection among the m below α. A None (a
    test that could not be made) stays None and does not count in m."""
    present = {i: p for i, p in enumerate(pvalues) if p is not None}
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(present.items(), key=lambda item: item[1])):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted
