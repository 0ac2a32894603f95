"""The GPU rows (bench/gpu-check runs this): lite-v1 and standard-v1 on device cuda, 3 optimizers (the baselines and
Adam) × 1 seed at the full budget, trained by the worker task in-process on a throwaway embedded database, with
their wall time per workload and their scores. Merged into bench/results.json under "gpu"; fails without CUDA.

    python -m bench.gpu [lite-v1 standard-v1]
"""

from __future__ import annotations

import json
import sys
import time

from bench.__main__ import RESULTS, _embedded_environment
from bench.common import Result

#: the whole check (CUDA tests included) must fit 8 minutes
SUITE_TARGET_S = {"lite-v1": 120.0, "standard-v1": 300.0}


def run(suite_ids: list[str]) -> list[Result]:
    from bench.suite_wall import run_suite

    results = []
    for suite_id in suite_ids:
        started = time.perf_counter()
        details = run_suite(suite_id, device="cuda")
        total = time.perf_counter() - started
        results.append(
            Result(
                f"{suite_id}, 3 optimizers × 1 seed, full budget (cuda)",
                "wall seconds for the whole suite through the worker task",
                f"≤ {SUITE_TARGET_S[suite_id]:.0f} s",
                total,
                total <= SUITE_TARGET_S[suite_id],
                details,
            )
        )
        print(f"  {results[-1].name}: {total:.1f} s", flush=True)
    return results


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench.gpu: no CUDA device (torch.cuda.is_available() is False): nothing measured")
    _embedded_environment()
    from db.migrate import upgrade
    from optibench.settings import get_settings

    upgrade(get_settings().database_url)
    results = run(sys.argv[1:] or list(SUITE_TARGET_S))
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stored["gpu"] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "results": [r.as_dict() for r in results],
    }
    RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"written to {RESULTS} under 'gpu'")
    if not all(r.passed for r in results):
        sys.exit("bench.gpu: a row missed its target")


if __name__ == "__main__":
    main()
