"""Step rows read over HTTP into pandas (``Client.steps``, ``Client.evals``, ``Client.comparison_steps``): the
Arrow stream decoded batch by batch as the body arrives, never held whole, and the run's columns added as
categoricals (one code per row, not a string per row)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: the columns that say which run a row is of, as the comparison export has them
RUN_COLUMNS = ("comparison_id", "run_id", "label", "optimizer", "params", "seed", "phase", "status")
EVAL_COLUMNS = ("step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


class _Body(io.RawIOBase):
    """A streamed response's body as a readable file."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces, self._left = pieces, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = memoryview(piece)
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def read_stream(response: httpx.Response) -> pa.Table:
    """An Arrow IPC stream response as a Table, each record batch decoded as soon as it has arrived."""
    body = io.BufferedReader(_Body(response.iter_bytes()), buffer_size=1 << 20)
    return pa.ipc.open_stream(body).read_all()


def run_frame(table: pa.Table, run: dict) -> pd.DataFrame:
    """``table``'s rows with ``run``'s columns (a run as ``GET /runs/{id}`` gives it) in front; a list column
    ``x`` (a function problem's points) as x0, x1, ... (null where a row has none)."""
    values = {
        "comparison_id": run["comparison_id"],
        "run_id": run["id"],
        "label": run["label"],
        "optimizer": run["optimizer"]["name"],
        "params": json.dumps(run["optimizer"]["params"], sort_keys=True),
        "seed": run["seed"],
        "phase": run["phase"],
        "status": run["status"],
    }
    rows = table.num_rows
    for position, name in enumerate(RUN_COLUMNS):
        value = values[name]
        if name == "seed":
            column: pa.Array = pa.array(np.full(rows, value, dtype=np.int64))
        else:
            codes = pa.nulls(rows, pa.int8()) if value is None else pa.array(np.zeros(rows, dtype=np.int8))
            column = pa.DictionaryArray.from_arrays(codes, pa.array([] if value is None else [value], pa.string()))
        table = table.add_column(position, name, column)
    if "x" in table.column_names:
        table = _point_columns(table)
    return table.to_pandas()


def comparison_frame(table: pa.Table) -> pd.DataFrame:
    """The comparison export's rows, its text run columns as categoricals."""
    for name in RUN_COLUMNS:
        column = table.column(name)
        if pa.types.is_string(column.type):
            table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(column))
    return table.to_pandas()


def evals_table(evals: list[dict]) -> pa.Table:
    """``GET /runs/{id}/evals``'s evaluations as columns: int64 step and epoch, float64 the rest (NaN and
    the infinities from their JSON strings)."""
    return pa.table(
        {
            name: pa.array(
                [row.get(name) if name in ("step", "epoch") else _number(row.get(name)) for row in evals],
                pa.int64() if name in ("step", "epoch") else pa.float64(),
            )
            for name in EVAL_COLUMNS
        }
    )


def _number(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _point_columns(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("x")
    points = table.column("x").combine_chunks()
    table = table.remove_column(index)
    lengths = pc.list_value_length(points).fill_null(0).to_numpy(zero_copy_only=False)
    dim = int(lengths.max(initial=0))
    if not dim:
        return table
    present = lengths == dim
    flat = np.full((len(points), dim), np.nan)
    flat[present] = points.filter(pa.array(present)).flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    missing = None if present.all() else ~present
    for i in range(dim):
        table = table.add_column(index + i, f"x{i}", pa.array(flat[:, i], mask=missing))
    return table
