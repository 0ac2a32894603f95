"""Suites (docs/suites.md): submitting optimizers against a suite (one paired comparison per workload, the
suite's baselines beside them) and scoring the team's whole history on it."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from analysis import suites as scoring
from db import suites as rows_of
from engine import sizing
from engine.problem import steps_total
from engine.spec import ComparisonSpec, spec_error
from engine.suites import Suite, Workload, check_metric, discover
from optibench.settings import Settings
from services import submit as submitting

Budget = Literal["full", "reduced"]


class SuiteSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    optimizers: list[dict[str, Any]] = Field(
        min_length=1, max_length=20, description="optimizer entries as in a comparison, each with a distinct label"
    )
    budget: Budget = Field(
        "full", description="'reduced': a few steps for tests and smoke runs, scored apart and not comparable"
    )
    workloads: list[str] | None = Field(None, description="a subset of the suite's workloads; default: all")
    tags: list[str] = Field(default_factory=list, max_length=16)


def find(name: str, version: str) -> Suite:
    """The suite ``name`` at ``version`` ('1' or 'v1'); a ValidationError at ("path", field) when unknown."""
    known = discover()
    by_name = {s.name for s in known.values()}
    if name not in by_name:
        raise spec_error(("path", "name"), f"unknown suite '{name}'; available: {', '.join(sorted(by_name))}", name)
    suite = known.get(f"{name}-v{version.removeprefix('v')}")
    if suite is None:
        versions = sorted(f"v{s.version}" for s in known.values() if s.name == name)
        raise spec_error(("path", "version"), f"suite '{name}' has versions {', '.join(versions)}", version)
    return suite


def _chosen(suite: Suite, submission: SuiteSubmission) -> list[Workload]:
    if submission.workloads is None:
        return list(suite.workloads)
    names = [w.name for w in suite.workloads]
    for i, name in enumerate(submission.workloads):
        if name not in names:
            raise spec_error(
                ("body", "workloads", i), f"unknown workload '{name}'; {suite.id} has {', '.join(names)}", name
            )
    return [w for w in suite.workloads if w.name in submission.workloads]


def plan(suite: Suite, submission: SuiteSubmission) -> list[tuple[Workload, ComparisonSpec]]:
    """Each workload's comparison, validated completely before anything is stored: an error in a submitted
    entry points at ``body.optimizers.i`` (the entry's own index), any other at the workload."""
    budget_of = "budget" if submission.budget == "full" else "reduced"
    seeds = suite.seeds if submission.budget == "full" else suite.reduced_seeds
    baselines = len(suite.baselines)
    taken = {b["label"]: k for k, b in enumerate(suite.baselines)}
    for i, entry in enumerate(submission.optimizers):
        if entry.get("label") in taken:
            raise spec_error(("body", "optimizers", i, "label"), "this label is a baseline's", entry.get("label"))
    planned = []
    for workload in _chosen(suite, submission):
        spec = workload.spec(suite.baselines + submission.optimizers, seeds, getattr(workload, budget_of), suite.device)
        spec["name"] = f"{suite.id} {workload.name}"
        spec["tags"] = [f"suite:{suite.id}", f"workload:{workload.name}", *submission.tags]
        try:
            validated = ComparisonSpec.model_validate(spec)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = tuple(error["loc"])
            if loc[:1] == ("optimizers",) and len(loc) > 1 and isinstance(loc[1], int) and loc[1] >= baselines:
                where: tuple[str | int, ...] = ("body", "optimizers", loc[1] - baselines, *loc[2:])
            else:
                where = ("body", "workloads", workload.name, *loc)
            raise spec_error(where, error["msg"], error.get("input")) from None
        check_metric(validated, workload.metric, ("body", "workloads", workload.name, "metric"))
        planned.append((workload, validated))
    return planned


def submit(
    session: Session, suite: Suite, submission: SuiteSubmission, settings: Settings, *, team_id: str, submitted_by: str
) -> list[tuple[str, submitting.Submitted]]:
    """One comparison per workload, marked with the suite, its budget and the workload; the baselines' runs are
    reused from the team's history where identical ones succeeded (the comparison's reuse by config hash)."""
    planned = plan(suite, submission)
    for workload, spec in planned:  # what would refuse a workload, checked for all before any is stored
        _check_fits(workload, spec, settings)
    done = []
    for workload, spec in planned:
        try:
            submitted = submitting.submit(session, spec, settings, team_id=team_id, submitted_by=submitted_by)
        except submitting.Refused as exc:
            exc.loc = ("workloads", workload.name, *exc.loc)
            raise
        rows_of.mark(session, submitted.comparison.id, suite.id, submission.budget, workload.name)
        session.commit()
        done.append((workload.name, submitted))
    return done


def _check_fits(workload: Workload, spec: ComparisonSpec, settings: Settings) -> None:
    """A workload whose runs exceed the steps per run or the worker memory budget is refused at its field."""
    steps = max(steps_total(spec, i) for i in range(len(spec.optimizers)))
    if steps > settings.max_steps_per_run:
        raise submitting.Refused(
            "limit_exceeded",
            ("workloads", workload.name, "budget", "steps"),
            f"{steps} steps per run exceed the limit of {settings.max_steps_per_run} (OPTIBENCH_MAX_STEPS_PER_RUN)",
            steps,
        )
    run = sizing.largest_run(spec)
    if run.total > settings.worker_memory_bytes:
        raise submitting.Refused(
            "memory_budget",
            ("workloads", workload.name, *run.loc),
            f"a run of this workload needs {run.describe()} of memory, over the worker memory budget of "
            f"{sizing.human_bytes(settings.worker_memory_bytes)} (OPTIBENCH_WORKER_MEMORY_BYTES)",
            run.total,
        )


def _key(setting: tuple[str, str, str], baselines: set[str], external: bool) -> str:
    """What names one optimizer on the leaderboard: a baseline's label (its settings may be tuned per workload),
    an external run's label (its optimizer is the client's: free text, one setting per label across the
    workloads), any other's label, name and params together."""
    if external:
        return "external\x1f" + setting[0]
    return setting[0] if setting[0] in baselines else "\x1f".join(setting)


def scores(session: Session, suite: Suite, budget: Budget, *, team_id: str) -> dict[str, Any]:
    """Targets, time-to-target, the performance profiles and the scores of every optimizer setting the team
    ever ran on the suite at ``budget``: a workload an optimizer has not run counts as not reached."""
    baseline_labels = {b["label"] for b in suite.baselines}
    workloads: list[dict[str, Any]] = []
    reached: list[dict[str, scoring.Reached]] = []
    described: dict[str, dict[str, Any]] = {}
    for workload in suite.workloads:
        limits = getattr(workload, "budget" if budget == "full" else "reduced")
        rows = rows_of.workload_rows(session, team_id, suite.id, budget, workload.name, workload.metric)
        keys = [_key(s, baseline_labels, external) for s, external in zip(rows.settings, rows.external)]
        for s, k, external in zip(rows.settings, keys, rows.external):
            described.setdefault(
                k,
                {
                    "label": s[0],
                    "optimizer": s[1],
                    "params": json.loads(s[2]),
                    "baseline": s[0] in baseline_labels and not external,
                    "external": external,
                },
            )
        evals = scoring.Evaluations(
            rows.run, rows.step, rows.time_s, scoring.oriented(rows.value, workload.direction), keys, rows.seeds
        )
        baselines = [k for k in dict.fromkeys(keys) if described[k]["baseline"]]
        goal = scoring.target(evals, baselines, limits.steps, limits.wall_s)
        times = scoring.time_to_target(evals, goal, limits.steps, limits.wall_s)
        reached.append(times)
        workloads.append(
            {
                "name": workload.name,
                "metric": workload.metric,
                "direction": workload.direction,
                "target": None if goal is None else float(scoring.oriented(np.array(goal), workload.direction)),
                "budget": limits.model_dump(),
            }
        )
    keys = list(described)
    table = np.full((2, len(keys), len(workloads)), np.inf)
    for w, times in enumerate(reached):
        for o, key in enumerate(keys):
            if key in times:
                table[:, o, w] = times[key].steps, times[key].seconds
    by_steps, by_seconds = table
    score, score_steps = scoring.scores(by_seconds, suite.tau_max), scoring.scores(by_steps, suite.tau_max)
    profile, profile_steps = (
        scoring.profile_steps(by_seconds, suite.tau_max),
        scoring.profile_steps(by_steps, suite.tau_max),
    )
    optimizers = []
    for o, key in enumerate(keys):
        optimizers.append(
            described[key]
            | {
                "score": float(score[o]),
                "score_steps": float(score_steps[o]),
                "profile": [list(p) for p in profile[o]],
                "profile_steps": [list(p) for p in profile_steps[o]],
                "workloads": [
                    _reached(times.get(key)) | {"workload": workloads[w]["name"]} for w, times in enumerate(reached)
                ],
            }
        )
    optimizers.sort(key=lambda o: (-o["score"], -o["score_steps"], o["label"]))
    return {
        "suite": suite.id,
        "name": suite.name,
        "version": suite.version,
        "description": suite.description,
        "content_hash": suite.content_hash,
        "budget": budget,
        "comparable": budget == "full",
        "tau_max": suite.tau_max,
        "seeds": suite.seeds if budget == "full" else suite.reduced_seeds,
        "baselines": suite.baselines,
        "workloads": workloads,
        "optimizers": optimizers,
    }


def _reached(found: scoring.Reached | None) -> dict[str, Any]:
    if found is None:
        return {"steps": None, "seconds": None, "seeds": 0, "reached_seeds": 0}
    finite = np.isfinite(found.steps)
    return {
        "steps": found.steps if finite else None,
        "seconds": found.seconds if np.isfinite(found.seconds) else None,
        "seeds": found.seeds,
        "reached_seeds": found.reached_seeds,
    }


def listing() -> list[dict[str, Any]]:
    return [
        {
            "suite": s.id,
            "name": s.name,
            "version": s.version,
            "description": s.description,
            "workloads": len(s.workloads),
        }
        for s in discover().values()
    ]
