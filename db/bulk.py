"""Bulk writes of step rows: COPY on PostgreSQL, one prepared executemany on SQLite.

Rows arrive as columns (one list per column, see ``StepBatch.columns``), so no per-row dict or ORM
object is ever built. Steps are keyed by (run_id, step): a write retried after a commit whose
answer was lost must not fail or duplicate, so the fast path falls back to ON CONFLICT DO NOTHING
when it meets a row that is already there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import psycopg
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from db import rollups
from db.models import Step

COLUMNS = ("step", "epoch", "loss", "time_s", "step_time_ms", "lr", "x", "grad_norm", "update_norm")
_PG_TYPES = ["text", "int4", "int4", "float8", "float8", "float8", "float8", "text", "float8", "float8"]
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension length
_PG_TRAILER = b"\xff\xff"
_FAITHFUL = ("loss", "grad_norm", "update_norm")  # FaithfulFloat columns: NaN must not become NULL
_SQLITE_INSERT = (f"INSERT OR IGNORE INTO steps (run_id, {', '.join(COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})")


def _encode_x(points: Sequence[Sequence[float]] | None, n: int) -> list[str | None]:
    """Function-problem coordinates as the JSON text FloatList stores (non-finite as strings)."""
    if points is None:
        return [None] * n
    return [json.dumps([v if math.isfinite(v) else repr(v) for v in p], allow_nan=False) for p in points]


def _sqlite_nan(values: Sequence[float | None] | None, n: int) -> Sequence[float | str | None]:
    """SQLite turns NaN into NULL; FaithfulFloat stores it as the text 'NaN' instead."""
    if values is None:
        return [None] * n
    return ["NaN" if v is not None and v != v else v for v in values]


def ingest_steps(session: Session, run_id: str, columns: Mapping[str, Sequence | None]) -> None:
    """Write a flush's step rows and bring the loss rollups up to date, in the caller's transaction."""
    n = len(columns["step"])
    if n == 0:
        return
    if write_steps(session, run_id, columns):
        rollups.merge(session, rollups.aggregate(
            run_id, np.asarray(columns["step"], dtype=np.int64), np.asarray(columns["loss"], dtype=np.float64),
            np.asarray(columns["time_s"], dtype=np.float64), columns.get("epoch")))
    else:
        rollups.rebuild(session, run_id, columns["step"][0], columns["step"][-1])


def write_steps(session: Session, run_id: str, columns: Mapping[str, Sequence | None]) -> bool:
    """Insert the rows of ``columns`` (keys: COLUMNS; a missing or None column is NULL) for one run.
    False when some of them were already there (and were kept)."""
    n = len(columns["step"])
    x = _encode_x(columns.get("x"), n)
    if session.get_bind().dialect.name == "postgresql":
        return _copy_or_insert(session, run_id, columns, x, n)
    values = [x if c == "x" else _sqlite_nan(columns.get(c), n) if c in _FAITHFUL else columns.get(c) or [None] * n
              for c in COLUMNS]
    result = session.connection().exec_driver_sql(_SQLITE_INSERT, list(zip([run_id] * n, *values)))
    return result.rowcount == n


def _binary_copy(run_id: str, columns: Mapping[str, Sequence | None], n: int) -> bytes | None:
    """The whole COPY payload built by numpy in one pass: PostgreSQL's binary format is a fixed
    layout per row when every column is either fully present or fully NULL and has a fixed width.
    None when a column mixes values and NULLs or carries text (x), which take the row-by-row path."""
    key = run_id.encode()
    fields: list[tuple[str, str]] = [("count", ">i2"), ("run_id_len", ">i4"), ("run_id", f"S{len(key)}")]
    values: dict[str, object] = {"count": len(COLUMNS) + 1, "run_id_len": len(key), "run_id": key}
    for name, pg_type in zip(COLUMNS, _PG_TYPES[1:]):
        column = columns.get(name)
        fields.append((f"{name}_len", ">i4"))
        if column is None or (name == "x" and all(v is None for v in column)):
            values[f"{name}_len"] = -1
            continue
        if pg_type == "text":
            return None
        try:
            array = np.asarray(column, dtype=">i4" if pg_type == "int4" else ">f8")
        except (TypeError, ValueError):  # a None among the values
            return None
        fields.append((name, array.dtype.str))
        values[f"{name}_len"] = array.dtype.itemsize
        values[name] = array
    rows = np.empty(n, dtype=np.dtype(fields))
    for name, value in values.items():
        rows[name] = value
    return _PG_HEADER + rows.tobytes() + _PG_TRAILER


def _copy_or_insert(session: Session, run_id: str, columns: Mapping[str, Sequence | None], x: list, n: int) -> bool:
    payload = _binary_copy(run_id, columns, n)
    rows = None if payload is not None else _rows(run_id, columns, x, n)
    try:
        with session.begin_nested():
            cursor = session.connection().connection.driver_connection.cursor()
            with cursor.copy(f"COPY steps (run_id, {', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                if payload is not None:
                    copy.write(payload)
                else:
                    copy.set_types(_PG_TYPES)
                    for row in rows:
                        copy.write_row(row)
        return True
    except psycopg.errors.UniqueViolation:
        pass  # some rows were written before (a retried flush): keep those, add the rest
    keys = ("run_id", *COLUMNS)
    records = [dict(zip(keys, row)) for row in rows or _rows(run_id, columns, x, n)]
    for record in records:
        if record["x"] is not None:
            record["x"] = json.loads(record["x"])
    session.execute(postgresql.insert(Step).on_conflict_do_nothing(index_elements=["run_id", "step"]), records)
    return False


def _rows(run_id: str, columns: Mapping[str, Sequence | None], x: list, n: int) -> list[tuple]:
    return list(zip([run_id] * n, *(x if c == "x" else (columns.get(c) or [None] * n) for c in COLUMNS)))
