"""Bulk writes of step rows: binary COPY on PostgreSQL, multi-row INSERTs on SQLite.

Rows arrive as columns (arrays, see ``StepBatch.columns``), so no per-row dict or ORM object is ever
built. Steps are keyed by (run_id, step): a write retried after a commit whose answer was lost must
not fail or duplicate, so a flush that finds some of its steps already there inserts only the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import columnar, rollups
from db.models import encode_float
from engine.columns import STEP_COLUMNS

#: each column's kind (see ``db.columnar.KINDS``); FaithfulFloat columns keep NaN apart from NULL
KINDS = {column.name: column.kind for column in STEP_COLUMNS}
COLUMNS = tuple(KINDS)
_LATER_STEP = text("SELECT 1 FROM steps WHERE run_id = :run_id AND step >= :step LIMIT 1")


def ingest_steps(session: Session, run_id: str, columns: Mapping[str, Sequence | np.ndarray | None]) -> None:
    """Write a flush's step rows and bring the loss rollups up to date, in the caller's transaction.

    ``columns``: COLUMNS to values, sorted by consecutive steps; a missing or None column (or one of
    Nones) is NULL in every row: a column never mixes values and None. ``x`` holds one point (a row
    of floats) per step. The caller holds the run (``append_steps`` locks its row), so nobody else
    writes its steps meanwhile."""
    step = np.asarray(columns["step"], dtype=np.int64)
    if len(step) == 0:
        return
    arrays = {name: _array(name, columns.get(name), len(step)) for name in COLUMNS if name != "step"}
    loss, time_s, x = arrays["loss"], arrays["time_s"], arrays["x"]
    if loss is None or time_s is None:
        raise ValueError("step columns 'loss' and 'time_s' have a value in every row")
    values: dict[str, columnar.Values | None] = {
        "run_id": run_id,
        "step": step,
        **arrays,
        "x": None if x is None else x_json(x),  # in its place among the columns
    }
    kinds = {"run_id": "text", **KINDS}
    first, last = int(step[0]), int(step[-1])
    if session.execute(_LATER_STEP, {"run_id": run_id, "step": first}).first() is None:
        # every stored step comes before this flush: its rows are all new, its blocks extend the stored ones
        with columnar.inserting(session, "steps", kinds, values, len(step)):
            blocks = rollups.aggregate(step, loss, time_s, arrays["epoch"])
        rollups.extend(session, run_id, blocks)
    else:  # a retried flush (its commit's answer was lost): keep the stored rows, add the rest
        columnar.insert(session, "steps", kinds, values, len(step), skip_existing=True)
        rollups.rebuild(session, run_id, first, last)


def _array(name: str, values: Sequence | np.ndarray | None, rows: int) -> np.ndarray | None:
    if values is None:
        return None
    if not isinstance(values, np.ndarray):
        missing = sum(v is None for v in values)
        if missing == len(values):
            return None
        if missing:
            raise ValueError(
                f"step column {name!r} mixes values and None: a column has a value in every row, or in none"
            )
    array = np.asarray(values, dtype=np.int64 if KINDS[name] == "int4" else np.float64)
    if len(array) != rows or array.ndim != (2 if name == "x" else 1):
        raise ValueError(
            f"step column {name!r} has shape {array.shape}; {rows} steps need "
            f"{(rows, 'dimensions') if name == 'x' else (rows,)}"
        )
    return array


def x_json(points: np.ndarray) -> columnar.Text:
    """Each row of ``points`` as the JSON text ``db.models.FloatList`` stores (non-finite values as the
    strings 'nan', 'inf', '-inf'), from one ``orjson`` call whose rows then lie back to back: no Python
    object per value unless some value is not finite."""
    rows, dim = points.shape
    if dim == 0:
        return columnar.Text(np.frombuffer(b"[]" * rows, dtype=np.uint8), np.full(rows, 2))
    if np.isfinite(points).all():
        encoded = orjson.dumps(np.ascontiguousarray(points, dtype=np.float64), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        encoded = orjson.dumps([list(map(encode_float, row)) for row in points.tolist()])
    data = np.frombuffer(encoded, dtype=np.uint8)[1:-1]  # [[..],[..]] less its outer brackets
    ends = np.flatnonzero(data == ord("]"))
    starts = np.r_[0, ends[:-1] + 2]  # each row's '[' comes after the previous row's "],"
    separators = np.ones(len(data), dtype=bool)
    separators[ends[:-1] + 1] = False
    return columnar.Text(data[separators], ends - starts + 1)
