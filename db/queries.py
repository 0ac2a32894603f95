"""Every read and write the API and the worker make, in one place."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Integer, Select, String, and_, bindparam, case, cast, delete, exists, func, insert, or_, select, true, update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, make_transient_to_detached, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from analysis import summary
from db import bulk, rollups
from db.models import (
    CANCELLED, FAILED, LOCAL_TEAM_ID, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Checkpoint, Comparison, Eval, Run, Step,
    UTCDateTime, new_id, utcnow,
)
from engine.identity import device_kind, run_hasher
from optibench.settings import get_settings
from engine.sweeps import FINAL, SEARCH, RunConfig, expand


_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class LeaseLost(Exception):
    """Another delivery of the same run now owns it; this one must stop writing."""


# --- comparisons -------------------------------------------------------------------------------


#: rows with every column unset
_NO_COMPARISON, _NO_RUN = (dict.fromkeys(model.__table__.columns.keys()) for model in (Comparison, Run))


def create_comparison(session: Session, spec: dict[str, Any], steps_total: int | Sequence[int],
                      team_id: str = LOCAL_TEAM_ID, submitted_by: str | None = None, *, reuse: bool = False,
                      idempotency_key: str | None = None, request_hash: str | None = None,
                      publishing: bool = False) -> Comparison:
    """One queued run per optimizer setting × seed (engine.sweeps.expand: a tuning job's search phase
    only); ``spec`` is the validated spec's JSON form, ``steps_total`` per entry, or one for all.

    With ``reuse`` (the submit route passes the spec's), a run identical to a succeeded run of the team
    (engine.identity) is created succeeded instead, pointing at it, and is never queued; a comparison
    made only of such runs has succeeded already. Without it, as for direct callers, every run trains.

    ``publishing``: the caller publishes the queued runs right after the commit, so they are stored as
    published (enqueued_at set) instead of in the outbox, which spares every submit a second write;
    a publish that fails puts them back (``worker.dispatch.enqueue_new_runs(marked=True)``). Should the
    process die between the commit and the publish, the sweeper republishes them after
    OPTIBENCH_REPUBLISH_AFTER_S, as for a message the broker lost.

    The rows go in as two plain INSERTs, the runs' one executemany: the ORM's unit of work cost more
    than the rest of a submit. The objects returned are in the session as if read back."""
    if isinstance(steps_total, int):
        steps_total = [steps_total] * len(spec["optimizers"])
    row = {**_NO_COMPARISON, "id": new_id(), "team_id": team_id, "name": spec["name"], "status": QUEUED,
           "spec": spec, "tags": spec.get("tags", []), "submitted_by": submitted_by, "created_at": utcnow(),
           "idempotency_key": idempotency_key, "request_hash": request_hash, **_history_columns(spec)}
    runs, reused = _run_rows(session, row, expand(spec), steps_total, reuse, first_position=0)
    if publishing:
        for run in runs:
            if run["status"] == QUEUED:
                run["enqueued_at"] = row["created_at"]
    _insert(session, Comparison, [row])
    _insert(session, Run, runs)
    comparison = _persistent(session, Comparison(**row))
    set_committed_value(comparison, "runs", [_persistent(session, Run(**run)) for run in runs])
    if reused:
        refresh_comparison(session, comparison.id)
    return comparison


def _insert(session: Session, model: type[Comparison | Run], rows: Sequence[dict[str, Any]]) -> None:
    """INSERT complete rows, one executemany per set of non-NULL columns: a None is left out, so that
    JSON columns get SQL NULL (as from the ORM) rather than JSON 'null'."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        present = {column: value for column, value in row.items() if value is not None}
        groups.setdefault(tuple(present), []).append(present)
    for group in groups.values():
        session.execute(insert(model.__table__), group)


def _persistent(session: Session, instance: Comparison | Run) -> Comparison | Run:
    """``instance``, whose every column is set and whose row was just inserted, in the session as if
    loaded: no second INSERT at the flush, and no SELECT when read."""
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


def _history_columns(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's component names, which the history filters on."""
    problem = spec["problem"]
    return {"model_name": (problem.get("model") or {}).get("name"),
            "dataset_name": (problem.get("dataset") or {}).get("name"),
            "function_name": (problem.get("function") or {}).get("name"),
            "optimizer_names": list(dict.fromkeys(entry["name"] for entry in spec["optimizers"]))}


#: what a reused run copies from its source
_OUTCOME = ("steps_done", "final_loss", "best_loss", "wall_time_s", "diverged_step", "device", "hardware",
            "started_at", "finished_at")


def _run_rows(session: Session, comparison: Mapping[str, Any], configs: Sequence[RunConfig],
              steps_total: Sequence[int] | Mapping[int, int], reuse: bool,
              first_position: int) -> tuple[list[dict[str, Any]], bool]:
    """The complete rows of a comparison's new runs, each with its config hash, numbered from
    ``first_position``. With ``reuse``, those identical to a succeeded run of the team are succeeded
    already; returns the rows and whether any was."""
    spec = comparison["spec"]
    device = device_kind(spec["device"], get_settings().auto_device)
    run_hash = run_hasher(spec, device)
    hashes = [run_hash(c.entry_index, c.params, c.seed) for c in configs]
    sources = _reusable_runs(session, comparison["team_id"], hashes) if reuse else {}
    rows = []
    for position, (config, config_hash) in enumerate(zip(configs, hashes), start=first_position):
        row = {**_NO_RUN, "id": new_id(), "comparison_id": comparison["id"], "position": position,
               "entry_index": config.entry_index, "label": config.label, "seed": config.seed,
               "optimizer_name": spec["optimizers"][config.entry_index]["name"], "optimizer_params": config.params,
               "sweep_values": config.sweep_values, "phase": config.phase, "config_hash": config_hash,
               "status": QUEUED, "steps_total": steps_total[config.entry_index], "steps_done": 0, "attempt": 0,
               "device": device}
        source = sources.get(config_hash)
        if source is not None:
            row.update({column: getattr(source, column) for column in _OUTCOME},
                       status=SUCCEEDED, reused_from_id=source.reused_from_id or source.id)
        rows.append(row)
    return rows, bool(sources)


def _add_runs(session: Session, comparison: Comparison, configs: Sequence[RunConfig],
              steps_total: Sequence[int] | Mapping[int, int], reuse: bool) -> None:
    """Append runs to a stored comparison, after its existing ones; the caller flushes."""
    columns = {"id": comparison.id, "team_id": comparison.team_id, "spec": comparison.spec}
    rows, _ = _run_rows(session, columns, configs, steps_total, reuse, first_position=len(comparison.runs))
    comparison.runs.extend(Run(**row) for row in rows)


def _reusable_runs(session: Session, team_id: str, hashes: Sequence[str]) -> dict[str, Run]:
    """By config hash, a succeeded run of the team in a comparison not deleted: an original rather than
    a reuse, then the earliest. One query over the config_hash index."""
    found: dict[str, Run] = {}
    if not hashes:
        return found
    candidates = session.scalars(
        select(Run).join(Comparison)
        .where(Run.config_hash.in_(set(hashes)), Run.status == SUCCEEDED, Comparison.team_id == team_id,
               Comparison.deleted_at.is_(None))
        .order_by(Run.reused_from_id.is_not(None), Run.finished_at, Run.id)
    )
    for run in candidates:
        found.setdefault(run.config_hash, run)
    return found


def get_comparison(session: Session, comparison_id: str, team_id: str) -> Comparison | None:
    """The team's comparison, or None: another team's and deleted ones look exactly like missing ones."""
    return session.scalar(
        select(Comparison)
        .where(Comparison.id == comparison_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
        .options(selectinload(Comparison.runs))
    )


def _encode_cursor(comparison: Comparison) -> str:
    raw = json.dumps([comparison.created_at.isoformat(), comparison.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor we issued."""
    try:
        created_at, comparison_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(comparison_id)
    except Exception as exc:
        raise ValueError("malformed cursor") from exc


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows: every condition given must hold. ``q`` is a case-insensitive
    substring of the name; ``optimizer`` a registered optimizer name of any entry."""

    status: str | None = None
    optimizer: str | None = None
    model: str | None = None
    dataset: str | None = None
    function: str | None = None
    tag: str | None = None
    q: str | None = None

    def params(self) -> dict[str, str]:
        """The filters given, by name: the values of their conditions' bound parameters."""
        given = {name: value for name, value in asdict(self).items() if value is not None}
        if given.get("q") == "":
            del given["q"]
        if "q" in given:  # LIKE's wildcards are searched as themselves
            given["q"] = given["q"].replace("/", "//").replace("%", "/%").replace("_", "/_")
        return given


#: the history's filters on plain columns, by name
_EQUAL = {"status": Comparison.status, "model": Comparison.model_name, "dataset": Comparison.dataset_name,
          "function": Comparison.function_name}
#: and on JSON lists of names
_LISTED = {"optimizer": Comparison.optimizer_names, "tag": Comparison.tags}


def _filter_conditions(dialect: str, given: tuple[str, ...]) -> list:
    """The conditions of these filters, on bound parameters named after them (HistoryFilter.params)."""
    found = [_EQUAL[name] == bindparam(name, type_=String) for name in given if name in _EQUAL]
    found += [_json_list_contains(_LISTED[name], bindparam(name, type_=String), dialect)
              for name in given if name in _LISTED]
    if "q" in given:
        found.append(Comparison.name.icontains(bindparam("q", type_=String), escape="/"))
    return found


def _json_list_contains(column, value, dialect: str):
    """Whether the JSON list of strings in ``column`` holds ``value``, exactly."""
    if dialect == "postgresql":
        return cast(column, postgresql.JSONB).contains(func.jsonb_build_array(value))
    element = func.json_each(column).table_valued("value")
    return exists(select(1).select_from(element).where(element.c.value == value))


#: what a history page of the API shows of each comparison
SUMMARY_COLUMNS = ("id", "name", "status", "created_at", "finished_at", "tags", "note", "submitted_by")


@lru_cache(maxsize=1024)  # at most 2 shapes x 2 dialects x 2^7 filter sets x 2
def _history_statement(summaries: bool, dialect: str, filters: tuple[str, ...], paged: bool) -> Select:
    """The history query of one shape, built once: building and hashing a statement costs more than
    running it. Comparisons (or, with ``summaries``, the SUMMARY_COLUMNS and the runs' progress) of
    team ``team_id``, newest first, at most ``limit`` of them, keyset-paginated on (created_at, id)
    after (``after_created_at``, ``after_id``) when ``paged``, so deep pages stay as fast as the first:
    it walks the (team_id[, status], created_at, id) index in order and stops after ``limit``
    matches, whatever the filters."""
    columns = [getattr(Comparison, name) for name in SUMMARY_COLUMNS] if summaries else [Comparison]
    query = (select(*columns)
             .where(Comparison.team_id == bindparam("team_id"), Comparison.deleted_at.is_(None),
                    *_filter_conditions(dialect, filters))
             .order_by(Comparison.created_at.desc(), Comparison.id.desc())
             .limit(bindparam("limit", type_=Integer)))
    if paged:
        created_at, comparison_id = bindparam("after_created_at", type_=UTCDateTime()), bindparam("after_id")
        query = query.where(or_(Comparison.created_at < created_at,
                                and_(Comparison.created_at == created_at, Comparison.id < comparison_id)))
    if not summaries:
        return query
    # the page first, then its runs' progress: grouping the join would aggregate the whole history
    aggregates = (func.count().label("runs"), func.sum(case((Run.status.in_(TERMINAL), 1), else_=0)).label("done"),
                  func.sum(Run.steps_total).label("steps"), func.sum(Run.steps_done).label("steps_done"))
    if dialect == "postgresql":
        # each comparison's runs through the comparison_id index: a third of the planning and running
        # time of grouping them all
        page = query.subquery("page")
        progress = select(*aggregates).where(Run.comparison_id == page.c.id).lateral("progress")
        joined = true()
    else:  # SQLite has no LATERAL
        page = query.cte("page")
        progress = (select(Run.comparison_id, *aggregates).where(Run.comparison_id.in_(select(page.c.id)))
                    .group_by(Run.comparison_id).subquery("progress"))
        joined = progress.c.comparison_id == page.c.id
    return (select(*page.c, *(func.coalesce(progress.c[column.name], 0) for column in aggregates))
            .outerjoin(progress, joined)
            .order_by(page.c.created_at.desc(), page.c.id.desc()))


def _history(session: Session, summaries: bool, team_id: str, limit: int, cursor: str | None,
             where: HistoryFilter) -> tuple[list, str | None]:
    filters = where.params()
    params = {"team_id": team_id, "limit": limit + 1, **filters}
    if cursor:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor)
    statement = _history_statement(summaries, session.get_bind().dialect.name, tuple(filters), bool(cursor))
    # the summaries' plain columns need none of the ORM's handling of a statement
    rows = (session.connection().execute if summaries else session.scalars)(statement, params).all()
    page = list(rows[:limit])
    return page, (_encode_cursor(page[-1]) if len(rows) > limit else None)


def list_comparisons(session: Session, team_id: str, limit: int, cursor: str | None = None,
                     where: HistoryFilter = HistoryFilter()) -> tuple[list[Comparison], str | None]:
    """The team's history, newest first, and the cursor of the next page (None on the last)."""
    return _history(session, False, team_id, limit, cursor, where)


def history_page(session: Session, team_id: str, limit: int, cursor: str | None = None,
                 where: HistoryFilter = HistoryFilter()) -> tuple[list[tuple], str | None]:
    """list_comparisons' page as plain rows, in one query: the SUMMARY_COLUMNS, then the runs'
    progress (runs_total, runs_done, steps_total, steps_done). No ORM objects, and no column the page
    does not show (the spec is most of a row)."""
    return _history(session, True, team_id, limit, cursor, where)


@dataclass(frozen=True)
class Progress:
    runs_total: int = 0
    runs_done: int = 0
    steps_total: int = 0
    steps_done: int = 0


def progress_of(session: Session, comparison_ids: Sequence[str]) -> dict[str, Progress]:
    """Progress of many comparisons in one aggregate query."""
    if not comparison_ids:
        return {}
    done = func.sum(case((Run.status.in_(TERMINAL), 1), else_=0))
    rows = session.execute(
        select(Run.comparison_id, func.count(), done, func.sum(Run.steps_total), func.sum(Run.steps_done))
        .where(Run.comparison_id.in_(comparison_ids))
        .group_by(Run.comparison_id)
    )
    return {cid: Progress(n, int(d or 0), int(st or 0), int(sd or 0)) for cid, n, d, st, sd in rows}


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
    same transaction, so the job never shows 'succeeded' between the phases."""
    comparison = session.scalar(select(Comparison).where(Comparison.id == comparison_id).with_for_update())
    runs = session.execute(select(Run.status, Run.phase).where(Run.comparison_id == comparison_id)).all()
    if comparison.spec.get("tuning") and all(r.phase == SEARCH and r.status in _SEARCH_OVER for r in runs):
        _start_final_phase(session, comparison)
        runs = session.execute(select(Run.status, Run.phase).where(Run.comparison_id == comparison_id)).all()
    comparison.status = comparison_status([r.status for r in runs])
    if comparison.status in TERMINAL and comparison.finished_at is None:
        comparison.finished_at = utcnow()
        # the runs as they are now: bulk updates of this transaction may have left loaded ones stale
        session.scalars(select(Run).where(Run.comparison_id == comparison_id)
                        .execution_options(populate_existing=True)).all()
        comparison.winners = summary.winners(comparison)


def _start_final_phase(session: Session, comparison: Comparison) -> None:
    """Steps 2 and 3 of the DeepOBS protocol: each entry's best search run by ``tuning.metric`` is rerun on
    the remaining tuning seeds. Failed and diverged runs and non-finite metrics lose; a tie goes to the
    earlier setting in sweep order. An entry none of whose search runs has a finite metric gets no
    final runs. The new runs wait in the outbox (enqueued_at NULL) until published after the commit."""
    search = [run for run in comparison.runs if run.phase == SEARCH]
    scores = _tuning_scores(session, search, comparison.spec["tuning"]["metric"])
    best: dict[int, Run] = {}
    for run in search:  # in position order, which is sweep order
        incumbent = best.get(run.entry_index)
        if run.id in scores and (incumbent is None or scores[run.id] < scores[incumbent.id]):
            best[run.entry_index] = run
    finals = [RunConfig(run.entry_index, run.label, run.optimizer_params, run.sweep_values or {}, seed, FINAL)
              for run in best.values() for seed in comparison.spec["tuning"]["seeds"][1:]]
    _add_runs(session, comparison, finals, {run.entry_index: run.steps_total for run in search},
              comparison.spec.get("reuse", True))
    session.flush()


def _tuning_scores(session: Session, runs: Sequence[Run], metric: str) -> dict[str, float]:
    """Each succeeded run's finite tuning metric: its final loss, or its last evaluation's validation loss
    (read from the source of a reused run)."""
    succeeded = [run for run in runs if run.status == SUCCEEDED]
    if metric == "final_loss":
        values = {run.id: run.final_loss for run in succeeded}
    else:
        data_ids = {run.reused_from_id or run.id for run in succeeded}
        last = (select(Eval.run_id, func.max(Eval.step).label("step")).where(Eval.run_id.in_(data_ids))
                .group_by(Eval.run_id).subquery())
        val_losses = dict(session.execute(
            select(Eval.run_id, Eval.val_loss).join(last, and_(Eval.run_id == last.c.run_id, Eval.step == last.c.step))
        ).all())
        values = {run.id: val_losses.get(run.reused_from_id or run.id) for run in succeeded}
    return {run_id: value for run_id, value in values.items() if value is not None and math.isfinite(value)}


# --- runs: the lease ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    run_id: str
    attempt: int
    comparison_id: str
    entry_index: int
    seed: int
    steps_total: int
    spec: dict[str, Any]
    #: the run's own, exact params (a swept run's differ from its spec entry's)
    optimizer_params: dict[str, Any]
    #: the device kind the run was routed to ('cpu', 'cuda'); None for runs created before it was stored
    device: str | None = None
    checkpoint: bytes | None = None  # resume from here; None: from step 0


def claim_run(session: Session, run_id: str, lease_timeout_s: float) -> Claim | None:
    """Take the run if it is queued or its holder's heartbeat is stale; None if someone else has it
    or it is finished. An earlier attempt's rows after its last checkpoint are dropped, so the run
    resumes exactly where the checkpoint left it (from step 0 without one)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_timeout_s)
    checkpoint = session.execute(select(Checkpoint.step, Checkpoint.state).where(Checkpoint.run_id == run_id)).one_or_none()
    resume_step = checkpoint.step if checkpoint else 0
    kept_best = (select(func.min(Step.loss)).where(Step.run_id == run_id, Step.step < resume_step)
                 .scalar_subquery())
    claimed = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .where(or_(Run.status == QUEUED, and_(Run.status == RUNNING, Run.heartbeat_at < stale)))
        .values(status=RUNNING, attempt=Run.attempt + 1, heartbeat_at=now, steps_done=resume_step, error=None,
                best_loss=kept_best, final_loss=None, diverged_step=None, wall_time_s=None,
                started_at=func.coalesce(Run.started_at, now))
        .returning(Run.attempt, Run.comparison_id, Run.entry_index, Run.seed, Run.steps_total, Run.optimizer_params,
                   Run.device)
    ).one_or_none()
    if claimed is None:
        return None
    attempt, comparison_id, entry_index, seed, steps_total, optimizer_params, device = claimed
    if attempt > 1:  # only an earlier attempt can have left rows
        session.execute(delete(Step).where(Step.run_id == run_id, Step.step >= resume_step))
        rollups.rebuild(session, run_id, resume_step)
        session.execute(delete(Eval).where(Eval.run_id == run_id, Eval.step > resume_step))
    refresh_comparison(session, comparison_id)
    spec = session.scalar(select(Comparison.spec).where(Comparison.id == comparison_id))
    return Claim(run_id, attempt, comparison_id, entry_index, seed, steps_total, spec, optimizer_params, device,
                 checkpoint.state if checkpoint else None)


def _holding(run_id: str, attempt: int):
    return and_(Run.id == run_id, Run.attempt == attempt, Run.status == RUNNING)


@lru_cache
def _heartbeat(flushed: bool):
    """append_steps' lease check and heartbeat, built once: it runs at every flush."""
    values = {"heartbeat_at": bindparam("now", type_=Run.heartbeat_at.type)}
    if flushed:
        values.update(steps_done=bindparam("steps_done", type_=Run.steps_done.type),
                      best_loss=bindparam("best_loss", type_=Run.best_loss.type))
    return update(Run.__table__).where(_holding(bindparam("holder"), bindparam("holder_attempt"))).values(values)


def append_steps(session: Session, run_id: str, attempt: int, steps: Mapping[str, Sequence | None] | None,
                 best_loss: float | None, evals: Sequence[dict[str, Any]] = (),
                 checkpoint: tuple[int, bytes] | None = None) -> str:
    """Write a flush (step rows as columns, see ``StepBatch.columns``; evaluations; the checkpoint
    taken right after it) and beat the heart, only while this attempt holds the lease. Returns the
    run's status as others left it: 'cancelled' stops the trainer."""
    values: dict[str, Any] = {"holder": run_id, "holder_attempt": attempt, "now": utcnow()}
    flushed = bool(steps and len(steps["step"]))
    if flushed:
        values.update(steps_done=int(steps["step"][-1]) + 1, best_loss=best_loss)
    held = session.connection().execute(_heartbeat(flushed), values).rowcount
    if not held:
        status = session.scalar(select(Run.status).where(Run.id == run_id))
        if status == CANCELLED:
            return CANCELLED
        raise LeaseLost(f"run {run_id} attempt {attempt} no longer holds its lease (status {status})")
    if steps:
        bulk.ingest_steps(session, run_id, steps)
    if evals:
        statement = _INSERT[session.get_bind().dialect.name](Eval).on_conflict_do_nothing(index_elements=["run_id", "step"])
        session.execute(statement, [{"run_id": run_id, **row} for row in evals])
    if checkpoint is not None:
        step, state = checkpoint
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        session.add(Checkpoint(run_id=run_id, step=step, state=state))
    return RUNNING


def finish_run(session: Session, run_id: str, attempt: int, status: str, *, steps_done: int | None = None,
               final_loss: float | None = None, best_loss: float | None = None, wall_time_s: float | None = None,
               diverged_step: int | None = None, device: str | None = None, error: str | None = None,
               hardware: dict[str, Any] | None = None) -> bool:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    for key, value in (("steps_done", steps_done), ("final_loss", final_loss), ("best_loss", best_loss),
                       ("wall_time_s", wall_time_s), ("diverged_step", diverged_step), ("device", device),
                       ("hardware", hardware)):
        if value is not None:
            values[key] = value
    held = session.execute(update(Run).where(_holding(run_id, attempt)).values(**values)).rowcount
    if held:
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        comparison_id = session.scalar(select(Run.comparison_id).where(Run.id == run_id))
        refresh_comparison(session, comparison_id)
    return bool(held)


def cancel(session: Session, *, comparison_id: str | None = None, run_id: str | None = None) -> list[str]:
    """Cancel every unfinished run of a comparison, or one run. Queued runs end at once; a running
    run's trainer sees the status at its next flush and stops. Rows already written are kept."""
    query = select(Run.id, Run.comparison_id).where(Run.status.not_in(TERMINAL))
    query = query.where(Run.comparison_id == comparison_id) if comparison_id else query.where(Run.id == run_id)
    targets = session.execute(query.with_for_update()).all()
    if not targets:
        return []
    ids = [t.id for t in targets]
    session.execute(update(Run).where(Run.id.in_(ids), Run.status.not_in(TERMINAL))
                    .values(status=CANCELLED, finished_at=utcnow()))
    session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(ids)))
    for cid in {t.comparison_id for t in targets}:
        refresh_comparison(session, cid)
    return ids


