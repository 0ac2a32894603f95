"""A run's step rows read back as Arrow record batches, chunk by chunk, without a Python object per value:
on PostgreSQL one row per chunk holding each column's values packed into a bytea, which numpy reads in
place; on SQLite the driver's tuples, every value a number, laid out by numpy in one pass. NaN stays apart
from NULL in both. The next chunk is read in a background thread while the caller encodes and sends the current one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import chain

import numpy as np
import orjson
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.session import driver_connection
from engine.columns import NUMBER_COLUMNS, STEP_COLUMNS

CHUNK_ROWS = 100_000
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
_NULLABLE = tuple(name for name in NUMBER_COLUMNS if name not in _NOT_NULL)
#: reads one chunk: (run id, the last step already read, at most this many rows) -> a record batch
ChunkReader = Callable[[str, int, int], pa.RecordBatch]


def schema(with_points: bool) -> pa.Schema:
    """``with_points``: a function problem's ``x`` (the point before the update) as a list column."""
    return SCHEMA.append(pa.field("x", _POINTS)) if with_points else SCHEMA


def record_batches(
    session: Session, run_id: str, with_points: bool = False, chunk_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """The run's rows in step order, ``chunk_rows`` (default ``CHUNK_ROWS``) at a time. The next chunk is
    read while the caller works on the current one, so the caller leaves ``session`` alone until the
    iterator is done."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    reader = _postgresql_reader if session.get_bind().dialect.name == "postgresql" else _sqlite_reader
    with reader(session, with_points) as read, ThreadPoolExecutor(1, thread_name_prefix="step-reads") as ahead:
        pending: Future[pa.RecordBatch] | None = ahead.submit(read, run_id, -1, chunk_rows)
        while pending is not None:
            batch = pending.result()
            full = batch.num_rows == chunk_rows
            pending = ahead.submit(read, run_id, batch.column(0)[-1].as_py(), chunk_rows) if full else None
            if batch.num_rows:
                yield batch


@contextmanager
def _postgresql_reader(session: Session, with_points: bool) -> Iterator[ChunkReader]:
    # the (run_id, step) key's index gives the rows in order; a planner that underestimates the run (fresh
    # statistics are often missing) would rather sort them all, for every chunk
    session.execute(
        text("SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)")
    )
    connection = driver_connection(session)
    assert len(_NULLABLE) < 16, "one smallint holds every nullable column's flag"
    nulls = " | ".join(f'(("{name}" IS NULL)::int << {bit})' for bit, name in enumerate(_NULLABLE))
    send = {name: "int4send" if _KINDS[name] == "int4" else "float8send" for name in SCHEMA.names}
    packed = [f'{send[name]}(coalesce("{name}", 0))' for name in SCHEMA.names]
    chunk = "(SELECT * FROM steps WHERE run_id = %s AND step > %s ORDER BY step LIMIT %s) AS chunk"
    query = (
        f"SELECT {', '.join(f'string_agg({value}, NULL)' for value in packed)}, "
        f"string_agg(int2send(({nulls})::int2), NULL), count(x) FROM {chunk}"
    )
    points_query = f"SELECT '[' || string_agg(coalesce(x, 'null'), ',') || ']' FROM {chunk}"

    def read(run_id: str, after: int, limit: int) -> pa.RecordBatch:
        """One bytea per column, every value's binary form back to back (NULL as 0, with a smallint of
        flags per row): one row that numpy reads in place, instead of a message and a tuple per row."""
        with connection.cursor(binary=True) as cursor:
            row = cursor.execute(query, (run_id, after, limit)).fetchone()
        if row is None or row[0] is None:
            return pa.RecordBatch.from_pylist([], schema=schema(with_points))
        *values, flags, points = row
        null_flags = np.frombuffer(flags, ">i2")
        columns = []
        for field, value in zip(SCHEMA, values):
            integer = pa.types.is_integer(field.type)
            numbers = np.frombuffer(value, ">i4" if integer else ">f8").astype(np.int64 if integer else np.float64)
            null = (null_flags & (1 << _NULLABLE.index(field.name))).astype(bool) if field.name in _NULLABLE else None
            columns.append(pa.array(numbers, type=field.type, mask=null if null is not None and null.any() else None))
        if with_points:
            if points:
                with connection.cursor() as cursor:
                    listed = cursor.execute(points_query, (run_id, after, limit)).fetchone()
                columns.append(_parse_points(listed[0]))
            else:
                columns.append(pa.nulls(len(columns[0]), _POINTS))
        return pa.record_batch(columns, schema=schema(with_points))

    yield read


@contextmanager
def _sqlite_reader(session: Session, with_points: bool) -> Iterator[ChunkReader]:
    """A census of the chunk first (which nullable columns hold a NULL), then only the columns that hold a
    number, as numbers (in a column with NULLs, a NULL or NaN as 0 beside two bits of flags), so that numpy
    lays out the driver's tuples in one pass. A column NULL in every row is not read; a NaN in a column
    without NULLs comes as the text 'NaN', which numpy reads as NaN."""
    connection = driver_connection(session)
    counted = ", ".join(_quoted(name) for name in ("step", *_NULLABLE, "x"))
    census = (
        f"SELECT count(*), max(step), {', '.join(f'count({_quoted(name)})' for name in (*_NULLABLE, 'x'))} "
        f"FROM (SELECT {counted} FROM steps WHERE run_id = ? AND step > ? ORDER BY step LIMIT ?)"
    )
    rows_between = "FROM steps WHERE run_id = ? AND step > ? AND step <= ? ORDER BY step"

    def read(run_id: str, after: int, limit: int) -> pa.RecordBatch:
        rows, last, *found = connection.execute(census, (run_id, after, limit)).fetchone()
        present = dict(zip(_NULLABLE, found))
        read_as: dict[str, str] = {}  # a column that holds a number: how it is selected
        flagged: list[str] = []  # those with a NULL in some row, two bits each in the flags: NULL, NaN
        for name in SCHEMA.names:
            count = present.get(name, rows)
            if count == rows:
                read_as[name] = _quoted(name)
            elif count:
                number = _quoted(name)
                read_as[name] = f"CASE WHEN typeof({number}) IN ('integer', 'real') THEN {number} ELSE 0 END"
                flagged.append(name)
        flags = [
            f"(({_quoted(name)} IS NULL) << {2 * bit}) | ((typeof({_quoted(name)}) = 'text') << {2 * bit + 1})"
            for bit, name in enumerate(flagged)
        ]
        selected = [*read_as.values(), " | ".join(flags) or "0"]
        fetched = connection.execute(f"SELECT {', '.join(selected)} {rows_between}", (run_id, after, last)).fetchall()
        numbers = np.fromiter(chain.from_iterable(fetched), np.float64, len(fetched) * len(selected))
        numbers = numbers.reshape(len(fetched), len(selected))
        row_flags = numbers[:, -1].astype(np.int64)
        columns = []
        for field in SCHEMA:
            if field.name not in read_as:
                columns.append(pa.nulls(len(fetched), field.type))
                continue
            column = numbers[:, list(read_as).index(field.name)]
            null = None
            if field.name in flagged:
                bit = 2 * flagged.index(field.name)
                null = (row_flags >> bit & 1).astype(bool)
                column = np.where((row_flags >> (bit + 1) & 1).astype(bool), np.nan, column)
            column = column.astype(np.int64) if pa.types.is_integer(field.type) else np.ascontiguousarray(column)
            columns.append(pa.array(column, type=field.type, mask=null if null is not None and null.any() else None))
        if with_points:
            if found[-1]:
                texts = connection.execute(f"SELECT x {rows_between}", (run_id, after, last)).fetchall()
                columns.append(_parse_points("[" + ",".join("null" if t is None else t for (t,) in texts) + "]"))
            else:
                columns.append(pa.nulls(len(fetched), _POINTS))
        return pa.record_batch(columns, schema=schema(with_points))

    yield read


def _quoted(name: str) -> str:
    return f'"{name}"'


def _parse_points(listed: str) -> pa.Array:
    """The JSON list of the rows' points (null where a row has none), non-finite coordinates written as
    the strings 'nan', 'inf' and '-inf' (``db.models.FloatList``)."""
    points = orjson.loads(listed)
    try:
        return pa.array(points, type=_POINTS)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if p is None else [float(v) for v in p] for p in points], type=_POINTS)


def point_columns(points: pa.Array, dim: int) -> list[pa.Array]:
    """A list column of points as ``dim`` float columns (x0, x1, ...), null where a row has no point."""
    missing = points.is_null().to_numpy(zero_copy_only=False)
    flat = np.zeros((len(points), dim))
    flat[~missing] = points.drop_null().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return [pa.array(flat[:, i], mask=missing if missing.any() else None) for i in range(dim)]
