"""GET /comparisons/{id}/export on both databases: the CSV and the Parquet read back equal the rows
written (NaN and ±inf faithful, reused runs read from their source), the body arrives in several
pieces, and producing it holds a bounded number of rows in memory."""

from __future__ import annotations

import csv
import io
import json
import math
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import update

from api.routes import export
from db.models import Run
from db.session import transaction
from tests.api.test_curves import client, make_comparison, noisy_losses, store_steps  # noqa: F401 (fixture)

RUN_COLUMNS = ["comparison_id", "run_id", "label", "optimizer", "params", "seed", "phase", "status"]
STEP_COLUMNS = ["step", "epoch", "loss", "time_s", "step_time_ms", "lr", "grad_norm", "update_norm"]


def _made_with_rows():
    """Two entries × two seeds in 2-D, with non-finite losses and coordinates, optional extras on one
    run, and the last run reusing the first one's rows."""
    made = make_comparison(labels=("adam", "sgd"), seeds=(0, 1), dim=2)
    (first, *_), (second, *_), (third, *_), (reuser, *_) = made.runs
    expected = {
        first: store_steps(
            first,
            [1.0, math.nan, math.inf, -math.inf, 0.1],
            epoch=[0, 0, 1, 1, 2],
            x=[[1.0, -1.0], [math.nan, 2.0], [math.inf, 0.0], [0.5, -math.inf], [1e-300, 3.0]],
            grad_norm=[0.5, math.nan, None, 1.0, 2.0],
        ),
        second: store_steps(second, noisy_losses(7).tolist(), first_step=3, x=[[float(i), 0.0] for i in range(7)]),
        third: [],
    }
    with transaction() as session:
        session.execute(update(Run).where(Run.id == reuser).values(reused_from_id=first, status="succeeded"))
        session.execute(update(Run).where(Run.id == first).values(status="succeeded", phase="final"))
    expected[reuser] = expected[first]
    return made, expected


def _expected_rows(made, expected) -> list[dict]:
    status = {made.runs[0][0]: "succeeded", made.runs[3][0]: "succeeded"}
    rows = []
    for run_id, label, seed in made.runs:
        for row in expected[run_id]:
            rows.append(
                {
                    "comparison_id": made.id,
                    "run_id": run_id,
                    "label": label,
                    "optimizer": "sgd",
                    "params_lr": 0.1 if label == "adam" else 0.2,
                    "seed": seed,
                    "phase": "final" if run_id == made.runs[0][0] else None,
                    "status": status.get(run_id, "queued"),
                    **{c: row.get(c) for c in STEP_COLUMNS},
                    "x0": row["x"][0],
                    "x1": row["x"][1],
                }
            )
    return rows


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _assert_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for column, value in w.items():
            assert _same(g[column], value), (column, g[column], value)