def fail_unfinished(session: Session, comparison_id: str, error: str) -> list[str]:
    """Fail every unfinished run of a comparison with ``error`` (a submit that broke after storing
    it), so that nothing stays queued with no one to train it."""
    ids = list(session.scalars(select(Run.id).where(Run.comparison_id == comparison_id,
                                                    Run.status.not_in(TERMINAL))))
    if ids:
        session.execute(update(Run).where(Run.id.in_(ids), Run.status.not_in(TERMINAL))
                        .values(status=FAILED, error=error, finished_at=utcnow()))
        refresh_comparison(session, comparison_id)
    return ids


_MARK_ENQUEUED = (update(Run.__table__)
                  .where(Run.id.in_(bindparam("ids", expanding=True)), Run.status == QUEUED)
                  .values(enqueued_at=bindparam("at", type_=Run.enqueued_at.type)))


def mark_enqueued(session: Session, run_ids: Sequence[str], published: bool = True) -> None:
    """Mark queued runs published (now), or not (back in the outbox)."""
    session.connection().execute(_MARK_ENQUEUED, {"ids": list(run_ids), "at": utcnow() if published else None})


@dataclass(frozen=True)
class Publish:
    """What publishing a run's task needs: its time limits follow from its steps, its queue from its device."""

    steps_total: int
    device: str | None
    #: its priority follows from its comparison's place in the team's backlog (backlog_ahead)
    comparison_id: str | None = None

    @classmethod
    def of(cls, run: Run) -> Publish:
        return cls(run.steps_total, run.device, run.comparison_id)


