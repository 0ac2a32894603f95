"""Adaptive seeding's sequential test: a group-sequential paired t-test with Lan–DeMets alpha spending,
read as repeated confidence intervals (Jennison & Turnbull 1989; 2000, ch. 9 and 19).

Each pair (an optimizer setting against the baseline) is looked at after ``looks[k]`` seeds: min, then
every ``round`` seeds, up to max. At look k the repeated confidence interval for the mean paired
difference is mean ± t*_k · s/√n, where t*_k is the Student-t quantile (n - 1 degrees of freedom) with
the same tail probability as the group-sequential z boundary c_k; the c_k spend alpha over the
information fractions n_k / max, at a level calibrated so that the t boundaries spend the pair's alpha
exactly (``calibrated_alpha``). Whatever the stopping rule, the intervals cover the true mean difference
at every look at once with probability 1 - alpha (for normal differences), so each decision read off
them errs with probability ≤ alpha: "better" (the interval lies below 0), "worse" (above 0),
"equivalent" (inside ±margin).
Pure numpy and scipy; docs/statistics.md describes it for users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

Spending = Literal["obrien_fleming", "pocock"]
Scale = Literal["log", "raw"]
BETTER, WORSE, EQUIVALENT, UNDECIDED = "better", "worse", "equivalent", "undecided"
#: decision codes of ``run_looks``: 0 is "not decided yet"
CODES = {1: BETTER, 2: WORSE, 3: EQUIVALENT}
#: the density of the score process is carried on this many grid points per look
_GRID = 401
#: beyond this many standard deviations the density is below 1e-17
_TAIL_SD = 9.0


def spent(alpha: float, fraction: float, spending: Spending) -> float:
    """Lan–DeMets spending functions: the two-sided alpha spent by information fraction ``fraction``, α/2
    on each side as gsDesign and ldbounds spend it. O'Brien–Fleming type, per side 2 - 2Φ(z_{1-α/4}/√t);
    Pocock type α ln(1 + (e - 1)t)."""
    from scipy import special

    if fraction <= 0:
        return 0.0
    if fraction >= 1:
        return alpha
    if spending == "obrien_fleming":
        return float(4 * special.ndtr(special.ndtri(alpha / 4) / math.sqrt(fraction)))
    return alpha * math.log1p((math.e - 1) * fraction)


def look_sizes(min_seeds: int, max_seeds: int, round_size: int) -> tuple[int, ...]:
    """The seeds each pair has at its looks: min, min + round, ..., max (the last round may be shorter)."""
    return tuple(range(min_seeds, max_seeds, round_size)) + (max_seeds,)


@lru_cache(maxsize=256)
def z_boundaries(alpha: float, fractions: tuple[float, ...], spending: Spending) -> tuple[float, ...]:
    """Two-sided symmetric z boundaries c_k with P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1}, |Z_k| ≥ c_k) equal
    to the alpha spent between looks k - 1 and k, under the null, for Z_k = W(t_k)/√t_k with W a
    Brownian motion in information time. The density of W(t_k) on the continuation region is carried
    look to look by numerical integration (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000,
    ch. 19), Simpson's rule on a fixed grid; each c_k by root finding."""
    from scipy import optimize, special

    boundaries: list[float] = []
    grid = weights = density = None
    previous_t, previous_spent = 0.0, 0.0
    for t in fractions:
        total = spent(alpha, t, spending)
        increment = total - previous_spent
        previous_spent = total
        if grid is None:  # the first look: W(t) is N(0, t)
            c = float(-special.ndtri(increment / 2)) if increment > 0 else math.inf
        else:
            step_sd = math.sqrt(t - previous_t)
            assert weights is not None and density is not None
            mass = weights * density

            def crossing(b: float, mass=mass, grid=grid, step_sd=step_sd) -> float:
                return float(mass @ (special.ndtr((grid - b) / step_sd) + special.ndtr((-b - grid) / step_sd)))

            upper = _TAIL_SD * math.sqrt(t) * 2
            if increment <= 0 or crossing(upper) >= increment:
                c = math.inf if increment <= 0 else upper / math.sqrt(t)
            else:
                c = optimize.brentq(lambda b: crossing(b) - increment, 1e-9, upper, xtol=1e-12) / math.sqrt(t)
        boundaries.append(c)
        half = min(c * math.sqrt(t), _TAIL_SD * math.sqrt(t))
        new_grid = np.linspace(-half, half, _GRID)
        if grid is None:
            density = _normal_pdf(new_grid / math.sqrt(t)) / math.sqrt(t)
        else:
            assert weights is not None and density is not None
            step_sd = math.sqrt(t - previous_t)
            kernel = _normal_pdf((new_grid[:, None] - grid[None, :]) / step_sd) / step_sd
            density = kernel @ (weights * density)
        grid = new_grid
        weights = _simpson_weights(_GRID, grid[1] - grid[0])
        previous_t = t
    return tuple(boundaries)


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _simpson_weights(n: int, h: float) -> np.ndarray:
    weights = np.ones(n)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return weights * h / 3


