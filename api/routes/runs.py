"""Runs and their step rows. Step rows stream from the database in chunks, never all in memory.

Optional extras (grad_norm, update_norm) appear when the spec's training.extras asks for them.
Non-finite values: in JSON, NaN and ±infinity are the strings "NaN", "Infinity" and "-Infinity"
(JSON has no such numbers); in CSV they are nan, inf and -inf, which float() and pandas read back.
"""

import io
from collections.abc import Iterator
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, SessionDep
from api.schemas import NOT_FOUND, RunOut, json_safe
from db import history, step_reads
from db.session import new_session
from engine.columns import EXTRAS, NUMBER_COLUMNS
from services import access

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

#: what every row has, and the extras, which a row has when its run recorded them
_ALWAYS = tuple(name for name in NUMBER_COLUMNS if name not in EXTRAS)


ARROW_STREAM = "application/vnd.apache.arrow.stream"
_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "arrow": ARROW_STREAM}
_IPC = pa.ipc.IpcWriteOptions(compression="zstd")


def _batches(data_id: str, with_points: bool) -> Iterator[pa.RecordBatch]:
    with new_session() as session:
        yield from step_reads.record_batches(session, data_id, with_points)


def _stream_arrow(data_id: str, with_points: bool) -> Iterator[bytes]:
    """The IPC stream format, a message per chunk, its buffers zstd-compressed (the all-null and constant
    columns shrink to nothing; pyarrow reads it as it is)."""
    pieces: list[bytes] = []
    sink = pa.PythonFile(_Pieces(pieces), mode="w")
    with pa.ipc.new_stream(sink, step_reads.schema(with_points), options=_IPC) as writer:
        for batch in _batches(data_id, with_points):
            writer.write_batch(batch)
            yield b"".join(pieces)
            pieces.clear()
    yield b"".join(pieces)


class _Pieces(io.RawIOBase):
    """A write-only sink that keeps what was written in ``pieces``."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pieces.append(bytes(data))
        return len(data)


def _stream_json(run_id: str, data_id: str, with_points: bool) -> Iterator[bytes]:
    """Each chunk's rows encoded by one orjson call; a row has an extra (or ``x``) when it was recorded."""
    yield b'{"run_id": ' + orjson.dumps(run_id) + b', "steps": ['
    first = True
    for batch in _batches(data_id, with_points):
        columns = {name: _json_values(batch.column(name)) for name in batch.schema.names}
        always = [name for name in _ALWAYS]
        optional = [name for name in (*EXTRAS, "x") if name in columns and batch.column(name).null_count < len(batch)]
        rows = [dict(zip(always + optional, values)) for values in zip(*(columns[n] for n in always + optional))]
        for name in optional:
            if batch.column(name).null_count:  # some rows lack it: they leave it out
                for row in rows:
                    if row[name] is None:
                        del row[name]
        if rows:
            yield (b"" if first else b",") + orjson.dumps(rows)[1:-1]
            first = False
    yield b"]}"


def _json_values(column: pa.Array) -> list:
    """A column as JSON values: NaN and the infinities as strings, as ``json_safe`` writes them."""
    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        numbers = column.fill_null(0.0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(~np.isfinite(numbers)).tolist():
            values[i] = json_safe(values[i])
    elif pa.types.is_list(column.type):
        points = column.flatten().to_numpy(zero_copy_only=False)
        if not np.isfinite(points).all():
            values = json_safe(values)
    return values


def _stream_csv(data_id: str, dim: int | None, extras: list[str]) -> Iterator[bytes]:
    """Each chunk written by Arrow's CSV writer: numbers in their shortest exact form, NaN and the
    infinities as nan, inf and -inf, no value as an empty cell; a function problem's point as x0, x1, ..."""
    columns = [*_ALWAYS, *extras]
    yield ",".join(columns + [f"x{i}" for i in range(dim or 0)]).encode() + b"\n"
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in _batches(data_id, bool(dim)):
        arrays = [batch.column(name) for name in columns]
        if dim:
            arrays += step_reads.point_columns(batch.column("x"), dim)
        sink = pa.BufferOutputStream()
        names = columns + [f"x{i}" for i in range(dim or 0)]
        pa_csv.write_csv(pa.Table.from_arrays(arrays, names=names), sink, write_options=options)
        yield sink.getvalue().to_pybytes()


@router.get("/{run_id}", response_model=RunOut, responses=NOT_FOUND)
def get_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> RunOut:
    return RunOut.of(access.run(session, run_id, principal.team_id))


@router.post("/{run_id}/cancel", response_model=RunOut, responses=NOT_FOUND)
def cancel_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> RunOut:
    """Cancel one run: at once if queued, at its next flush if running; recorded rows are kept."""
    return RunOut.of(access.cancel_run(session, principal.team_id, run_id))


@router.get("/{run_id}/steps", responses={200: {"content": {t: {} for t in _MEDIA_TYPES.values()}}, **NOT_FOUND})
def get_steps(
    run_id: str, session: SessionDep, principal: PrincipalDep, format: Literal["json", "csv", "arrow"] = "json"
) -> StreamingResponse:
    """Every step row of the run, in step order (a reused run's are its source's). ``arrow``: an Arrow IPC
    stream with every number column (null where not recorded) and, for a function problem, ``x``."""
    run = access.run(session, run_id, principal.team_id)
    data_id = run.reused_from_id or run.id
    spec = run.comparison.spec
    x0 = spec["problem"].get("x0")
    if format == "csv":
        extras = [e for e in EXTRAS if e in spec["training"].get("extras", [])]
        return StreamingResponse(
            _stream_csv(data_id, len(x0) if x0 else None, extras),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="run-{run_id}-steps.csv"'},
        )
    if format == "arrow":
        return StreamingResponse(_stream_arrow(data_id, bool(x0)), media_type=ARROW_STREAM)
    return StreamingResponse(_stream_json(run_id, data_id, bool(x0)), media_type="application/json")


@router.get("/{run_id}/evals", responses=NOT_FOUND)
def get_evals(run_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    """Whole-set evaluations (train loss, validation loss, accuracies), every ``eval_every`` steps.
    ``step`` counts the updates applied: 0 is the initial weights."""
    run = access.run(session, run_id, principal.team_id)
    columns = ("step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
    evals = history.iter_evals(session, run.reused_from_id or run.id)
    return {
        "run_id": run_id,
        "evals": [json_safe({c: getattr(e, c) for c in columns}) for e in evals],
    }
