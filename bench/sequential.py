"""Adaptive seeding's sequential test (analysis.sequential) simulated at length: 100,000 comparisons per
design, paired differences N(Δ, 1). Under the null (Δ = 0) the rate of "better" or "worse"; at Δ equal to
the equivalence margin the rate of "equivalent"; under Δ = 0.7 the power and the mean seeds taken, beside
the seeds a fixed-size two-sided t-test needs for the same power (noncentral t). The tests run 2,000."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy import stats

from analysis.sequential import CALIBRATION_TRIALS, Design, Spending, run_looks
from bench.common import Result

TRIALS = 100_000
ALPHA = 0.05
SHIFT = 0.7
MARGIN = 0.5
#: (min, max, round, spending)
DESIGNS: list[tuple[int, int, int, Spending]] = [
    (3, 30, 3, "obrien_fleming"),
    (2, 20, 1, "obrien_fleming"),
    (3, 30, 3, "pocock"),
    (5, 50, 5, "obrien_fleming"),
]


def _fixed_seeds(power: float) -> int:
    return next(
        n for n in range(2, 1000) if stats.nct.sf(stats.t.isf(ALPHA / 2, n - 1), n - 1, SHIFT * math.sqrt(n)) >= power
    )


def run() -> Iterator[Result]:
    rng = np.random.default_rng(0)
    for low, high, step, spending in DESIGNS:
        name = f"sequential {low}..{high} by {step}, {spending}"
        design = Design.of(low, high, step, ALPHA, spending, 0.0)
        null = run_looks(rng.standard_normal((TRIALS, high)), design)
        rate = float((null.code > 0).mean())
        # this simulation's error and the calibration's (analysis.sequential.calibrated_alpha)
        error = math.sqrt(ALPHA * (1 - ALPHA) * (1 / TRIALS + 1 / CALIBRATION_TRIALS))
        yield Result(
            f"{name}: false positives",
            "rate of 'better' or 'worse' at Δ = 0",
            f"≤ {ALPHA} + 3 × {error:.4f} (sampling)",
            rate,
            rate <= ALPHA + 3 * error,
            {"standard_error": error, "mean_seeds": float(null.n.mean()), "level": design.level},
        )
        with_margin = Design.of(low, high, step, ALPHA, spending, MARGIN)
        at_margin = run_looks(rng.standard_normal((TRIALS, high)) + MARGIN, with_margin)
        rate = float((at_margin.code == 3).mean())
        yield Result(
            f"{name}: false equivalence",
            f"rate of 'equivalent' at Δ = margin = {MARGIN}",
            f"≤ {ALPHA}",
            rate,
            rate <= ALPHA,
        )
        shifted = run_looks(rng.standard_normal((TRIALS, high)) + SHIFT, design)
        power = float((shifted.code == 2).mean())
        fixed = _fixed_seeds(power)
        seeds = float(shifted.n.mean())
        yield Result(
            f"{name}: seeds at Δ = {SHIFT}",
            "mean seeds taken / fixed-size seeds for the same power",
            "< 1",
            seeds / fixed,
            seeds < fixed,
            {"power": power, "mean_seeds": seeds, "fixed_seeds": fixed},
        )
