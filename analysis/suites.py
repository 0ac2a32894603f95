"""Suite scores from evaluation curves (docs/suites.md): targets set by the baselines, time-to-target,
the Dolan–Moré performance profile and the score, the normalised area under it up to tau_max. Pure numpy.

Values are oriented so that lower is better (an accuracy is negated) before any comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluations:
    """One workload's evaluations, a row per (run, evaluation), sorted by run then step. ``run`` indexes
    ``keys`` and ``seeds`` (one entry per run): which optimizer setting and seed it was."""

    run: np.ndarray
    step: np.ndarray
    time_s: np.ndarray
    value: np.ndarray
    keys: Sequence[str]
    seeds: Sequence[int]


@dataclass(frozen=True)
class Reached:
    """An optimizer's time-to-target on a workload: medians over its seeds (inf: not reached on most)."""

    steps: float
    seconds: float
    seeds: int
    reached_seeds: int


def oriented(values: np.ndarray, direction: str) -> np.ndarray:
    """Lower is better: a metric to maximise is negated."""
    return -values if direction == "max" else values


def _within(evals: Evaluations, steps: int, wall_s: float) -> np.ndarray:
    return (evals.step <= steps) & (evals.time_s <= wall_s) & np.isfinite(evals.value)


def _distinct_runs(evals: Evaluations) -> dict[str, list[int]]:
    """Each key's runs, one per seed (the first stored: a reused run repeats its source's result)."""
    runs: dict[str, dict[int, int]] = {}
    for index, (key, seed) in enumerate(zip(evals.keys, evals.seeds)):
        runs.setdefault(key, {}).setdefault(seed, index)
    return {key: list(by_seed.values()) for key, by_seed in runs.items()}


def target(evals: Evaluations, baselines: Sequence[str], steps: int, wall_s: float) -> float | None:
    """The best (oriented) value that some baseline reaches on every one of its seeds within the budget:
    per run its best value within the budget, per baseline the worst of those over its seeds, and the best
    over the baselines. None when no baseline has a finite value within the budget."""
    keep = _within(evals, steps, wall_s)
    best = np.full(len(evals.keys), np.inf)
    np.minimum.at(best, evals.run[keep], evals.value[keep])
    runs = _distinct_runs(evals)
    worst = [best[runs[key]].max() for key in baselines if key in runs]
    finite = [w for w in worst if np.isfinite(w)]
    return float(min(finite)) if finite else None


def time_to_target(evals: Evaluations, goal: float | None, steps: int, wall_s: float) -> dict[str, Reached]:
    """Per key, the median over its seeds of the first evaluation (step and seconds) at or below ``goal``
    within the budget; a seed that never reaches it counts as infinite."""
    first_step = np.full(len(evals.keys), np.inf)
    first_time = np.full(len(evals.keys), np.inf)
    if goal is not None:
        reached = _within(evals, steps, wall_s) & (evals.value <= goal)
        runs, first = np.unique(evals.run[reached], return_index=True)
        rows = np.flatnonzero(reached)[first]
        first_step[runs], first_time[runs] = evals.step[rows], evals.time_s[rows]
    out = {}
    for key, indices in _distinct_runs(evals).items():
        out[key] = Reached(
            steps=float(np.median(first_step[indices])),
            seconds=float(np.median(first_time[indices])),
            seeds=len(indices),
            reached_seeds=int(np.isfinite(first_step[indices]).sum()),
        )
    return out


def ratios(times: np.ndarray) -> np.ndarray:
    """Performance ratios of a [optimizers, workloads] array of times (inf: not reached or not run): each
    time over the workload's best; inf where not reached, and for every optimizer where no one reached it."""
    best = np.min(times, axis=0, initial=np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = times / best
    out[:, ~np.isfinite(best)] = np.inf
    # a best time of 0 (the target met at the first evaluation) is matched by the optimizers also at 0
    zero = best == 0
    out[:, zero] = np.where(times[:, zero] == 0, 1.0, np.inf)
    return out


def profile(times: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rho[o, k]: the fraction of workloads optimizer o reaches within taus[k] × the best time."""
    r = ratios(times)
    return (r[:, None, :] <= taus[None, :, None]).mean(axis=2)


def profile_steps(times: np.ndarray, tau_max: float) -> list[list[tuple[float, float]]]:
    """Each optimizer's profile as the corners of its step function on [1, tau_max]: (tau, rho) pairs."""
    r = ratios(times)
    out = []
    for row in r:
        taus = np.unique(np.concatenate([[1.0, tau_max], row[row <= tau_max]]))
        out.append([(float(t), float(rho)) for t, rho in zip(taus, (row[None, :] <= taus[:, None]).mean(axis=1))])
    return out


def scores(times: np.ndarray, tau_max: float) -> np.ndarray:
    """The area under each optimizer's profile from 1 to tau_max over (tau_max - 1): 1 when it is the
    fastest everywhere, 0 when it never comes within tau_max of the best. A step function's integral is
    exact: each workload adds (tau_max - ratio) from where it is reached on."""
    r = ratios(times)
    return np.clip(tau_max - r, 0.0, tau_max - 1.0).mean(axis=1) / (tau_max - 1.0)
