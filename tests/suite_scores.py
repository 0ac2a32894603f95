"""An independent numpy recomputation of a suite's scores from its stored runs (docs/suites.md), shared by the API
and the e2e tests, which read the rows their own way (the database in-process, or HTTP)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: the runs a suite scores (docs/suites.md): those that ended with their evaluations, diverged ones included
SCORED = ("succeeded", "diverged")
#: one run's evaluations: steps, training seconds at each evaluation, and the metric oriented so lower is better
Curve = tuple[np.ndarray, np.ndarray, np.ndarray]


def curve(evals: Iterable[tuple[int, float]], clock: dict[int, float], metric: str) -> Curve:
    """A run's (step, metric value) evaluations timed by its step rows: the clock at step s is the time_s of the
    step row s - 1 (step 0, the initial weights, is at 0 s)."""
    steps, values = zip(*evals)
    sign = -1.0 if metric == "val_accuracy" else 1.0
    return (
        np.array(steps),
        np.array([0.0 if s == 0 else clock[s - 1] for s in steps]),
        sign * np.array(values, dtype=float),
    )


def first_hits(curves: dict[str, dict[int, Curve]], steps: int, wall_s: float) -> dict[str, tuple[float, float]]:
    """One workload's median over seeds of the first step and second each label reaches the target, the best
    value the worst seed of the best baseline reaches within the budget (inf: not reached)."""
    ok = {k: {s: (st <= steps) & (t <= wall_s) for s, (st, t, _) in v.items()} for k, v in curves.items()}
    worst = [max(v[s][2][ok[b][s]].min() for s in v) for b, v in curves.items() if b.endswith("(baseline)")]
    goal = min(worst)
    firsts = {}
    for k, v in curves.items():
        hit_steps, hit_secs = [], []
        for s, (st, t, val) in v.items():
            hit = np.flatnonzero(ok[k][s] & (val <= goal))
            hit_steps.append(st[hit[0]] if len(hit) else np.inf)
            hit_secs.append(t[hit[0]] if len(hit) else np.inf)
        firsts[k] = (float(np.median(hit_steps)), float(np.median(hit_secs)))
    return firsts


def scores(per_workload: list[dict[str, tuple[float, float]]], tau_max: float) -> tuple[dict, dict]:
    """Each label's score by steps and by seconds: the area under its performance profile on [1, tau_max],
    normalised, by the trapezoid rule on a fine grid; a workload a label has not run counts as not reached."""
    labels = sorted({k for w in per_workload for k in w})
    out = []
    for clock in (0, 1):
        t = np.array([[w.get(k, (np.inf, np.inf))[clock] for w in per_workload] for k in labels])
        best = t.min(axis=0)
        r = np.where(np.isfinite(best), t / np.where(best > 0, best, 1.0), np.inf)
        r = np.where((best == 0) & (t == 0), 1.0, np.where(best == 0, np.inf, r))
        grid = np.linspace(1, tau_max, 30_001)
        rho = (r[:, None, :] <= grid[None, :, None]).mean(axis=2)
        out.append(dict(zip(labels, np.trapezoid(rho, grid, axis=1) / (tau_max - 1))))
    return out[0], out[1]
