"""Adaptive seeding's rounds: when every run of a round has ended, the round is evaluated (each pair,
an optimizer setting against the baseline, by analysis.sequential) and the next round's seeds are
added to the pairs still undecided, and to the baseline, until every pair is decided or has max seeds.

The state lives in ``comparisons.adaptive``: {"round", "done", "stopped", "pairs", ...}; a round that
ended waits with ``adaptive_due_at`` set (db.comparisons.refresh_comparison sets it). ``next_round`` runs
under the comparison's row lock and only for the round it is asked for, so a second delivery of the
round task, or two at once, adds nothing twice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analysis.sequential import Design, PairDecision, decide_pair
from db.comparisons import _add_runs, refresh_comparison
from db.models import SUCCEEDED, TERMINAL, Comparison, Run
from engine.spec import Adaptive
from engine.sweeps import RunConfig, adaptive_seeds, expand
from optibench.status import RunStatus

#: exp() of more overflows a float: no ratio is shown (the interval on the log scale still is)
_LARGEST_EXPONENT = 709.0


def due(session: Session, comparison_id: str) -> int | None:
    """The round of the comparison that awaits evaluation, if one does."""
    row = session.execute(
        select(Comparison.adaptive, Comparison.adaptive_due_at).where(Comparison.id == comparison_id)
    ).one_or_none()
    if row is None or row.adaptive is None or row.adaptive_due_at is None:
        return None
    return int(row.adaptive["round"])


def is_adaptive(spec: dict[str, Any]) -> bool:
    return adaptive_seeds(spec) is not None


def overdue(session: Session, before: datetime) -> list[tuple[str, int, str]]:
    """(comparison id, round, spec device) of the rounds due since before ``before``: their task may have
    been lost."""
    rows = session.execute(
        select(Comparison.id, Comparison.adaptive, Comparison.spec).where(
            Comparison.adaptive_due_at.is_not(None), Comparison.adaptive_due_at < before
        )
    ).all()
    return [(row.id, int(row.adaptive["round"]), row.spec["device"]) for row in rows if row.adaptive is not None]


def _baseline(spec: dict[str, Any], runs: Sequence[Run]) -> str:
    """The baseline's run label: the spec's (a run label, or an entry's, standing for its first setting)
    or the first entry's."""
    name = spec.get("baseline") or spec["optimizers"][0]["label"]
    if any(run.label == name for run in runs):
        return name
    entry_index = [entry["label"] for entry in spec["optimizers"]].index(name)
    return next(run.label for run in runs if run.entry_index == entry_index)


def _loss(run: Run) -> float | None:
    return run.final_loss if run.status == SUCCEEDED else None


def pair_design(spec: dict[str, Any], pairs: int) -> Design:
    """Each pair's design, at the spec's alpha over ``pairs`` pairs. The first use of a design in a process
    calibrates it (seconds at worst): the round task asks before it takes the comparison's lock."""
    adaptive = adaptive_seeds(spec)
    assert adaptive is not None
    margin = Adaptive.model_validate(adaptive).margin
    alpha = adaptive["alpha"] / max(1, pairs)
    return Design.of(adaptive["min"], adaptive["max"], adaptive["round"], alpha, adaptive["spending"], margin)


def settings_count(spec: dict[str, Any]) -> int:
    """The comparison's optimizer settings (run labels), from the spec alone."""
    return len({config.label for config in expand(spec)})


def evaluate(spec: dict[str, Any], runs: Sequence[Run]) -> tuple[str, float, list[dict[str, Any]]]:
    """Every pair's decision from the runs as they are: (baseline label, alpha per pair, pairs). Pairs are
    Bonferroni-corrected: each is tested at alpha / (number of pairs)."""
    adaptive = adaptive_seeds(spec)
    assert adaptive is not None
    baseline = _baseline(spec, runs)
    by_label: dict[str, dict[int, Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, {})[run.seed] = run
    labels = [label for label in by_label if label != baseline]
    design = pair_design(spec, len(labels))
    alpha, scale = design.alpha, adaptive["scale"]
    base = by_label[baseline]
    pairs = []
    for label in labels:
        seeds = sorted(by_label[label])
        decision = decide_pair(
            [_loss(by_label[label][seed]) for seed in seeds],
            [_loss(base[seed]) if seed in base else None for seed in seeds],
            design,
            scale,
        )
        pairs.append({"label": label, "baseline": baseline, **_evidence(decision)})
    return baseline, alpha, pairs


def _evidence(decision: PairDecision) -> dict[str, Any]:
    """The decision as stored and shown; on the log scale also as ratios of the losses' geometric means."""
    evidence = asdict(decision)
    if decision.scale == "log":
        for key in ("mean_diff", "ci_low", "ci_high"):
            value = evidence[key]
            evidence[key.replace("mean_diff", "ratio").replace("ci_", "ratio_")] = (
                math.exp(value) if value is not None and value < _LARGEST_EXPONENT else None
            )
    return evidence


def next_round(session: Session, comparison_id: str, round_: int) -> int:
    """Evaluate round ``round_`` of the comparison, if it is the round due, and add the next round's
    runs (in the outbox: the caller publishes them after the commit) or end adaptive seeding. A round
    whose new runs were all reused is evaluated at once. Returns the runs added."""
    comparison = session.execute(
        select(Comparison).where(Comparison.id == comparison_id).with_for_update()
    ).scalar_one_or_none()
    added = 0
    while comparison is not None:
        state = comparison.adaptive
        if state is None or state["done"] or state["round"] != round_ or comparison.adaptive_due_at is None:
            return added
        runs = session.scalars(
            select(Run)
            .where(Run.comparison_id == comparison_id)
            .order_by(Run.position)
            .execution_options(populate_existing=True)
        ).all()
        if any(run.status not in TERMINAL for run in runs):
            return added  # not over yet: its last run will make it due again
        spec = comparison.spec
        baseline, alpha, pairs = evaluate(spec, runs)
        adaptive = adaptive_seeds(spec)
        assert adaptive is not None
        undecided = [pair["label"] for pair in pairs if not pair["done"]]
        have = max((pair["seeds"] for pair in pairs if not pair["done"]), default=0)
        new_seeds = range(have, min(have + adaptive["round"], adaptive["max"]))
        state = {
            **state,
            "baseline": baseline,
            "alpha_per_pair": alpha,
            "correction": "bonferroni",
            "pairs": pairs,
        }
        comparison.adaptive_due_at = None
        first: dict[str, Run] = {}
        for run in runs:
            first.setdefault(run.label, run)
        seeds_of = {label: {run.seed for run in runs if run.label == label} for label in [baseline, *undecided]}
        configs = [
            RunConfig(run.entry_index, label, run.optimizer_params, run.sweep_values or {}, seed, None)
            for label in [baseline, *undecided]
            for run in [first[label]]
            for seed in new_seeds
            if seed not in seeds_of[label]
        ]
        if not configs:  # every pair decided or at max (no seed left to add, whatever the runs)
            comparison.adaptive = {**state, "done": True}
            refresh_comparison(session, comparison_id)
            return added
        comparison.adaptive = {**state, "round": round_ + 1}
        _add_runs(
            session,
            comparison,
            configs,
            {run.entry_index: run.steps_total for run in runs},
            spec.get("reuse", True),
        )
        session.flush()
        added += sum(1 for run in comparison.runs[-len(configs) :] if run.status == RunStatus.QUEUED)
        refresh_comparison(session, comparison_id)  # a round of reused runs only is due again at once
        round_ += 1
    return added
