"""What one submit costs the API process: CPU milliseconds per 6-run submit, in-process on PostgreSQL +
Redis (bench/submit_probe.py), for the README's example (an MLP, adam and sgd, three seeds) and the
API section's Rosenbrock spec.

Another checkout is measured beside this one with OPTIBENCH_BENCH_OLD_TREE (a `git worktree add` of an
older commit; its own migrations build its database): the probes of the two trees alternate, one fresh
process and database each, and the median round of each is reported, so both ran on the same machine in
the same minutes. ``python -m bench.submit --profile DIR`` also writes each tree's cProfile of the
handler's submits to DIR."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from bench.api import REDIS_URL, SUBMIT_SPEC, _purge_queue
from bench.common import EXAMPLES, Result, postgres_database

TREE = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("submit_probe.py")
SPECS = {
    "README example": json.loads((EXAMPLES / "mlp_adam_amsgrad.json").read_text()),
    "bench Rosenbrock": SUBMIT_SPEC,
}
SUBMITS, ROUNDS = 200, 3
#: submits per round in `make bench`, which keeps the section under a minute (a probe's start takes 3-4 s)
SECTION_SUBMITS = 100
#: the old code's figures (ffe0080, CPU ms per submit): the targets where no old tree is measured beside
OLD_MACHINE = "2-core machine of docs/performance.md, 2026-12-06, median of 7"
OLD_FIGURES = {
    "README example": {"handler": {"cpu_ms": 4.84}, "asgi": {"cpu_ms": 7.13}},
    "bench Rosenbrock": {"handler": {"cpu_ms": 3.65}, "asgi": {"cpu_ms": 5.86}},
}


def probe(tree: Path, spec: dict, submits: int, profile: Path | None = None) -> dict[str, dict[str, float]]:
    """One probe process's timings of ``tree`` on a fresh database and queue."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with postgres_database() as url:
        env = {
            **os.environ,
            "BENCH_TREE": str(tree),
            "BENCH_SPEC": json.dumps(spec),
            "BENCH_SUBMITS": str(submits),
            "OPTIBENCH_DATABASE_URL": url,
            "OPTIBENCH_BROKER_URL": REDIS_URL,
            "OPTIBENCH_QUEUE": queue,
            "OPTIBENCH_DATA_DIR": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"optibench-bench-{queue}"),
            "OPTIBENCH_MAX_RUNNING_COMPARISONS": "1000000",
            "OPTIBENCH_AUTH": "required",
            "OPTIBENCH_SECRET_KEY": uuid.uuid4().hex * 2,
            "OPTIBENCH_SWEEP_INTERVAL_S": "3600",  # no sweep inside the measurement
            **({"BENCH_PROFILE": str(profile)} if profile else {}),
        }
        try:
            done = subprocess.run(
                [sys.executable, str(PROBE)], env=env, cwd=tree, capture_output=True, text=True, check=False
            )
        finally:
            _purge_queue(queue)
    if done.returncode:
        raise RuntimeError(f"the submit probe of {tree} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    trees: dict[str, Path], rounds: int = ROUNDS, submits: int = SUBMITS, profile: Path | None = None
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Per spec, tree and way (handler, asgi): the median round's CPU and wall ms per submit (by CPU; on
    a shared machine a best round measures a quiet moment more than the code)."""
    measured: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = {}
    for spec_name, spec in SPECS.items():
        for round_index in range(rounds):
            order = list(trees.items())
            for tree_name, tree in order if round_index % 2 == 0 else order[::-1]:  # neither always goes first
                wanted = None
                if profile and round_index == rounds - 1:
                    wanted = profile / f"{tree_name}-{spec_name.replace(' ', '_')}.prof"
                figures = probe(tree, spec, submits, wanted)
                for way, round_figures in figures.items():
                    measured.setdefault(spec_name, {}).setdefault(tree_name, {}).setdefault(way, []).append(
                        round_figures
                    )
                print(f"    {spec_name}, {tree_name}, round {round_index + 1}: {json.dumps(figures)}", flush=True)
    return {
        spec_name: {
            tree_name: {
                way: sorted(rounds_, key=lambda figures: figures["cpu_ms"])[len(rounds_) // 2]
                for way, rounds_ in ways.items()
            }
            for tree_name, ways in by_tree.items()
        }
        for spec_name, by_tree in measured.items()
    }


def _trees() -> dict[str, Path]:
    trees = {"this code": TREE}
    if old := os.environ.get("OPTIBENCH_BENCH_OLD_TREE"):
        trees["old code"] = Path(old).resolve()
    return trees


def run() -> list[Result]:
    """Per spec: the route's CPU ms per submit, and the submits per CPU-second of a POST through the whole
    ASGI app; against the old tree's in the same run where OPTIBENCH_BENCH_OLD_TREE names one, else
    against its figures in OLD_FIGURES."""
    results = []
    for spec_name, by_tree in measure(_trees(), submits=SECTION_SUBMITS).items():
        handler, asgi = by_tree["this code"]["handler"], by_tree["this code"]["asgi"]
        measured_old = by_tree.get("old code")
        old = measured_old or OLD_FIGURES[spec_name]
        whose = "the old code's, same run" if measured_old else f"ffe0080's on the {OLD_MACHINE}"
        details = {"median of rounds": ROUNDS, "submits": SECTION_SUBMITS, **by_tree}
        results.append(
            Result(
                f"submit of the {spec_name} (6 runs), in-process, PostgreSQL + Redis",
                "CPU ms per submit (validation, route, commit, publish, response)",
                f"<= {old['handler']['cpu_ms']:.2f} ({whose})",
                handler["cpu_ms"],
                handler["cpu_ms"] <= old["handler"]["cpu_ms"],
                details,
            )
        )
        results.append(
            Result(
                f"POST of the {spec_name} through the ASGI app (API key), in-process",
                "submits per CPU-second",
                f">= {1000 / old['asgi']['cpu_ms']:.0f} ({whose})",
                1000 / asgi["cpu_ms"],
                asgi["cpu_ms"] <= old["asgi"]["cpu_ms"],
                details,
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.submit", description=__doc__)
    parser.add_argument("--old", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--submits", type=int, default=SUBMITS)
    parser.add_argument("--profile", type=Path, help="write each tree's cProfile of the last round here")
    args = parser.parse_args()
    trees = {"this code": TREE} | ({"old code": args.old.resolve()} if args.old else {})
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    medians = measure(trees, args.rounds, args.submits, args.profile)
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
