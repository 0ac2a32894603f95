"""A comparison's leaderboard, its paired comparisons against a baseline, and its hyperparameter
sensitivity. What each figure means, and why: docs/statistics.md.

Pure computation: run columns come as objects (one per run); what derives from step and eval rows
comes from a RowFigures (db.figures aggregates it in SQL, one GROUP BY over all the comparison's
finished runs per figure, never a Python loop over raw rows). A reused run's rows live under the run
it reused.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from analysis.stats import (
    Interval,
    holm,
    paired_prob_improvement_ci,
    paired_test,
    positive_ci,
    prob_improvement,
    proportion_ci,
    robust_aggregates,
)
from optibench.status import TRAINED_RUN, RunStatus


class Run(Protocol):
    """What the statistics read of a run (db.models.Run has it)."""

    id: str
    reused_from_id: str | None
    label: str
    entry_index: int
    seed: int
    phase: str | None
    status: str
    #: 'ensemble': trained as a member of a vectorized ensemble, whose wall time it shares (docs/vectorized.md)
    execution: str | None
    optimizer_name: str
    optimizer_params: dict[str, Any]
    sweep_values: dict[str, Any] | None
    steps_total: int
    steps_done: int
    final_loss: float | None
    best_loss: float | None
    wall_time_s: float | None


class Comparison(Protocol):
    """What the statistics read of a comparison (db.models.Comparison has it)."""

    id: str
    status: str
    spec: dict[str, Any]

    @property
    def runs(self) -> Sequence[Run]: ...


#: in the log-loss area a loss below this counts as this: a loss of exactly 0 would make the area -inf
LOSS_FLOOR = 1e-12
METRIC = "final_loss"
FINISHED = TRAINED_RUN
#: the leaderboard is ranked again at these fractions of each run's planned steps
BUDGETS = (0.25, 0.5, 0.75, 1.0)
#: the fraction of a run's steps whose mean step loss stands for its loss at an early budget
BUDGET_WINDOW = 0.01
ENSEMBLE = "ensemble"
Phase = Literal["chosen", "all"]


class AnalysisInputError(ValueError):
    """A request this comparison cannot answer; ``field`` names the query parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _data_id(run: Run) -> str:
    return run.reused_from_id or run.id


def _score(run: Run) -> float | None:
    """The run's final loss where it counts in the final-loss statistics (it finished with a finite
    final loss), else None."""
    loss = run.final_loss
    return loss if run.status == RunStatus.SUCCEEDED and loss is not None and math.isfinite(loss) else None


def _scored(run: Run) -> bool:
    return _score(run) is not None


def _final_losses(runs: Iterable[Run]) -> list[float]:
    return [loss for run in runs if (loss := _score(run)) is not None]


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _loss_stats(values: Sequence[float]) -> dict[str, Any]:
    """The interval is the geometric mean's, on the log scale, while every loss is positive
    (analysis.stats.positive_ci): ``ci_method`` says which, ``geometric_mean`` is its centre."""
    interval = positive_ci(values)
    return {
        "mean": float(np.mean(values)) if values else None,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "median": float(np.median(values)) if values else None,
        "best": min(values, default=None),
        "worst": max(values, default=None),
        "geometric_mean": interval.estimate if interval.method == "log_t" else None,
        "ci_method": interval.method,
    }


def _interval(values: Sequence[float], of: Callable[[Sequence[float]], Interval]) -> dict[str, Any]:
    """``of``'s interval over the values, none where one is not finite (an infinite validation loss)."""
    finite = all(math.isfinite(v) for v in values)
    return asdict(of(values) if finite else Interval(None, None, None, None))


# --- what the database computes from step and eval rows ----------------------------------------


@dataclass(frozen=True)
class StepFigures:
    #: mean over the run's finite step losses of log10(max(loss, LOSS_FLOOR))
    auc_log_loss: float | None
    #: the lowest finite step loss
    min_loss: float | None


@dataclass(frozen=True)
class WindowLoss:
    #: the mean of the finite step losses in the window
    mean: float | None
    rows: int
    finite: int