def unpublished_runs(session: Session, republish_before: datetime | None = None, limit: int = 500,
                     comparison_id: str | None = None) -> dict[str, Publish]:
    """The outbox: queued runs whose task was never published (the broker was down at submit, or a
    tuning job's final phase was just created), and those published before ``republish_before`` that
    nobody has taken (the broker may have lost them)."""
    unpublished = Run.enqueued_at.is_(None)
    if republish_before is not None:
        unpublished = or_(unpublished, Run.enqueued_at < republish_before)
    query = select(Run.id, Run.steps_total, Run.device, Run.comparison_id).where(Run.status == QUEUED, unpublished)
    if comparison_id is not None:
        query = query.where(Run.comparison_id == comparison_id)
    rows = session.execute(query.order_by(Run.comparison_id, Run.position).limit(limit))
    return {run_id: Publish(steps_total, device, cid) for run_id, steps_total, device, cid in rows}


def published_runs(session: Session, published_before: datetime, limit: int = 50_000) -> dict[str, Publish]:
    """Queued runs published before ``published_before`` and not taken since: their message should be
    in the broker (worker.sweeper.republish_lost checks that it is). Served by the index on enqueued_at."""
    rows = session.execute(select(Run.id, Run.steps_total, Run.device, Run.comparison_id)
                           .where(Run.enqueued_at < published_before, Run.status == QUEUED).limit(limit))
    return {run_id: Publish(steps_total, device, cid) for run_id, steps_total, device, cid in rows}


