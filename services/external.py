"""External runs (docs/ingest.md): a client trains a run of a comparison's problem on its own machine and
uploads its step rows as Arrow IPC streams. Decoding checks the whole batch before anything is written, so a
refused batch stores nothing; stored rows go through the worker's write path (``db.bulk``)."""

from __future__ import annotations

import threading
import time
from typing import Any, Unpack

import numpy as np
import pyarrow as pa
from sqlalchemy.orm import Session

from db import external
from db.models import RUNNING, Run
from engine.columns import STEP_COLUMNS
from optibench.settings import Settings
from services import access

ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: what an upload may carry: every number column; ``x`` (a function problem's point) is not uploaded
_INTEGER = {c.name for c in STEP_COLUMNS if c.kind == "int4"}
_FLOAT = {c.name for c in STEP_COLUMNS if c.kind in ("float8", "faithful")}
REQUIRED = ("step", "loss", "time_s", "step_time_ms")
_INT4_MAX = 2**31 - 1


class BadInput(ValueError):
    """Refused input: ``loc`` is where (``("body", "step")``), ``str()`` says what; nothing was stored."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


class NotArrow(Exception):
    """The body is not declared an Arrow IPC stream (a 415)."""


class Finished(Exception):
    """The run takes no more rows (a 409)."""


class TooFast(Exception):
    """The team is over its ingest rate; ``retry_after_s`` says when to try again (a 429)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def create_run(
    session: Session,
    team_id: str,
    comparison_id: str,
    *,
    seed: int,
    label: str,
    optimizer: str,
    params: dict[str, Any],
    device: str | None,
    hardware: dict[str, Any] | None,
    client: dict[str, Any] | None,
    key: str | None = None,
) -> Run:
    """A running external run of the team's comparison, paired by ``seed`` with its catalogue runs (whose
    budget it takes). Commits. A ``key`` the comparison has seen returns the run created with it."""
    comparison = access.comparison(session, comparison_id, team_id)
    if key is not None:
        for run in comparison.runs:
            if run.external and (run.client or {}).get("key") == key:
                return run
        client = {**(client or {}), "key": key}
    catalogue = [run for run in comparison.runs if not run.external]
    same_seed = [run for run in catalogue if run.seed == seed]
    if not same_seed:
        seeds = sorted({run.seed for run in catalogue})
        raise BadInput(("body", "seed"), f"seed {seed} is not one of the comparison's seeds {seeds}")
    if label in {run.label for run in catalogue}:
        raise BadInput(("body", "label"), f"label {label!r} is a catalogue run's label; choose another")
    run = external.create_run(
        session,
        comparison,
        label=label,
        optimizer_name=optimizer,
        optimizer_params=params,
        seed=seed,
        steps_total=same_seed[0].steps_total,
        device=device,
        hardware=hardware,
        client=client,
    )
    session.commit()
    return run


def finish_run(session: Session, team_id: str, run_id: str, status: str, **outcome: Unpack[external.Outcome]) -> Run:
    """End the team's running external run. Commits."""
    access.run(session, run_id, team_id)
    try:
        run = external.finish(session, run_id, status, **outcome)
    except external.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return run


def heartbeat(session: Session, team_id: str, run_id: str) -> str:
    """Extend the run's lease; its status ('cancelled': the client stops). Commits."""
    access.run(session, run_id, team_id)
    try:
        status = external.heartbeat(session, run_id)
    except external.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return status


def append_steps(
    session: Session, settings: Settings, team_id: str, run_id: str, content_type: str, body: bytes
) -> dict[str, Any]:
    """Store one uploaded batch, all or nothing, idempotent by (run, step); it beats the run's heart too.
    Commits. The answer tells the client whether the run was cancelled (it stops) and how many rows were new."""
    access.run(session, run_id, team_id)  # another team's run is missing, before anything about the body
    require_arrow(content_type)
    columns = decode_batch(body)
    rows = 0 if columns is None else len(columns["step"] if columns["step"] is not None else ())
    _limits.take(team_id, rows, len(body), settings)
    try:
        if columns is None:
            status, stored = external.heartbeat(session, run_id), 0
        else:
            status, stored = external.append_steps(session, run_id, columns)
    except external.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return {
        "run_id": run_id,
        "status": status,
        "cancelled": status != RUNNING,
        "rows": rows,
        "stored": stored,
    }


def append_evals(
    session: Session, settings: Settings, team_id: str, run_id: str, evals: list[dict[str, Any]]
) -> dict[str, Any]:
    """Store a batch of whole-set evaluations (what suites score: docs/suites.md), all or nothing, idempotent
    by (run, step); also a heartbeat. Commits. Steps are strictly increasing and within the run's budget."""
    run = access.run(session, run_id, team_id)
    steps = [row["step"] for row in evals]
    for i, (before, step) in enumerate(zip([-1, *steps], steps)):
        if step <= before:
            raise BadInput(("body", "evals", i, "step"), f"steps must be strictly increasing: {step} after {before}")
        if step > run.steps_total:
            raise BadInput(
                ("body", "evals", i, "step"), f"step {step} is past the run's last update ({run.steps_total})"
            )
    _limits.take(team_id, len(evals), 0, settings)
    try:
        status, stored = external.append_evals(session, run_id, evals)
    except external.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return {"run_id": run_id, "status": status, "cancelled": status != RUNNING, "rows": len(evals), "stored": stored}


def require_arrow(content_type: str) -> None:
    """Raises NotArrow unless the body is declared an Arrow IPC stream (its parameters aside)."""
    if content_type.split(";")[0].strip() != ARROW_STREAM:
        raise NotArrow(f"the body is an Arrow IPC stream: Content-Type: {ARROW_STREAM}")


def decode_batch(body: bytes) -> dict[str, np.ndarray | None] | None:
    """An Arrow IPC stream's rows as the write path's columns, or None when it has no rows. Raises BadInput
    (naming the column) for a malformed stream, a missing, unknown or mistyped column, a column with nulls
    in some rows only, and steps that are negative, too large or not strictly increasing."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise BadInput(("body",), f"not an Arrow IPC stream ({ARROW_STREAM}): {exc}") from exc
    names = table.schema.names
    if len(set(names)) != len(names):
        raise BadInput(("body",), f"a column appears twice: {names}")
    for name in names:
        if name not in _INTEGER | _FLOAT:
            raise BadInput(("body", name), f"unknown column {name!r}; columns: {sorted(_INTEGER | _FLOAT)}")
    for name in REQUIRED:
        if name not in names:
            raise BadInput(("body", name), f"column {name!r} is required")
    if table.num_rows == 0:
        return None
    columns: dict[str, np.ndarray | None] = {}
    for name in names:
        column = table.column(name)
        kind = column.type
        if pa.types.is_null(kind) or column.null_count == table.num_rows:
            if name in REQUIRED:
                raise BadInput(("body", name), f"column {name!r} needs a value in every row")
            columns[name] = None
            continue
        expected = "int64 or int32" if name in _INTEGER else "float64"
        fits = pa.types.is_int64(kind) or pa.types.is_int32(kind) if name in _INTEGER else pa.types.is_float64(kind)
        if not fits:
            raise BadInput(("body", name), f"column {name!r} is {kind}; it must be {expected}")
        if column.null_count:
            raise BadInput(("body", name), f"column {name!r} has nulls in some rows: a value in every row, or none")
        columns[name] = column.to_numpy()
    step = columns["step"]
    assert step is not None
    step = step.astype(np.int64)
    if step[0] < 0 or step[-1] > _INT4_MAX:
        raise BadInput(("body", "step"), f"steps count updates from 0 and stay below {_INT4_MAX + 1}")
    order = np.diff(step)
    if (order <= 0).any():
        at = int(np.flatnonzero(order <= 0)[0]) + 1
        what = "duplicate" if order[at - 1] == 0 else "decreasing"
        raise BadInput(
            ("body", "step"),
            f"steps must be strictly increasing within a batch: row {at} has a {what} step {int(step[at])}",
        )
    columns["step"] = step
    return columns


class _Limits:
    """Per-team token buckets of rows and bytes per second, in this process: a team may burst one second's
    worth, then is refused (429) until its bucket refills."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, float]] = {}  # team: rows, bytes, at

    def take(self, team_id: str, rows: int, size: int, settings: Settings) -> None:
        now = time.monotonic()
        row_rate, byte_rate = settings.ingest_rows_per_s, settings.ingest_bytes_per_s
        with self._lock:
            row_tokens, byte_tokens, at = self._buckets.get(team_id, (row_rate, byte_rate, now))
            row_tokens = min(row_rate, row_tokens + (now - at) * row_rate)
            byte_tokens = min(byte_rate, byte_tokens + (now - at) * byte_rate)
            if row_tokens <= 0 or byte_tokens <= 0:
                wait = max(-row_tokens / row_rate, -byte_tokens / byte_rate, 0.0) + 0.01
                self._buckets[team_id] = (row_tokens, byte_tokens, now)
                raise TooFast(
                    f"the team's ingest limit ({row_rate:.0f} rows/s, {byte_rate:.0f} bytes/s; "
                    "OPTIBENCH_INGEST_ROWS_PER_S, OPTIBENCH_INGEST_BYTES_PER_S) is used up; retry later",
                    wait,
                )
            self._buckets[team_id] = (row_tokens - rows, byte_tokens - size, now)


_limits = _Limits()