class RowFigures(Protocol):
    """Per-run figures aggregated from step and eval rows (db.figures.RowFigures reads them in SQL)."""

    def step_figures(self, run_ids: Sequence[str]) -> dict[str, StepFigures]: ...

    def first_reached(self, run_ids: Sequence[str], target: float) -> dict[str, tuple[int, float]]:
        """Per run, the first step whose loss is ≤ ``target`` and its time_s; runs that never reach it are absent."""

    def last_evals(self, run_ids: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
        """Per evaluated run, (val_loss, val_accuracy) of its last evaluation."""

    def window_losses(self, windows: Mapping[str, Sequence[tuple[int, int]]]) -> dict[str, dict[int, WindowLoss]]:
        """Per run, for each of its windows of steps (first, last) by index, what its step rows hold there."""


# --- the leaderboard -----------------------------------------------------------------------------


def _shown_runs(comparison: Comparison, phase: Phase, scores: Mapping[str, float] | None = None) -> list[Run]:
    """A tuning job shows its chosen settings (the labels with a 'final' run) unless ``phase`` is 'all'.
    With one tuning seed there are no final runs: the chosen settings are the search's choice by
    ``scores`` (see ``tuning_choice``)."""
    if phase == "all" or not comparison.spec.get("tuning"):
        return list(comparison.runs)
    chosen = {run.label for run in comparison.runs if run.phase == "final"}
    if len(comparison.spec["tuning"]["seeds"]) == 1 and scores is not None:
        search = [run for run in comparison.runs if run.phase == "search"]
        chosen = {run.label for run in tuning_choice(search, scores).values()}
    return [run for run in comparison.runs if run.label in chosen]


def tuning_choice(search: Sequence[Run], scores: Mapping[str, float]) -> dict[int, Run]:
    """Step 2 of the DeepOBS protocol: per entry, the search run with the lowest score. A run without a
    (finite) score loses; a tie goes to the earlier run, so ``search`` comes in sweep order."""
    best: dict[int, Run] = {}
    for run in search:
        incumbent = best.get(run.entry_index)
        if run.id in scores and (incumbent is None or scores[run.id] < scores[incumbent.id]):
            best[run.entry_index] = run
    return best


def tuning_scores(comparison: Comparison, last_val_losses: Mapping[str, float | None]) -> dict[str, float]:
    """Each succeeded search run's finite tuning metric: its final loss, or its last evaluation's
    validation loss (``last_val_losses`` by the run whose rows it reads: a reused run's source)."""
    metric = comparison.spec["tuning"]["metric"]
    values = {
        run.id: run.final_loss if metric == "final_loss" else last_val_losses.get(_data_id(run))
        for run in comparison.runs
        if run.phase == "search" and run.status == RunStatus.SUCCEEDED
    }
    return {run_id: value for run_id, value in values.items() if value is not None and math.isfinite(value)}


def _groups(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs by label, in run position order: runs with one label differ only in their seed."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    return dict(groups)


def _default_target(finished: Iterable[Run], figures: dict[str, StepFigures]) -> float | None:
    """The largest, over the non-diverged runs, of each run's lowest step loss: the tightest level that
    every one of them reaches, so time-to-target is defined for all of them and ranks their speed."""
    lows = [figures[_data_id(r)].min_loss for r in finished if _scored(r) and _data_id(r) in figures]
    return max((low for low in lows if low is not None), default=None)


def _row(
    label: str,
    group: list[Run],
    figures: dict[str, StepFigures],
    reached: dict[str, tuple[int, float]],
    evals: dict[str, tuple[float | None, float | None]],
) -> dict[str, Any]:
    finished = [r for r in group if r.status in FINISHED]
    scored = [r for r in finished if _scored(r)]
    timed = [r for r in finished if r.wall_time_s is not None]
    wall_time_s = sum(t for r in timed if (t := r.wall_time_s) is not None)
    hits = [reached[_data_id(r)] for r in finished if _data_id(r) in reached]
    scored_evals = [evals[_data_id(r)] for r in scored if _data_id(r) in evals]
    val_losses = [v for v, _ in scored_evals if v is not None]
    val_accuracies = [a for _, a in scored_evals if a is not None]
    return {
        "label": label,
        "optimizer": group[0].optimizer_name,
        "params": group[0].optimizer_params,
        "n_seeds": len(group),
        "n_finished": len(finished),
        "n_diverged": len(finished) - len(scored),
        "final_loss": _loss_stats(_final_losses(scored)),
        "best_so_far": _mean(r.best_loss for r in scored),
        "val_loss": _mean(val_losses),
        "val_loss_ci": _interval(val_losses, positive_ci),
        "val_accuracy": _mean(val_accuracies),
        "val_accuracy_ci": _interval(val_accuracies, proportion_ci),
        "steps_per_s": sum(r.steps_done for r in timed) / wall_time_s if wall_time_s > 0 else None,
        "wall_time_s": {"total": wall_time_s if timed else None, "mean": wall_time_s / len(timed) if timed else None},
        "time_to_target": {
            "steps": _mean(step for step, _ in hits),
            "seconds": _mean(t for _, t in hits),
            "seconds_ci": _interval([t for _, t in hits], positive_ci),
            "reached": len(hits),
            "of": len(finished),
        },
        "auc_log_loss": _mean(figures[_data_id(r)].auc_log_loss for r in scored if _data_id(r) in figures),
        # an ensemble's members share every step, so their times are the ensemble's, not their own
        "timed_together": any(r.execution == ENSEMBLE for r in finished),
    }


def _robust(group: list[Run]) -> dict[str, Any] | None:
    """Median and IQM of the final losses with bootstrap intervals, from ROBUST_MIN_SEEDS runs on."""
    aggregates = robust_aggregates(_final_losses(r for r in group if r.status in FINISHED))
    return asdict(aggregates) if aggregates else None


def _rank_key(row: dict[str, Any]) -> tuple[bool, float]:
    """Groups without a diverged run first, then by mean final loss over the non-diverged runs; a
    group whose every run diverged comes last."""
    mean = row["final_loss"]["mean"]
    return row["n_diverged"] > 0, math.inf if mean is None else mean


def _rank(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[bool, float]] = _rank_key
) -> list[dict[str, Any]]:
    """Competition ranking (1, 2, 2, 4) of the groups with a finished run; the others are unranked
    (rank None) and listed last. Rows of equal rank keep their run position order."""
    ranked = sorted((row for row in rows if row["n_finished"]), key=key)
    for i, row in enumerate(ranked):
        tied = i and key(row) == key(ranked[i - 1])
        row["rank"] = ranked[i - 1]["rank"] if tied else i + 1
    unranked = [row for row in rows if not row["n_finished"]]
    for row in unranked:
        row["rank"] = None
    return ranked + unranked


def _baseline_label(spec: dict[str, Any], groups: dict[str, list[Run]], requested: str | None) -> str:
    """A label of the leaderboard, or an optimizer entry's label, which stands for that entry's first
    shown setting (the chosen one in a tuning job). Default: the first entry."""
    entry_labels = [entry["label"] for entry in spec["optimizers"]]
    name = requested or spec.get("baseline") or entry_labels[0]
    if name in groups:
        return name
    if name not in entry_labels:
        known = list(dict.fromkeys([*entry_labels, *groups]))
        raise AnalysisInputError("baseline", f"unknown baseline '{name}'; labels: {', '.join(known)}")
    entry_index = entry_labels.index(name)
    return next((label for label, group in groups.items() if group[0].entry_index == entry_index), name)


def _paired(label: str, group: list[Run], baseline: str, baseline_group: list[Run]) -> dict[str, Any]:
    """Matched on seed, over the seeds where both runs have a finite final loss."""
    base = {r.seed: loss for r in baseline_group if (loss := _score(r)) is not None}
    pairs = [(loss, base[r.seed]) for r in group if (loss := _score(r)) is not None and r.seed in base]
    candidates, baselines = [c for c, _ in pairs], [b for _, b in pairs]
    interval = paired_prob_improvement_ci(candidates, baselines)
    return {
        "label": label,
        "baseline": baseline,
        **asdict(paired_test(candidates, baselines)),
        "prob_improvement": prob_improvement(candidates, baselines),
        "prob_improvement_ci_low": interval[0] if interval else None,
        "prob_improvement_ci_high": interval[1] if interval else None,
    }


def _holm_adjusted(paired: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each test's p-value adjusted by Holm's method over every setting compared with the baseline."""
    for test in ("t_pvalue", "wilcoxon_pvalue"):
        for pair, adjusted in zip(paired, holm([pair[test] for pair in paired]), strict=True):
            pair[f"{test}_holm"] = adjusted
    return paired


def _budget_window(run: Run, fraction: float) -> tuple[int, int]:
    """The steps whose losses stand for the loss after this fraction of the run's planned updates: the
    last BUDGET_WINDOW of the steps up to that point (at least one), as one batch's loss, let alone one
    example's, is too noisy to rank on."""
    end = int(fraction * run.steps_total)
    return max(0, end - max(1, int(BUDGET_WINDOW * run.steps_total)) + 1), end


def _budget_key(row: dict[str, Any]) -> tuple[bool, float]:
    return row["n_diverged"] > 0, math.inf if row["mean_loss"] is None else row["mean_loss"]


def _budget_row(label: str, runs: list[Run], index: int, losses: dict[str, dict[int, WindowLoss]]) -> dict[str, Any]:
    """A setting at one of the early budgets: the mean over its runs of each run's window loss; a run
    that diverged before the window ended counts as diverged."""
    values, diverged = [], 0
    for run in runs:
        window = losses.get(_data_id(run), {}).get(index)
        if window is not None and window.mean is not None and window.finite == window.rows:
            values.append(window.mean)
        elif run.status == RunStatus.DIVERGED:
            diverged += 1
    return {
        "label": label,
        "step": _budget_window(runs[0], BUDGETS[index])[1] if runs else None,
        "mean_loss": float(np.mean(values)) if values else None,
        "n_finished": len(values) + diverged,
        "n_diverged": diverged,
    }


def _budget_rankings(rows_of: RowFigures, groups: dict[str, list[Run]], rows: list[dict[str, Any]]) -> list[dict]:
    """The ranking at each of BUDGETS by the leaderboard's rule (divergence first, then the mean loss):
    below 1 on the step losses just before that fraction of each run's planned updates, at 1 on the
    final loss (the leaderboard itself). ``changed``: some setting's rank differs from the previous
    budget's."""
    finished = {label: [r for r in group if r.status in FINISHED] for label, group in groups.items()}
    early = range(len(BUDGETS) - 1)
    windows = {_data_id(r): [_budget_window(r, BUDGETS[i]) for i in early] for runs in finished.values() for r in runs}
    losses = rows_of.window_losses(windows) if windows else {}
    final = [
        {
            "label": row["label"],
            "step": finished[row["label"]][0].steps_total if row["n_finished"] else None,
            "mean_loss": row["final_loss"]["mean"],
            "n_finished": row["n_finished"],
            "n_diverged": row["n_diverged"],
        }
        for row in rows
    ]
    rankings = [[_budget_row(label, runs, i, losses) for label, runs in finished.items()] for i in early] + [final]
    budgets: list[dict[str, Any]] = []
    for fraction, ranking in zip(BUDGETS, rankings, strict=True):
        ranked = _rank(ranking, _budget_key)
        ranks = {row["label"]: row["rank"] for row in ranked}
        changed = bool(budgets) and ranks != {row["label"]: row["rank"] for row in budgets[-1]["rows"]}
        budgets.append({"fraction": fraction, "changed": changed, "rows": ranked})
    return budgets


def summarize(
    rows_of: RowFigures, comparison: Comparison, phase: Phase = "chosen", baseline: str | None = None
) -> dict[str, Any]:
    """The leaderboard, sorted by rank, and every other setting paired with the baseline."""
    spec = comparison.spec
    scores = None
    if spec.get("tuning"):
        evaluated = [_data_id(r) for r in comparison.runs if r.phase == "search" and r.status == RunStatus.SUCCEEDED]
        last = rows_of.last_evals(evaluated) if spec["tuning"]["metric"] == "val_loss" and evaluated else {}
        scores = tuning_scores(comparison, {run_id: val_loss for run_id, (val_loss, _) in last.items()})
    groups = _groups(_shown_runs(comparison, phase, scores))
    baseline_label = _baseline_label(spec, groups, baseline)
    finished = [r for group in groups.values() for r in group if r.status in FINISHED]
    run_ids = sorted({_data_id(r) for r in finished})
    figures = rows_of.step_figures(run_ids)
    target, source = spec.get("target_loss"), "spec"
    if target is None:
        target, source = _default_target(finished, figures), "default"
    reached = rows_of.first_reached(run_ids, target) if run_ids and target is not None else {}
    evals = rows_of.last_evals(run_ids) if run_ids else {}
    rows = [_row(label, group, figures, reached, evals) | {"robust": _robust(group)} for label, group in groups.items()]
    paired = (
        [
            _paired(label, group, baseline_label, groups[baseline_label])
            for label, group in groups.items()
            if label != baseline_label
        ]
        if baseline_label in groups
        else []
    )
    budgets = _budget_rankings(rows_of, groups, rows)
    return {
        "comparison_id": comparison.id,
        "status": comparison.status,
        "phase": phase,
        "target_loss": target,
        "target_loss_source": source,
        "baseline": baseline_label,
        "metric": METRIC,
        "rows": _rank(rows),
        "paired": _holm_adjusted(paired),
        "budgets": budgets,
        "ranking_changes": any(budget["changed"] for budget in budgets),
    }


def winners(comparison: Comparison, tuning_scores: Mapping[str, float] | None = None) -> list[str]:
    """The labels ranked first by ``summarize`` (several on a tie). The rank needs only the runs' own
    columns, so no step row is read: cheap enough to record when a comparison ends. A tuning job's
    ``tuning_scores`` (by run id) name its chosen settings when it has one tuning seed."""
    shown = _shown_runs(comparison, "chosen", tuning_scores)
    rows = [_row(label, group, {}, {}, {}) for label, group in _groups(shown).items()]
    return [row["label"] for row in _rank(rows) if row["rank"] == 1]


# --- sensitivity ---------------------------------------------------------------------------------


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _value_order(value: Any) -> tuple:
    """Numbers in numeric order; anything else (booleans, strings, lists) after them, in JSON order."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value, ""
    return 1, 0, _json_key(value)


def _point(value: Any, runs: list[Run]) -> dict[str, Any]:
    finished = [r for r in runs if r.status in FINISHED]
    final = _final_losses(finished)
    return {"value": value, "n": len(final), "n_diverged": len(finished) - len(final), "final_loss": _loss_stats(final)}


def sensitivity(comparison: Comparison, param: str) -> dict[str, Any]:
    """The final loss against the value of the swept ``param`` (DeepOBS's learning-rate sensitivity),
    one series per optimizer entry and combination of its other swept values, points in value order."""
    swept = sorted({name for run in comparison.runs for name in run.sweep_values or {}})
    if param not in swept:
        raise AnalysisInputError(
            "param", f"'{param}' is not swept in this comparison; swept: {', '.join(swept) or 'nothing'}"
        )
    series: dict[tuple[int, str], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in comparison.runs:
        values = run.sweep_values or {}
        if param in values:
            fixed = {name: value for name, value in values.items() if name != param}
            series[run.entry_index, _json_key(fixed)][_json_key(values[param])].append(run)
    entry_labels = [entry["label"] for entry in comparison.spec["optimizers"]]
    return {
        "comparison_id": comparison.id,
        "status": comparison.status,
        "param": param,
        "swept": swept,
        "metric": METRIC,
        "series": [
            {
                "label": entry_labels[entry_index],
                "entry_index": entry_index,
                "fixed": json.loads(fixed),
                "points": sorted(
                    (_point(json.loads(value), runs) for value, runs in points.items()),
                    key=lambda point: _value_order(point["value"]),
                ),
            }
            for (entry_index, fixed), points in series.items()
        ],
    }