#: null comparisons simulated to calibrate a design, and the seed of their draws: fixed, so that a design's
#: boundaries are a pure function of its fields
CALIBRATION_TRIALS = 50_000
_CALIBRATION_SEED = 20261206
_CHUNK = 10_000


def _t_boundaries(
    alpha: float, looks: tuple[int, ...], spending: Spending
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The z boundaries at ``alpha`` and the t boundaries with their tail probabilities."""
    from scipy import stats

    z = z_boundaries(alpha, tuple(n / looks[-1] for n in looks), spending)
    return z, tuple(float(stats.t.isf(stats.norm.sf(c), n - 1)) for c, n in zip(z, looks))


@lru_cache(maxsize=256)
def calibrated_alpha(alpha: float, looks: tuple[int, ...], spending: Spending) -> float:
    """The level whose boundaries, as t boundaries, spend ``alpha`` over all the looks. The t version of a
    z boundary has the right level at each look alone, but the looks share their variance estimate, and
    together they cross a little more often than the z boundaries would (about 0.052 to 0.056 for 0.05).
    Under no difference, the t-statistics at the looks of normal differences have one joint law whatever
    the variance, so a fixed simulation of CALIBRATION_TRIALS comparisons finds the level (to about ±0.001
    at 0.05; never above ``alpha``). One look is the t-test, exact as it is."""
    from scipy import optimize

    if len(looks) == 1:
        return alpha
    rng = np.random.default_rng(_CALIBRATION_SEED)
    at = np.array(looks) - 1
    n = np.array(looks, dtype=float)
    pivots = []
    for _ in range(CALIBRATION_TRIALS // _CHUNK):
        x = rng.standard_normal((_CHUNK, looks[-1]))
        sums, squares = np.cumsum(x, axis=1)[:, at], np.cumsum(x * x, axis=1)[:, at]
        mean = sums / n
        pivots.append(np.abs(mean) / np.sqrt((squares - n * mean * mean) / (n - 1) / n))
    pivot = np.concatenate(pivots)

    def excess(log_level: float) -> float:
        _, t = _t_boundaries(math.exp(log_level), looks, spending)
        return float((pivot > np.array(t)).any(axis=1).mean()) - alpha

    if excess(math.log(alpha)) <= 0:
        return alpha
    return math.exp(optimize.brentq(excess, math.log(alpha / 4), math.log(alpha), xtol=1e-3))


@dataclass(frozen=True)
class Design:
    """A pair's sequential design: its looks and their boundaries, at the pair's alpha."""

    looks: tuple[int, ...]
    #: the z boundaries c_k, at ``level``
    z: tuple[float, ...]
    #: the Student-t boundaries t*_k, with the tail probabilities of the c_k at n_k - 1 degrees of freedom
    t: tuple[float, ...]
    #: the difference the interval must stay within, either side, for "equivalent" (0: never)
    margin: float
    #: the pair's alpha, which the t boundaries spend over all the looks
    alpha: float
    #: the level the z boundaries are computed at (calibrated_alpha)
    level: float

    @classmethod
    def of(
        cls, min_seeds: int, max_seeds: int, round_size: int, alpha: float, spending: Spending, margin: float
    ) -> Design:
        looks = look_sizes(min_seeds, max_seeds, round_size)
        level = calibrated_alpha(alpha, looks, spending)
        z, t = _t_boundaries(level, looks, spending)
        return cls(looks, z, t, margin, alpha, level)


@dataclass(frozen=True)
class Looks:
    """``run_looks`` for B pairs at once, each array of length B: the look that decided the pair, or
    its last look so far."""

    #: 0 while undecided, else a key of CODES
    code: np.ndarray
    look: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    statistic: np.ndarray


def run_looks(diffs: np.ndarray, design: Design) -> Looks:
    """The sequential procedure on paired differences ``diffs`` [B, n] (seed order), over every look that
    n seeds reach: per row, the first look whose repeated interval lies below 0 ("better"), above 0
    ("worse") or inside ±margin ("equivalent"). Differences that are all equal give the zero-width
    interval at their value (the limit as s → 0)."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    rows = diffs.shape[0]
    code = np.zeros(rows, dtype=int)
    fields = {name: np.full(rows, np.nan) for name in ("mean", "low", "high", "statistic")}
    look = np.full(rows, -1)
    n = np.zeros(rows, dtype=int)
    for k, size in enumerate(design.looks):
        if size > diffs.shape[1]:
            break
        open_ = code == 0
        sample = diffs[open_, :size]
        mean = sample.mean(axis=1)
        se = sample.std(axis=1, ddof=1) / math.sqrt(size)
        half = design.t[k] * se
        low, high = mean - half, mean + half
        with np.errstate(divide="ignore", invalid="ignore"):
            statistic = np.where(se > 0, mean / se, np.nan)
        decided = np.select([high < 0, low > 0, (low > -design.margin) & (high < design.margin)], [1, 2, 3], default=0)
        for name, value in (("mean", mean), ("low", low), ("high", high), ("statistic", statistic)):
            fields[name][open_] = value
        look[open_], n[open_] = k, size
        code[open_] = decided
    return Looks(code, look, n, **fields)


@dataclass(frozen=True)
class PairDecision:
    """One pair's state after a look: ``done`` when no more seeds will help it."""

    decision: str
    done: bool
    seeds: int
    reason: str | None = None
    look: int | None = None
    scale: Scale | None = None
    mean_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    statistic: float | None = None
    boundary: float | None = None
    z_boundary: float | None = None
    nominal_alpha: float | None = None
    margin: float | None = None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def decide_pair(
    candidate: Sequence[float | None], baseline: Sequence[float | None], design: Design, scale: Scale
) -> PairDecision:
    """The pair's decision from its final losses on matched seeds (both in seed order, None where a run
    has no result): the procedure replayed over every look its seeds reach. A pair with a run that
    diverged or failed, or, on the log scale, a loss ≤ 0, is done undecided: the test has no value for it."""
    seeds = len(candidate)
    values = [(c, b) for c, b in zip(candidate, baseline)]
    if any(c is None or b is None or not (math.isfinite(c) and math.isfinite(b)) for c, b in values):
        return PairDecision(UNDECIDED, True, seeds, reason="a run of the pair diverged or failed")
    pairs = np.array(values, dtype=float).reshape(-1, 2)
    if scale == "log":
        if (pairs <= 0).any():
            return PairDecision(UNDECIDED, True, seeds, reason="a final loss is ≤ 0, which has no log: use scale 'raw'")
        pairs = np.log(pairs)
    result = run_looks((pairs[:, 0] - pairs[:, 1])[None, :], design)
    k = int(result.look[0])
    if k < 0:
        return PairDecision(UNDECIDED, False, seeds)
    code = int(result.code[0])
    last = k == len(design.looks) - 1
    from scipy import stats

    return PairDecision(
        CODES.get(code, UNDECIDED),
        code != 0 or last,
        int(result.n[0]),
        reason="undecided at max" if code == 0 and last else None,
        look=k + 1,
        scale=scale,
        mean_diff=_finite(result.mean[0]),
        ci_low=_finite(result.low[0]),
        ci_high=_finite(result.high[0]),
        statistic=_finite(result.statistic[0]),
        boundary=_finite(design.t[k]),
        z_boundary=_finite(design.z[k]),
        nominal_alpha=float(2 * stats.norm.sf(design.z[k])),
        margin=design.margin,
    )