def backlog_ahead(session: Session, comparison_ids: Sequence[str]) -> dict[str, int]:
    """For each comparison, how many of its team's comparisons created before it are queued or running:
    the more a team has waiting, the later its next work is served (worker.dispatch's priorities)."""
    earlier = aliased(Comparison)
    rows = session.execute(
        select(Comparison.id, func.count(earlier.id))
        .outerjoin(earlier, and_(earlier.team_id == Comparison.team_id, earlier.status.in_((QUEUED, RUNNING)),
                                 earlier.created_at < Comparison.created_at))
        .where(Comparison.id.in_(list(set(comparison_ids)))).group_by(Comparison.id)
    )
    return dict(rows.all())


def reap_stale_runs(session: Session, lease_timeout_s: float, max_attempts: int) -> tuple[list[str], list[str]]:
    """The watchdog: a 'running' run whose heartbeat is older than the lease lost its worker. It goes
    back to the outbox while attempts remain, else fails with the reason. Returns (requeued, failed)."""
    stale = utcnow() - timedelta(seconds=lease_timeout_s)
    rows = session.execute(
        select(Run.id, Run.attempt, Run.comparison_id)
        .where(Run.status == RUNNING, or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < stale))
        .with_for_update(skip_locked=True)
    ).all()
    requeued = [r.id for r in rows if r.attempt < max_attempts]
    failed = [r.id for r in rows if r.attempt >= max_attempts]
    if requeued:
        session.execute(update(Run).where(Run.id.in_(requeued)).values(status=QUEUED, enqueued_at=None))
    if failed:
        session.execute(update(Run).where(Run.id.in_(failed)).values(
            status=FAILED, finished_at=utcnow(),
            error=f"lost its worker {max_attempts} times (no heartbeat for {lease_timeout_s:.0f}s); giving up",
        ))
        session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(failed)))
    for cid in {r.comparison_id for r in rows}:
        refresh_comparison(session, cid)
    return requeued, failed


def requeue_orphans(session: Session, older_than: datetime) -> list[str]:
    """Runs left 'running' by a worker that died: back to the outbox, to be enqueued again."""
    orphans = list(session.scalars(
        select(Run.id).where(Run.status == RUNNING, or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < older_than))
    ))
    if orphans:
        session.execute(update(Run).where(Run.id.in_(orphans), Run.status == RUNNING)
                        .values(status=QUEUED, enqueued_at=None))
    return orphans


# --- steps -------------------------------------------------------------------------------------


def get_run(session: Session, run_id: str, team_id: str) -> Run | None:
    """The team's run, or None, as for get_comparison."""
    return session.scalar(
        select(Run).join(Comparison)
        .where(Run.id == run_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
    )


def iter_evals(session: Session, run_id: str) -> list[Eval]:
    return list(session.scalars(select(Eval).where(Eval.run_id == run_id).order_by(Eval.step)))


def iter_steps(session: Session, run_id: str, chunk: int = 10_000) -> Iterator[Step]:
    query = select(Step).where(Step.run_id == run_id).order_by(Step.step).execution_options(yield_per=chunk)
    yield from session.scalars(query)
