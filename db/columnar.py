"""Rows held as columns, inserted without building a Python object per row: on PostgreSQL a binary
COPY whose payload numpy lays out in one pass, on SQLite multi-row INSERTs whose parameters are
chained from the columns.

A column's values are an array (entries masked out of a ``numpy.ma`` array are NULL), a ``Text`` or
a list of strings for a text column, or one ``str`` that every row shares. ``insert`` also takes
None: a column left out, NULL in every row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain, islice, repeat
from typing import TypeAlias

import numpy as np
from psycopg.copy import LibpqWriter
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.session import driver_connection

#: a column's kind: its PostgreSQL binary wire type; 'faithful' is a float8 (``db.models.FaithfulFloat``)
#: whose NaN SQLite would turn into NULL, so there it is written as the text 'NaN'
KINDS = {"int4": ">i4", "float8": ">f8", "faithful": ">f8", "text": None}
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
#: a column's values, as the module's doc describes them
Values: TypeAlias = "np.ndarray | Text | list[str] | str"
#: parameters per SQLite statement, at most: larger statements take longer to compile than they save
_SQLITE_PARAMETERS = 32_766


def insert(
    session: Session,
    table: str,
    kinds: Mapping[str, str],
    columns: Mapping[str, Values | None],
    rows: int,
    *,
    skip_existing: bool = False,
) -> None:
    """Insert ``rows`` rows given as ``columns`` (name: values, see the module's doc) whose kinds
    ``kinds`` gives. ``skip_existing``: rows whose key is taken are left out instead of failing."""
    with inserting(session, table, kinds, columns, rows, skip_existing=skip_existing):
        pass


@contextmanager
def inserting(
    session: Session,
    table: str,
    kinds: Mapping[str, str],
    columns: Mapping[str, Values | None],
    rows: int,
    *,
    skip_existing: bool = False,
) -> Iterator[None]:
    """``insert``, whose body runs while PostgreSQL inserts the rows (their data sent, the COPY not
    yet ended), so the client's next work overlaps the server's."""
    present = {name: values for name, values in columns.items() if values is not None}  # the others default to NULL
    names = list(present)
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        _sqlite_insert(
            driver_connection(session),
            table,
            names,
            rows,
            skip_existing,
            [_driver_values(dialect, kinds[name], values, rows) for name, values in present.items()],
        )
        yield
        return
    payload = binary_copy(rows, [(kinds[name], values) for name, values in present.items()])
    target = f"incoming_{table}" if skip_existing else table
    if skip_existing:  # COPY cannot skip conflicts: stage the rows, then insert those that are new
        session.execute(text(f"CREATE TEMPORARY TABLE {target} (LIKE {table})"))
    with driver_connection(session).cursor() as cursor:
        # flush_threshold=0: every slice goes out at once, none waits in the client's buffer for the COPY's end
        with cursor.copy(
            f"COPY {target} ({column_list(names)}) FROM STDIN (FORMAT BINARY)",
            writer=LibpqWriter(cursor, flush_threshold=0),
        ) as copy:
            copy.write(payload.data)  # psycopg sends a large buffer in slices: views, not copies
            yield
    if skip_existing:
        session.execute(
            text(
                f"INSERT INTO {table} ({column_list(names)}) "
                f"SELECT {column_list(names)} FROM {target} ON CONFLICT DO NOTHING"
            )
        )
        session.execute(text(f"DROP TABLE {target}"))


def _sqlite_insert(connection, table: str, names: Sequence[str], rows: int, skip_existing: bool, values) -> None:
    """Many rows per INSERT: sqlite3's executemany steps a statement per row, each step releasing and
    retaking the GIL, which the training thread beside the writer then waits for."""
    allowed = min(_SQLITE_PARAMETERS, connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    per_statement = max(1, allowed // len(names))
    row = f"({', '.join('?' * len(names))})"
    head = f"INSERT {'OR IGNORE ' if skip_existing else ''}INTO {table} ({column_list(names)}) VALUES "
    pending = zip(*values)
    for start in range(0, rows, per_statement):
        chunk = min(per_statement, rows - start)
        connection.execute(head + ", ".join([row] * chunk), list(chain.from_iterable(islice(pending, chunk))))


def column_list(names: Sequence[str]) -> str:
    """Quoted, comma-separated."""
    return ", ".join(f'"{name}"' for name in names)


def binary_copy(rows: int, fields: Sequence[tuple[str, Values]]) -> np.ndarray:
    """The payload (bytes) of ``COPY ... FROM STDIN (FORMAT BINARY)`` for ``rows`` rows of ``fields``
    (kind, values). Each row is laid out at its widest in one structured array; when some value is
    NULL or a text is shorter than the longest, one mask drops the unused bytes."""
    fields = [
        (kind, Text.of(values) if kind == "text" and isinstance(values, list) else values) for kind, values in fields
    ]
    parts: list[tuple] = [("count", ">i2")]
    for i, (kind, values) in enumerate(fields):
        parts.append((f"length{i}", ">i4"))
        if isinstance(values, str):
            parts.append((f"value{i}", f"S{len(values.encode())}"))
        elif isinstance(values, Text):
            parts.append((f"value{i}", "u1", (int(values.lengths.max(initial=0)),)))
        else:
            parts.append((f"value{i}", KINDS[kind]))
    layout = np.dtype(parts)
    placement = layout.fields
    assert placement is not None, "a structured dtype has fields"
    payload = _payload(rows * layout.itemsize)  # one buffer: no copy of the rows to add the header
    table = payload[len(_HEADER) : -len(_TRAILER)].view(layout)
    table["count"] = len(fields)
    used: np.ndarray | None = None  # per row and byte: part of the payload
    for i, (_, values) in enumerate(fields):
        length, value = table[f"length{i}"], table[f"value{i}"]
        width, offset = placement[f"value{i}"][0].itemsize, placement[f"value{i}"][1]
        if isinstance(values, Text):
            keep = np.arange(width) < values.lengths[:, None]
            value[keep] = values.data
            length[...] = values.lengths
        else:
            value[...] = values.encode() if isinstance(values, str) else np.ma.getdata(values)
            length[...] = width
            null = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
            if null is None or not null.any():
                continue
            length[null] = -1
            keep = ~null[:, None]
        if used is None:
            used = np.ones((rows, table.dtype.itemsize), dtype=bool)
        used[:, offset : offset + width] = keep
    if used is None:
        return payload
    kept = _payload(int(np.count_nonzero(used)))
    kept[len(_HEADER) : -len(_TRAILER)] = table.view(np.uint8)[used.ravel()]
    return kept


def _payload(size: int) -> np.ndarray:
    """A COPY payload's bytes with its header and trailer written, ``size`` bytes of rows left between."""
    payload = np.empty(len(_HEADER) + size + len(_TRAILER), dtype=np.uint8)
    payload[: len(_HEADER)] = np.frombuffer(_HEADER, dtype=np.uint8)
    payload[len(payload) - len(_TRAILER) :] = np.frombuffer(_TRAILER, dtype=np.uint8)
    return payload


class Text:
    """A text column: every row's UTF-8 bytes back to back (a uint8 array), and each row's byte length."""

    def __init__(self, data: np.ndarray, lengths: np.ndarray) -> None:
        self.data, self.lengths = data, lengths

    @classmethod
    def of(cls, strings: Sequence[str]) -> Text:
        encoded = [s.encode() for s in strings]
        return cls(
            np.frombuffer(b"".join(encoded), dtype=np.uint8),
            np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)),
        )

    def strings(self) -> list[str]:
        data, ends = self.data.tobytes(), np.cumsum(self.lengths).tolist()
        return [data[start:end].decode() for start, end in zip([0, *ends[:-1]], ends)]


def parameters(dialect: str, kinds: Mapping[str, str], columns: Mapping[str, Values | None], rows: int) -> list[tuple]:
    """The rows as the database driver's parameters: a tuple of Python values per row, in the order
    of ``columns`` (None: NULL in every row)."""
    return list(zip(*(_driver_values(dialect, kinds[name], values, rows) for name, values in columns.items())))


def _driver_values(dialect: str, kind: str, values: Values | None, rows: int) -> Iterable[object]:
    if values is None or isinstance(values, str):
        return repeat(values, rows)
    if kind == "text":
        return values.strings() if isinstance(values, Text) else values
    assert isinstance(values, np.ndarray), f"a {kind} column's values are an array"
    if kind == "faithful" and dialect == "sqlite":
        nan = np.isnan(np.ma.getdata(values))
        if nan.any():
            values = values.astype(object)
            values[nan] = "NaN"
    return values.tolist()  # masked entries become None
