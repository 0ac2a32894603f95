"""What one submit costs the API process: CPU milliseconds per 6-run submit, in-process on PostgreSQL +
Redis (bench/submit_probe.py), for the README's example (an MLP, adam and sgd, three seeds) and the
API section's Rosenbrock spec.

Another checkout is measured beside this one with OPTIBENCH_BENCH_OLD_TREE (a `git worktree add` of an
older commit; its own migrations build its database): the probes of the two trees alternate, one fresh
process and database each, and the best round of each is reported, so both ran on the same machine in
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
    """Per spec, tree and way (handler, asgi): the best round's CPU and wall ms per submit."""
    best: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for spec_name, spec in SPECS.items():
        for round_index in range(rounds):
            order = list(trees.items())
            for tree_name, tree in order if round_index % 2 == 0 else order[::-1]:  # neither always goes first
                wanted = None
                if profile and round_index == rounds - 1:
                    wanted = profile / f"{tree_name}-{spec_name.replace(' ', '_')}.prof"
                measured = probe(tree, spec, submits, wanted)
                for way, figures in measured.items():
                    kept = best.setdefault(spec_name, {}).setdefault(tree_name, {}).setdefault(way, figures)
                    if figures["cpu_ms"] < kept["cpu_ms"]:
                        best[spec_name][tree_name][way] = figures
                print(f"    {spec_name}, {tree_name}, round {round_index + 1}: {json.dumps(measured)}", flush=True)
    return best


def _trees() -> dict[str, Path]:
    trees = {"this code": TREE}
    if old := os.environ.get("OPTIBENCH_BENCH_OLD_TREE"):
        trees["old code"] = Path(old).resolve()
    return trees


def run() -> list[Result]:
    results = []
    for spec_name, by_tree in measure(_trees()).items():
        handler = by_tree["this code"]["handler"]
        old = by_tree.get("old code", {}).get("handler")
        results.append(
            Result(
                f"submit of the {spec_name} (6 runs), in-process, PostgreSQL + Redis",
                "CPU ms per submit",
                "<= the old code's" if old else "(old code: OPTIBENCH_BENCH_OLD_TREE)",
                handler["cpu_ms"],
                handler["cpu_ms"] <= old["cpu_ms"] if old else None,
                {"best of rounds": ROUNDS, "submits": SUBMITS, **{tree: ways for tree, ways in by_tree.items()}},
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
    best = measure(trees, args.rounds, args.submits, args.profile)
    print(json.dumps(best, indent=2))


if __name__ == "__main__":
    main()
