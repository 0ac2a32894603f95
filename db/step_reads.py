"""A run's step rows read back as Arrow record batches, chunk by chunk, without a Python object per value:
on PostgreSQL one row per chunk holding each column's values packed into a bytea, which numpy reads in
place; on SQLite the driver's tuples turned into columns. NaN stays apart from NULL in both."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Step
from db.session import driver_connection
from engine.columns import NUMBER_COLUMNS, STEP_COLUMNS

CHUNK_ROWS = 250_000
_KINDS = {column.name: column.kind for column in STEP_COLUMNS}
#: the number columns as Arrow sends them: integers as int64, the rest float64, any of them nullable but step
SCHEMA = pa.schema(
    [
        pa.field(name, pa.int64() if _KINDS[name] == "int4" else pa.float64(), nullable=name != "step")
        for name in NUMBER_COLUMNS
    ]
)
_POINTS = pa.list_(pa.float64())
_NOT_NULL = ("step", "loss", "time_s", "step_time_ms")


def schema(with_points: bool) -> pa.Schema:
    """``with_points``: a function problem's ``x`` (the point before the update) as a list column."""
    return SCHEMA.append(pa.field("x", _POINTS)) if with_points else SCHEMA


def record_batches(
    session: Session, run_id: str, with_points: bool = False, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pa.RecordBatch]:
    """The run's rows in step order, ``chunk_rows`` at a time."""
    read = _postgresql_chunk if session.get_bind().dialect.name == "postgresql" else _sqlite_chunk
    after = -1
    while True:
        columns = read(session, run_id, after, chunk_rows)
        rows = len(columns[0])
        if not rows:
            return
        arrays = list(columns)
        last = int(arrays[0][-1].as_py())
        if with_points:
            arrays.append(_points(session, run_id, after, last))
        yield pa.record_batch(arrays, schema=schema(with_points))
        if rows < chunk_rows:
            return
        after = last


def _postgresql_chunk(session: Session, run_id: str, after: int, limit: int) -> list[pa.Array]:
    """One bytea per column, every value's binary form back to back (NULLs as 0 beside a column of flags):
    one row that numpy reads in place, instead of a message and a Python tuple per row."""
    # the (run_id, step) key's index gives the rows in order; a planner that underestimates the run (fresh
    # statistics are often missing) would rather sort them all, for every chunk
    session.execute(
        text("SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)")
    )
    packed: list[str] = []
    for name in NUMBER_COLUMNS:
        send = "int4send" if _KINDS[name] == "int4" else "float8send"
        if name in _NOT_NULL:
            packed.append(f'{send}("{name}")')
        else:
            packed += [f'{send}(coalesce("{name}", 0))', f'boolsend("{name}" IS NULL)']
    query = (
        f"SELECT {', '.join(f'string_agg({value}, NULL)' for value in packed)} FROM (SELECT * FROM steps "
        "WHERE run_id = %s AND step > %s ORDER BY step LIMIT %s) AS chunk"
    )
    with driver_connection(session).cursor(binary=True) as cursor:
        row = cursor.execute(query, (run_id, after, limit)).fetchone()
    values = iter(row if row is not None and row[0] is not None else [b""] * len(packed))
    columns = []
    for field in SCHEMA:
        integer = pa.types.is_integer(field.type)
        numbers = np.frombuffer(next(values), ">i4" if integer else ">f8").astype(np.int64 if integer else np.float64)
        null = None if field.name in _NOT_NULL else np.frombuffer(next(values), np.bool_)
        columns.append(pa.array(numbers, type=field.type, mask=null if null is not None and null.any() else None))
    return columns


def _sqlite_chunk(session: Session, run_id: str, after: int, limit: int) -> list[pa.Array]:
    names = ", ".join(f'"{name}"' for name in NUMBER_COLUMNS)
    cursor = driver_connection(session).execute(
        f"SELECT {names} FROM steps WHERE run_id = ? AND step > ? ORDER BY step LIMIT ?", (run_id, after, limit)
    )
    rows = cursor.fetchall()
    columns = list(zip(*rows)) if rows else [()] * len(NUMBER_COLUMNS)
    return [_sqlite_array(values, field.type) for values, field in zip(columns, SCHEMA)]


def _sqlite_array(values: tuple, kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a faithful column's NaN, stored as the text 'NaN'
        return pa.array([float(v) if isinstance(v, str) else v for v in values], type=kind)


def _points(session: Session, run_id: str, after: int, last: int) -> pa.Array:
    texts = session.scalars(
        select(Step.x).where(Step.run_id == run_id, Step.step > after, Step.step <= last).order_by(Step.step)
    )
    return pa.array(list(texts), type=_POINTS)


def point_columns(points: pa.Array, dim: int) -> list[pa.Array]:
    """A list column of points as ``dim`` float columns (x0, x1, ...), null where a row has no point."""
    missing = points.is_null().to_numpy(zero_copy_only=False)
    flat = np.zeros((len(points), dim))
    flat[~missing] = points.drop_null().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return [pa.array(flat[:, i], mask=missing if missing.any() else None) for i in range(dim)]
