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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from analysis.stats import mean_ci, paired_test
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
    optimizer_name: str
    optimizer_params: dict[str, Any]
    sweep_values: dict[str, Any] | None
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


def _loss_stats(values: Sequence[float]) -> dict[str, float | None]:
    interval = mean_ci(values)
    return {
        "mean": interval.mean,
        "ci_low": interval.ci_low,
        "ci_high": interval.ci_high,
        "median": float(np.median(values)) if values else None,
        "best": min(values, default=None),
        "worst": max(values, default=None),
    }


# --- what the database computes from step and eval rows ----------------------------------------


@dataclass(frozen=True)
class StepFigures:
    #: mean over the run's finite step losses of log10(max(loss, LOSS_FLOOR))
    auc_log_loss: float | None
    #: the lowest finite step loss
    min_loss: float | None


class RowFigures(Protocol):
    """Per-run figures aggregated from step and eval rows (db.figures.RowFigures reads them in SQL)."""

    def step_figures(self, run_ids: Sequence[str]) -> dict[str, StepFigures]: ...

    def first_reached(self, run_ids: Sequence[str], target: float) -> dict[str, tuple[int, float]]:
        """Per run, the first step whose loss is ≤ ``target`` and its time_s; runs that never reach it are absent."""

    def last_evals(self, run_ids: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
        """Per evaluated run, (val_loss, val_accuracy) of its last evaluation."""


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
    return {
        "label": label,
        "optimizer": group[0].optimizer_name,
        "params": group[0].optimizer_params,
        "n_seeds": len(group),
        "n_finished": len(finished),
        "n_diverged": len(finished) - len(scored),
        "final_loss": _loss_stats(_final_losses(scored)),
        "best_so_far": _mean(r.best_loss for r in scored),
        "val_loss": _mean(val_loss for val_loss, _ in scored_evals),
        "val_accuracy": _mean(val_accuracy for _, val_accuracy in scored_evals),
        "steps_per_s": sum(r.steps_done for r in timed) / wall_time_s if wall_time_s > 0 else None,
        "wall_time_s": {"total": wall_time_s if timed else None, "mean": wall_time_s / len(timed) if timed else None},
        "time_to_target": {
            "steps": _mean(step for step, _ in hits),
            "seconds": _mean(t for _, t in hits),
            "reached": len(hits),
            "of": len(finished),
        },
        "auc_log_loss": _mean(figures[_data_id(r)].auc_log_loss for r in scored if _data_id(r) in figures),
    }


def _rank_key(row: dict[str, Any]) -> tuple[bool, float]:
    """Groups without a diverged run first, then by mean final loss over the non-diverged runs; a
    group whose every run diverged comes last."""
    mean = row["final_loss"]["mean"]
    return row["n_diverged"] > 0, math.inf if mean is None else mean


def _rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Competition ranking (1, 2, 2, 4) of the groups with a finished run; the others are unranked
    (rank None) and listed last. Rows of equal rank keep their run position order."""
    ranked = sorted((row for row in rows if row["n_finished"]), key=_rank_key)
    for i, row in enumerate(ranked):
        tied = i and _rank_key(row) == _rank_key(ranked[i - 1])
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
    test = paired_test([c for c, _ in pairs], [b for _, b in pairs])
    return {"label": label, "baseline": baseline, **asdict(test)}


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
    rows = [_row(label, group, figures, reached, evals) for label, group in groups.items()]
    paired = (
        [
            _paired(label, group, baseline_label, groups[baseline_label])
            for label, group in groups.items()
            if label != baseline_label
        ]
        if baseline_label in groups
        else []
    )
    return {
        "comparison_id": comparison.id,
        "status": comparison.status,
        "phase": phase,
        "target_loss": target,
        "target_loss_source": source,
        "baseline": baseline_label,
        "metric": METRIC,
        "rows": _rank(rows),
        "paired": paired,
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
