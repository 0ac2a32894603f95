"""A comparison's lifecycle in the database: creation (one queued run per setting × seed), reuse of
identical succeeded runs, the status that follows from its runs, and the tuning protocol's final phase."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, and_, bindparam, func, insert, select
from sqlalchemy.orm import Session, configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from analysis import summary
from db.models import (
    CANCELLED,
    FAILED,
    LOCAL_TEAM_ID,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Comparison,
    Eval,
    Run,
    new_id,
    table_of,
    utcnow,
)
from engine.identity import ALONE, ENSEMBLE, Execution, device_kind, plan_runs, run_hasher
from engine.spec import ComparisonSpec
from engine.sweeps import FINAL, SEARCH, RunConfig, adaptive_seeds, expand
from engine.vectorized import Member
from optibench.settings import get_settings
from optibench.status import RunStatus

_Model = TypeVar("_Model", Comparison, Run)
#: rows with every column unset
_NO_COMPARISON, _NO_RUN = (dict.fromkeys(model.__table__.columns.keys()) for model in (Comparison, Run))


def create_comparison(
    session: Session,
    spec: dict[str, Any],
    steps_total: int | Sequence[int],
    team_id: str = LOCAL_TEAM_ID,
    submitted_by: str | None = None,
    *,
    reuse: bool = False,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    publishing: bool = False,
    planned: list[tuple[list[str], Execution]] | None = None,
    validated: ComparisonSpec | None = None,
) -> Comparison:
    """One queued run per optimizer setting × seed (engine.sweeps.expand: a tuning job's search phase
    only); ``spec`` is the validated spec's JSON form, ``steps_total`` per entry, or one for all.

    Each run's execution mode is decided here as the dispatcher will (engine.identity.execution_plan).
    With ``reuse`` (the submit route passes the spec's), a run identical to a succeeded run of the team
    (engine.identity) trained in the same mode is created succeeded instead, pointing at it, and is never
    queued; an ensemble is reused whole or not at all, so the groups dispatched are the groups decided. A
    comparison made only of such runs has succeeded already. Without it, as for direct callers, every run trains.

    ``publishing``: the caller publishes the queued runs right after the commit, so they are stored as
    published (enqueued_at set) instead of in the outbox, which spares every submit a second write;
    a publish that fails puts them back (``worker.dispatch.enqueue_new_runs(marked=True)``). Should the
    process die between the commit and the publish, the sweeper republishes them after
    OPTIBENCH_REPUBLISH_AFTER_S, as for a message the broker lost. ``planned`` (a list) receives the
    tasks that train the queued runs, (run ids, mode), for ``enqueue_new_runs(planned=)``. ``validated``:
    ``spec`` as the ComparisonSpec it came from, where the caller has it, not validated again.

    The rows go in as two plain INSERTs, the runs' one executemany: the ORM's unit of work cost more
    than the rest of a submit. The objects returned are in the session as if read back."""
    if isinstance(steps_total, int):
        steps_total = [steps_total] * len(spec["optimizers"])
    row = {
        **_NO_COMPARISON,
        "id": new_id(),
        "team_id": team_id,
        "name": spec["name"],
        "status": QUEUED,
        "spec": spec,
        "tags": spec.get("tags", []),
        "submitted_by": submitted_by,
        "created_at": utcnow(),
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "adaptive": {"round": 1, "done": False, "stopped": None, "pairs": []} if adaptive_seeds(spec) else None,
        **_history_columns(spec),
    }
    grouped = validated or ComparisonSpec.model_validate(spec)
    runs, reused, tasks = _run_rows(session, row, expand(spec), steps_total, reuse, first_position=0, grouped=grouped)
    if publishing:
        for run in runs:
            if run["status"] == QUEUED:
                run["enqueued_at"] = row["created_at"]
    _insert(session, Comparison, [row])
    _insert(session, Run, runs)
    comparison = _persistent(session, Comparison, row)
    set_committed_value(comparison, "runs", [_persistent(session, Run, run) for run in runs])
    if planned is not None:
        planned.extend(tasks)
    if reused:
        refresh_comparison(session, comparison.id)
    return comparison


#: built once: every submit runs both
_INSERTS = {model: insert(table_of(model)) for model in (Comparison, Run)}


def _insert(session: Session, model: type[Comparison | Run], rows: Sequence[dict[str, Any]]) -> None:
    """INSERT complete rows, one executemany per set of non-NULL columns: a None is left out, so that
    JSON columns get SQL NULL (as from the ORM) rather than JSON 'null'."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        present = {column: value for column, value in row.items() if value is not None}
        groups.setdefault(tuple(present), []).append(present)
    for group in groups.values():
        session.execute(_INSERTS[model], group)


def _persistent(session: Session, model: type[_Model], row: dict[str, Any]) -> _Model:
    """The instance of a row just inserted, with every column given, in the session as if loaded: no
    second INSERT at the flush, and no SELECT when read. Built as a query's result is, its columns
    written straight into its state: the constructor's attribute events cost more than the INSERT."""
    configure_mappers()  # as a constructor would, the first time: a no-op after
    instance: _Model = manager_of_class(model).new_instance()
    instance_dict(instance).update(row)
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


def _history_columns(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's component names, which the history filters on."""
    problem = spec["problem"]
    return {
        "model_name": (problem.get("model") or {}).get("name"),
        "dataset_name": (problem.get("dataset") or {}).get("name"),
        "function_name": (problem.get("function") or {}).get("name"),
        "optimizer_names": list(dict.fromkeys(entry["name"] for entry in spec["optimizers"])),
    }


#: what a reused run copies from its source
_OUTCOME = (
    "steps_done",
    "final_loss",
    "best_loss",
    "wall_time_s",
    "diverged_step",
    "device",
    "hardware",
    "started_at",
    "finished_at",
)


def _run_rows(
    session: Session,
    comparison: Mapping[str, Any],
    configs: Sequence[RunConfig],
    steps_total: Sequence[int] | Mapping[int, int],
    reuse: bool,
    first_position: int,
    grouped: ComparisonSpec | None,
) -> tuple[list[dict[str, Any]], bool, list[tuple[list[str], Execution]]]:
    """The complete rows of a comparison's new runs, each with its config hash and execution mode,
    numbered from ``first_position``; ``grouped``: the validated spec when they are dispatched together,
    so some may train as ensembles (None: each alone, as a tuning job's final runs). With ``reuse``, the
    runs of a task whose every run is identical to a succeeded run of the team trained in the same mode
    are succeeded already; returns the rows, whether any was, and the tasks that train the others (run
    ids, mode), as the dispatcher publishes them."""
    spec = comparison["spec"]
    settings = get_settings()
    device = device_kind(spec["device"], settings.auto_device)
    run_hash = run_hasher(spec, device)
    run_ids = [new_id() for _ in configs]
    hashes = {run_id: run_hash(c.entry_index, c.params, c.seed) for run_id, c in zip(run_ids, configs)}
    members = {run_id: Member(c.entry_index, c.seed, c.params) for run_id, c in zip(run_ids, configs)}
    plan = (
        plan_runs(grouped, members, device, settings.vectorize)
        if grouped is not None
        else [([run_id], ALONE) for run_id in members]
    )
    modes = {run_id: mode for task, mode in plan for run_id in task}
    found = _reusable_runs(session, comparison["team_id"], list(hashes.values())) if reuse else {}
    sources: dict[str, Row] = {}
    for task, mode in plan:  # a task is reused whole or trains whole
        matches = [match for run_id in task if (match := found.get((hashes[run_id], mode))) is not None]
        if len(matches) == len(task):
            sources.update(zip(task, matches))
    rows = []
    for position, (config, run_id) in enumerate(zip(configs, run_ids), first_position):
        row = {
            **_NO_RUN,
            "id": run_id,
            "comparison_id": comparison["id"],
            "position": position,
            "entry_index": config.entry_index,
            "label": config.label,
            "seed": config.seed,
            "optimizer_name": spec["optimizers"][config.entry_index]["name"],
            "optimizer_params": config.params,
            "sweep_values": config.sweep_values,
            "phase": config.phase,
            "config_hash": hashes[run_id],
            "status": QUEUED,
            "steps_total": steps_total[config.entry_index],
            "steps_done": 0,
            "attempt": 0,
            "device": device,
            "execution": modes[run_id],
            "external": False,
        }
        source = sources.get(run_id)
        if source is not None:
            row.update(
                {column: getattr(source, column) for column in _OUTCOME},
                status=SUCCEEDED,
                reused_from_id=source.reused_from_id or source.id,
            )
        rows.append(row)
    tasks = [(task, mode) for task, mode in plan if task[0] not in sources]
    return rows, bool(sources), tasks


def _add_runs(
    session: Session,
    comparison: Comparison,
    configs: Sequence[RunConfig],
    steps_total: Sequence[int] | Mapping[int, int],
    reuse: bool,
) -> None:
    """Append runs to a stored comparison, after its existing ones; the caller flushes."""
    columns = {"id": comparison.id, "team_id": comparison.team_id, "spec": comparison.spec}
    rows, _, _ = _run_rows(
        session, columns, configs, steps_total, reuse, first_position=len(comparison.runs), grouped=None
    )
    comparison.runs.extend(Run(**row) for row in rows)


#: built once, and read as plain rows: every submit with reuse runs it
_REUSABLE = (
    select(Run.id, Run.config_hash, Run.execution, Run.reused_from_id, *(getattr(Run, column) for column in _OUTCOME))
    .join(Comparison)
    .where(
        Run.config_hash.in_(bindparam("hashes", expanding=True)),
        Run.status == SUCCEEDED,
        Run.execution.in_((ALONE, ENSEMBLE)),
        Comparison.team_id == bindparam("team_id"),
        Comparison.deleted_at.is_(None),
    )
    .order_by(Run.reused_from_id.is_not(None), Run.finished_at, Run.id)
)


def _reusable_runs(session: Session, team_id: str, hashes: Sequence[str]) -> dict[tuple[str, str], Row]:
    """By config hash and execution mode, a succeeded run of the team in a comparison not deleted: an
    original rather than a reuse, then the earliest. Runs of unknown mode (trained before the mode was
    recorded) are never reused. One query over the config_hash index."""
    found: dict[tuple[str, str], Row] = {}
    if not hashes:
        return found
    candidates = session.execute(_REUSABLE, {"hashes": list(set(hashes)), "team_id": team_id})
    for run in candidates:
        assert run.config_hash is not None and run.execution is not None, "the query's filters leave neither None"
        found.setdefault((run.config_hash, run.execution), run)
    return found


def comparison_status(run_statuses: Sequence[str]) -> str:
    """A comparison's status follows from its runs."""
    if all(s in TERMINAL for s in run_statuses):
        if CANCELLED in run_statuses:
            return CANCELLED
        return FAILED if FAILED in run_statuses else SUCCEEDED
    return QUEUED if all(s == QUEUED for s in run_statuses) else RUNNING


#: a tuning job's search phase is over when every run has ended this way; a cancelled one ends the job
_SEARCH_OVER = TERMINAL - {CANCELLED}


def refresh_comparison(session: Session, comparison_id: str) -> None:
    """Recompute status from the runs. The row lock makes concurrent finishers see each other: of the
    finishers of a tuning job's search phase, exactly one sees it end, and starts the final phase in the
    same transaction, so the job never shows 'succeeded' between the phases.

    Called at every claim and finish, so its cost must not grow with the comparison: it asks which
    statuses its runs have (one probe of the (comparison_id, status) index each), never reads them
    all; only the end of a phase (at most twice per comparison) reads every run."""
    comparison = session.execute(
        select(Comparison).where(Comparison.id == comparison_id).with_for_update()
    ).scalar_one()
    present = _statuses_present(session, comparison_id)
    if comparison.spec.get("tuning") and present <= _SEARCH_OVER and not _has_final_phase(session, comparison_id):
        _start_final_phase(session, comparison)
        present = _statuses_present(session, comparison_id)
    comparison.status = comparison_status(sorted(present))
    if comparison.adaptive is not None:
        comparison.status = _adaptive_status(comparison, comparison.status)
    if comparison.status in TERMINAL and comparison.finished_at is None:
        comparison.finished_at = utcnow()
        # the runs as they are now: bulk updates of this transaction may have left loaded ones stale
        session.scalars(
            select(Run).where(Run.comparison_id == comparison_id).execution_options(populate_existing=True)
        ).all()
        scores = None
        if comparison.spec.get("tuning"):
            search = [run for run in comparison.runs if run.phase == SEARCH]
            scores = _tuning_scores(session, search, comparison.spec["tuning"]["metric"])
        comparison.winners = summary.winners(comparison, scores)


def _adaptive_status(comparison: Comparison, status: str) -> str:
    """Adaptive seeding holds a comparison whose runs have all succeeded (or diverged) as running until
    its last round is evaluated: the round ends due (``adaptive_due_at``), for db.adaptive.next_round. A
    failed or cancelled run, or a cancel between rounds, stops it, its decisions as they were."""
    state = comparison.adaptive
    assert state is not None
    if state["done"]:
        return CANCELLED if state["stopped"] == CANCELLED else status
    if status == SUCCEEDED:
        if comparison.adaptive_due_at is None:
            comparison.adaptive_due_at = utcnow()
        return RUNNING
    if status in TERMINAL:
        comparison.adaptive = {**state, "done": True, "stopped": status}
        comparison.adaptive_due_at = None
    return status


def stop_adaptive(session: Session, comparison_id: str) -> bool:
    """Cancel a comparison whose runs have all ended but whose adaptive seeding would add another round;
    False if it is not such a comparison."""
    comparison = session.execute(
        select(Comparison).where(Comparison.id == comparison_id).with_for_update()
    ).scalar_one_or_none()
    if comparison is None or comparison.adaptive is None or comparison.adaptive["done"]:
        return False
    comparison.adaptive = {**comparison.adaptive, "done": True, "stopped": CANCELLED}
    comparison.adaptive_due_at = None
    refresh_comparison(session, comparison_id)
    return True


def _statuses_present(session: Session, comparison_id: str) -> set[str]:
    """The statuses at least one of the comparison's runs has: one EXISTS per status, each an index probe."""
    probes = [
        select(Run.id).where(Run.comparison_id == comparison_id, Run.status == status).exists() for status in RunStatus
    ]
    found = session.execute(select(*probes)).one()
    return {status.value for status, exists in zip(RunStatus, found) if exists}


def _has_final_phase(session: Session, comparison_id: str) -> bool:
    return bool(
        session.scalar(select(select(Run.id).where(Run.comparison_id == comparison_id, Run.phase == FINAL).exists()))
    )


def _start_final_phase(session: Session, comparison: Comparison) -> None:
    """Steps 2 and 3 of the DeepOBS protocol: each entry's best search run by ``tuning.metric`` is rerun on
    the remaining tuning seeds. Failed and diverged runs and non-finite metrics lose; a tie goes to the
    earlier setting in sweep order. An entry none of whose search runs has a finite metric gets no
    final runs. The new runs wait in the outbox (enqueued_at NULL) until published after the commit."""
    search = [run for run in comparison.runs if run.phase == SEARCH]
    scores = _tuning_scores(session, search, comparison.spec["tuning"]["metric"])
    best = summary.tuning_choice(search, scores)  # runs load in position order, which is sweep order
    finals = [
        RunConfig(run.entry_index, run.label, run.optimizer_params, run.sweep_values or {}, seed, FINAL)
        for run in best.values()
        for seed in comparison.spec["tuning"]["seeds"][1:]
    ]
    _add_runs(
        session,
        comparison,
        finals,
        {run.entry_index: run.steps_total for run in search},
        comparison.spec.get("reuse", True),
    )
    session.flush()


def _tuning_scores(session: Session, runs: Sequence[Run], metric: str) -> dict[str, float]:
    """Each succeeded run's finite tuning metric: its final loss, or its last evaluation's validation loss
    (read from the source of a reused run)."""
    succeeded = [run for run in runs if run.status == SUCCEEDED]
    if metric == "final_loss":
        values = {run.id: run.final_loss for run in succeeded}
    else:
        data_ids = {run.reused_from_id or run.id for run in succeeded}
        last = (
            select(Eval.run_id, func.max(Eval.step).label("step"))
            .where(Eval.run_id.in_(data_ids))
            .group_by(Eval.run_id)
            .subquery()
        )
        val_losses = dict(
            session.execute(
                select(Eval.run_id, Eval.val_loss).join(
                    last, and_(Eval.run_id == last.c.run_id, Eval.step == last.c.step)
                )
            ).all()
        )
        values = {run.id: val_losses.get(run.reused_from_id or run.id) for run in succeeded}
    return {run_id: value for run_id, value in values.items() if value is not None and math.isfinite(value)}