def test_csv_reads_back_as_the_rows_written(client):
    made, expected = _made_with_rows()
    response = client.get(f"/api/v1/comparisons/{made.id}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="comparison-{made.id}.csv"'

    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == RUN_COLUMNS + STEP_COLUMNS + ["x0", "x1"]

    def parse(row: dict) -> dict:
        floats = {c: float(row[c]) if row[c] else None for c in STEP_COLUMNS[2:] + ["x0", "x1"]}
        return {
            **row,
            **floats,
            "seed": int(row["seed"]),
            "step": int(row["step"]),
            "epoch": int(row["epoch"]) if row["epoch"] else None,
            "phase": row["phase"] or None,
            "params_lr": json.loads(row["params"])["lr"],
        }

    _assert_rows([parse(r) for r in reader], _expected_rows(made, expected))
    header, *raw = csv.reader(io.StringIO(response.text))
    assert [row[header.index("loss")] for row in raw[:5]] == ["1", "nan", "inf", "-inf", "0.1"]


def test_parquet_reads_back_as_the_rows_written(client):
    made, expected = _made_with_rows()
    response = client.get(f"/api/v1/comparisons/{made.id}/export", params={"format": "parquet"})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="comparison-{made.id}.parquet"'
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == RUN_COLUMNS + STEP_COLUMNS + ["x0", "x1"]
    assert str(table.schema.field("loss").type) == "double" and str(table.schema.field("step").type) == "int64"
    rows = [{**r, "params_lr": json.loads(r["params"])["lr"]} for r in table.to_pylist()]
    _assert_rows(rows, _expected_rows(made, expected))
    # NaN stays a NaN, and an absent value is a null
    assert table.column("loss").null_count == 0 and table.column("grad_norm").null_count > 0


def test_arrow_stream_holds_the_parquet_rows(client):
    made, _ = _made_with_rows()
    url = f"/api/v1/comparisons/{made.id}/export"
    parquet = pq.read_table(io.BytesIO(client.get(url, params={"format": "parquet"}).content))
    response = client.get(url, params={"format": "arrow"})
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.schema == parquet.schema.remove_metadata()
    assert table.num_rows == parquet.num_rows > 0 and table.to_pandas().equals(parquet.to_pandas())


def test_a_dataset_comparison_without_rows_exports_the_header_only(client):
    made = make_comparison()
    from db.models import Comparison

    with transaction() as session:  # a dataset problem has no x0: no x columns
        comparison = session.get(Comparison, made.id)
        comparison.spec = {**comparison.spec, "problem": {"model": {"name": "linear"}}}
    text = client.get(f"/api/v1/comparisons/{made.id}/export").text
    assert text.strip().replace('"', "").split(",") == RUN_COLUMNS + STEP_COLUMNS
    table = pq.read_table(io.BytesIO(client.get(f"/api/v1/comparisons/{made.id}/export?format=parquet").content))
    assert table.num_rows == 0 and table.column_names == RUN_COLUMNS + STEP_COLUMNS


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_the_body_streams_in_pieces(client, monkeypatch, format):
    made, expected = _made_with_rows()
    monkeypatch.setattr(export, "CHUNK_ROWS", 4)
    with client.stream("GET", f"/api/v1/comparisons/{made.id}/export", params={"format": format}) as response:
        pieces = [piece for piece in response.iter_raw() if piece]
    rows = sum(len(rows) for rows in expected.values())
    assert len(pieces) >= math.ceil(rows / 4)
    if format == "parquet":
        parquet = pq.ParquetFile(io.BytesIO(b"".join(pieces)))
        assert parquet.metadata.num_rows == rows and parquet.num_row_groups == math.ceil(rows / 4)
    else:
        assert len(b"".join(pieces).decode().splitlines()) == rows + 1


def test_memory_stays_bounded_by_the_chunk_not_the_comparison(use_database, monkeypatch):
    made = make_comparison()
    ((run_id, _, seed),) = made.runs
    store_steps(run_id, noisy_losses(12_000).tolist(), x=[[1.0]] * 12_000)
    # the same run listed twice: twice the rows to hold, not twice the rows stored
    runs = [((made.id, run_id, "adam", "sgd", "{}", seed, None, "queued"), run_id)] * 2
    monkeypatch.setattr(export, "CHUNK_ROWS", 300)

    def peak(consume) -> tuple[int, int]:
        tracemalloc.start()
        try:
            size = consume()
            return tracemalloc.get_traced_memory()[1], size
        finally:
            tracemalloc.stop()

    all_rows, _ = peak(lambda: len(list(export._rows(runs, dim=1))))
    streamed, size = peak(lambda: sum(len(piece) for piece in export._stream(runs, 1, "csv")))
    assert size > 1_000_000
    print(f"peak traced memory: {streamed} B streaming {size} B of CSV, {all_rows} B holding all rows")
    assert streamed < all_rows / 5, (streamed, all_rows)


FORMULAS = ("=1+2", "@SUM(A1)", "-cmd", "+1", "\tx", "\rx")


def test_csv_text_cells_that_a_spreadsheet_would_run_are_escaped_and_numbers_stay_numbers(client):
    made = make_comparison(labels=(*FORMULAS, "plain=label"))
    for run_id, _, _ in made.runs:
        store_steps(run_id, [-1.5, 2.0], x=[[-3.0], [1.0]])
    text = client.get(f"/api/v1/comparisons/{made.id}/export").text
    header, *rows = csv.reader(io.StringIO(text))
    labels = [row[header.index("label")] for row in rows[::2]]
    assert labels == ["'" + label for label in FORMULAS] + ["plain=label"]
    assert {row[header.index("loss")] for row in rows[::2]} == {"-1.5"}
    assert {row[header.index("x0")] for row in rows[::2]} == {"-3"}
    # Parquet is typed, read by programs: the labels as they were given
    table = pq.read_table(io.BytesIO(client.get(f"/api/v1/comparisons/{made.id}/export?format=parquet").content))
    assert table.column("label").to_pylist()[::2] == [*FORMULAS, "plain=label"]
