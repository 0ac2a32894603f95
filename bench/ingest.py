"""Issue 17's server side over HTTP, against a real `optibench serve --no-worker` on each database: a
1,000,000-step run read back as Arrow (into a pandas DataFrame), CSV and JSON; and the same rows uploaded as
Arrow batches to an external run against the server's own write path (``leases.append_steps``) for them."""

from __future__ import annotations

import io
import time

import httpx
import pandas as pd
import pyarrow as pa

from bench.api import _api_key, _server, _settle
from bench.common import Result, fresh_databases, synthetic_columns, write_steps
from bench.storage import FLUSH_ROWS
from db.session import make_engine
from optibench.client import Client

ROWS = 1_000_000
#: rows per upload, and per flush of the server's own write path it is compared with
BATCH = 100_000
READ_TARGETS = {"arrow": 1.0, "csv": 3.0, "json": 5.0}
UPLOAD_TARGET = 0.8
#: reads and uploads are each measured this many times (alternating with the own write path); the best counts
TRIALS = 3


def _read(url: str, key: str, run_id: str, format: str) -> tuple[float, int]:
    """Seconds to have the whole run in hand (for Arrow: in a DataFrame), and the rows it held."""
    started = time.perf_counter()
    response = httpx.get(
        f"{url}/api/v1/runs/{run_id}/steps", params={"format": format}, headers=_auth(key), timeout=600
    )
    response.raise_for_status()
    if format == "arrow":
        rows = len(pa.ipc.open_stream(response.content).read_all().to_pandas())
    elif format == "csv":
        rows = len(pd.read_csv(io.BytesIO(response.content)))
    else:
        rows = response.content.count(b'"step"')
    return time.perf_counter() - started, rows


def _client_steps(url: str, key: str, run_id: str) -> tuple[float, int]:
    """Seconds for ``Client.steps``: the Arrow stream decoded as it arrives, with the run's columns."""
    started = time.perf_counter()
    with Client(url, api_key=key, timeout_s=600) as client:
        rows = len(client.steps(run_id))
    return time.perf_counter() - started, rows


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _batches() -> list[bytes]:
    bodies = []
    for start in range(0, ROWS, BATCH):
        table = pa.table(synthetic_columns(BATCH, start))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        bodies.append(sink.getvalue().to_pybytes())
    return bodies


def _upload(url: str, key: str, comparison_id: str) -> float:
    """Rows/s of one client uploading the rows in Arrow batches of BATCH rows to a new external run."""
    bodies = _batches()
    with httpx.Client(base_url=url, headers=_auth(key), timeout=600) as client:
        created = client.post(
            f"/api/v1/comparisons/{comparison_id}/runs",
            json={"seed": 0, "label": "bench upload", "optimizer": {"name": "bench"}},
        )
        created.raise_for_status()
        run_id = created.json()["id"]
        headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
        started = time.perf_counter()
        for body in bodies:
            client.post(f"/api/v1/runs/{run_id}/steps", content=body, headers=headers).raise_for_status()
        return ROWS / (time.perf_counter() - started)


def run() -> list[Result]:
    results = []
    with fresh_databases() as urls:
        for backend, database_url in urls.items():
            run_id, _ = write_steps(database_url, ROWS, FLUSH_ROWS)
            key = _api_key(database_url)
            if backend == "postgresql":
                _settle(database_url)
            engine = make_engine(database_url)
            with engine.connect() as connection:
                comparison_id = connection.exec_driver_sql(
                    f"SELECT comparison_id FROM runs WHERE id = '{run_id}'"
                ).scalar_one()
            engine.dispose()
            with _server(database_url) as url:
                for format, target in READ_TARGETS.items():
                    trials = [_read(url, key, run_id, format) for _ in range(TRIALS)]
                    seconds = min(seconds for seconds, _ in trials)
                    results.append(
                        Result(
                            f"read 1M steps as {format} over HTTP ({backend})",
                            "seconds" + (" into a DataFrame" if format == "arrow" else "") + f", best of {TRIALS}",
                            f"<= {target:g}",
                            seconds,
                            seconds <= target and all(rows == ROWS for _, rows in trials),
                            {"rows": trials[0][1], "trials_s": [seconds for seconds, _ in trials]},
                        )
                    )
                trials = [_client_steps(url, key, run_id) for _ in range(TRIALS)]
                seconds = min(seconds for seconds, _ in trials)
                results.append(
                    Result(
                        f"read 1M steps with Client.steps over HTTP ({backend})",
                        f"seconds into a DataFrame with the run's columns, best of {TRIALS}",
                        f"<= {READ_TARGETS['arrow']:g}",
                        seconds,
                        seconds <= READ_TARGETS["arrow"] and all(rows == ROWS for _, rows in trials),
                        {"rows": trials[0][1], "trials_s": [seconds for seconds, _ in trials]},
                    )
                )
                uploads, owns = [], []
                for _ in range(TRIALS):  # alternating, so both sides see the same load
                    uploads.append(_upload(url, key, comparison_id))
                    owns.append(ROWS / write_steps(database_url, ROWS, BATCH)[1])
            over_http, own = max(uploads), max(owns)
            results.append(
                Result(
                    f"upload over HTTP vs own write path ({backend})",
                    f"ratio of rows/s (1M rows, 100k-row batches), best of {TRIALS} each",
                    f">= {UPLOAD_TARGET}",
                    over_http / own,
                    over_http / own >= UPLOAD_TARGET,
                    {"http_rows_per_s": uploads, "own_rows_per_s": owns},
                )
            )
    return results
