"""`make bench`: every performance target, measured side by side in one run.

Prints a table of measured figures against targets and writes bench/results.json. Each section
runs against fresh databases (a temporary SQLite file; a new PostgreSQL database on
OPTIBENCH_BENCH_POSTGRES_URL, default the local server) and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
SECTIONS = ("recording", "storage", "sweep", "vectorized", "api", "sequential", "suites", "ingest", "sdk", "submit")
#: long sections, run only when named: `python -m bench suite_wall`
OPT_IN = ("suite_wall",)


def _embedded_environment() -> None:
    """The bench's own data directory, so its SQLite database and broker are fresh and throwaway."""
    os.environ["OPTIBENCH_DATA_DIR"] = tempfile.mkdtemp(prefix="optibench-bench-")
    os.environ.pop("OPTIBENCH_DATABASE_URL", None)
    os.environ.pop("OPTIBENCH_BROKER_URL", None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"any of {', '.join(SECTIONS + OPT_IN)}; default all but {', '.join(OPT_IN)}",
    )
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS) - set(OPT_IN)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS + OPT_IN)}")
    _embedded_environment()

    import importlib

    import torch

    from db.migrate import upgrade
    from optibench.settings import get_settings

    upgrade(get_settings().database_url)
    results = []
    started = time.perf_counter()
    for section in args.sections or SECTIONS:
        module = importlib.import_module(f"bench.{section}")
        print(f"== {section}", flush=True)
        for result in module.run():
            results.append(result)
            print(_line(result), flush=True)
    print()
    print(_table(results))
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    RESULTS.write_text(
        json.dumps(
            {
                "machine": machine,
                "seconds": round(time.perf_counter() - started, 1),
                "results": [r.as_dict() for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS}")


def _figure(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _line(result) -> str:
    verdict = {True: "ok", False: "MISSED", None: "not run"}[result.passed]
    return f"  {result.name}: {_figure(result.value)} ({result.measure}; target {result.target}) {verdict}"


def _table(results) -> str:
    rows = [("measure", "figure", "target", "result")]
    rows += [
        (
            f"{r.name} — {r.measure}",
            _figure(r.value),
            r.target,
            {True: "ok", False: "MISSED", None: "not run"}[r.passed],
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
