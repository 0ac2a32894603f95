"""Step rows written per second, through the worker's own write path (``leases.append_steps``:
the lease check, the bulk insert, the rollups), in flushes of FLUSH_ROWS rows, one transaction each."""

from __future__ import annotations

from bench.common import Result, fresh_databases, write_steps

ROWS = 1_000_000
FLUSH_ROWS = 10_000
TARGETS = {"postgresql": 500_000, "sqlite": 200_000}


def run() -> list[Result]:
    results = []
    with fresh_databases() as urls:
        for backend, url in urls.items():
            _, seconds = write_steps(url, ROWS, FLUSH_ROWS)
            rate = ROWS / seconds
            results.append(
                Result(
                    f"step rows into {backend}",
                    "rows/s (1M rows, 10k-row flushes)",
                    f">= {TARGETS[backend]:,}",
                    rate,
                    rate >= TARGETS[backend],
                    {"rows": ROWS, "flush_rows": FLUSH_ROWS, "seconds": seconds},
                )
            )
    return results
