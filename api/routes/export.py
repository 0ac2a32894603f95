"""Every step of every run of a comparison, as CSV or Parquet, streamed: rows are read in chunks,
each chunk goes through one Arrow writer (the same columns in both formats) into a buffer that is
sent and emptied, so memory stays bounded by the chunk size however large the comparison."""

import io
import json
from collections.abc import Iterator
from itertools import islice
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.deps import PrincipalDep, SessionDep
from api.schemas import NOT_FOUND
from db import step_reads
from db.models import Step
from db.session import new_session
from engine.columns import STEP_COLUMNS
from services import access

router = APIRouter(prefix="/api/v1", tags=["analysis"])

#: rows per chunk read, per Parquet row group, per piece of the response
CHUNK_ROWS = 50_000
_MEDIA_TYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an Arrow IPC stream's end
_RUN_FIELDS = [
    ("comparison_id", pa.string()),
    ("run_id", pa.string()),
    ("label", pa.string()),
    ("optimizer", pa.string()),
    ("params", pa.string()),
    ("seed", pa.int64()),
    ("phase", pa.string()),
    ("status", pa.string()),
]
_STEP_COLUMNS = tuple(getattr(Step, column.name) for column in STEP_COLUMNS if column.name != "x")
_STEP_FIELDS = [
    (column.name, pa.int64() if column.kind == "int4" else pa.float64())
    for column in STEP_COLUMNS
    if column.name != "x"
]


#: a CSV cell starting with one of these is a formula to a spreadsheet (OWASP's "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value):
    """A text cell as a spreadsheet shows it, never runs it: a leading quote before a formula's first
    character, as OWASP recommends. Numbers are typed columns and stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _schema(dim: int) -> pa.Schema:
    """Function problems add the point before the update as x0..x{dim-1}."""
    return pa.schema(_RUN_FIELDS + _STEP_FIELDS + [(f"x{i}", pa.float64()) for i in range(dim)])


class _Drain(io.RawIOBase):
    """A write-only sink that hands out what was written since the last take. It keeps counting
    the position, which Parquet's footer offsets rely on."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._pieces.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._pieces)
        self._pieces.clear()
        return data


def _rows(runs: list[tuple[tuple, str]], dim: int) -> Iterator[tuple]:
    no_point = (None,) * dim
    with new_session() as session:
        for run_columns, source_id in runs:
            query = (
                select(*_STEP_COLUMNS, Step.x)
                .where(Step.run_id == source_id)
                .order_by(Step.step)
                .execution_options(yield_per=CHUNK_ROWS)
            )
            for *values, x in session.execute(query):
                yield (*run_columns, *values, *(no_point if x is None else x))


def _stream(runs: list[tuple[tuple, str]], dim: int, format: str) -> Iterator[bytes]:
    schema, sink = _schema(dim), _Drain()
    writer = (
        pq.ParquetWriter(sink, schema)
        if format == "parquet"
        else pa_csv.CSVWriter(sink, schema, write_options=pa_csv.WriteOptions(quoting_style="needed"))
    )
    rows = _rows(runs, dim)
    while chunk := list(islice(rows, CHUNK_ROWS)):
        writer.write_batch(pa.record_batch(list(zip(*chunk)), schema=schema))
        yield sink.take()
    writer.close()
    yield sink.take()


def _arrow_stream(runs: list[tuple[tuple, str]], dim: int) -> Iterator[bytes]:
    """An Arrow IPC stream, each run's rows read as columns (``db.step_reads``), its run columns repeated."""
    schema = _schema(dim)
    yield schema.serialize().to_pybytes()
    with new_session() as session:
        for run_columns, source_id in runs:
            for batch in step_reads.record_batches(session, source_id, with_points=dim > 0):
                rows = len(batch)
                constants = [pa.array([value] * rows, type) for value, (_, type) in zip(run_columns, _RUN_FIELDS)]
                numbers = [batch.column(name) for name, _ in _STEP_FIELDS]
                points = step_reads.point_columns(batch.column("x"), dim) if dim else []
                yield pa.record_batch(constants + numbers + points, schema=schema).serialize().to_pybytes()
    yield _EOS


@router.get(
    "/comparisons/{comparison_id}/export",
    responses={200: {"content": {t: {} for t in _MEDIA_TYPES.values()}}, **NOT_FOUND},
)
def export_comparison(
    comparison_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    format: Literal["csv", "parquet", "arrow"] = "csv",
) -> StreamingResponse:
    """Every step row of every run, in run then step order, with the run's columns on each row; ``arrow``:
    an Arrow IPC stream of the same columns."""
    comparison = access.comparison(session, comparison_id, principal.team_id)
    x0 = comparison.spec["problem"].get("x0")
    runs = [
        (
            (
                comparison.id,
                run.id,
                run.label,
                run.optimizer_name,
                json.dumps(run.optimizer_params, sort_keys=True),
                run.seed,
                run.phase,
                run.status,
            ),
            run.reused_from_id or run.id,
        )
        for run in comparison.runs
    ]
    if format == "csv":  # the run's text columns, once per run: Parquet is typed and keeps them as they are
        runs = [(tuple(csv_text(value) for value in columns), source) for columns, source in runs]
    if format == "arrow":
        return StreamingResponse(_arrow_stream(runs, len(x0) if x0 else 0), media_type=_MEDIA_TYPES[format])
    return StreamingResponse(
        _stream(runs, len(x0) if x0 else 0, format),
        media_type=_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="comparison-{comparison.id}.{format}"'},
    )
