"""A run's memory budget (OPTIBENCH_WORKER_MEMORY_BYTES) in the worker.

Two guards: the estimate from the spec (engine.sizing), checked before anything is built, and on the
CPU a cap on the process's data segment (RLIMIT_DATA) around the training, so that real allocations
well past the budget fail that run with a clear error instead of taking the machine down. The cap is the
process's data size when the run starts plus the budget, and it is lifted when the run ends: a worker
that trains in its main process (a solo or threads pool) goes on as before.
"""

from __future__ import annotations

import re
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.sizing import MemoryEstimate, human_bytes

#: what every refusal says, so users and tests can tell it from other failures
OUT_OF_BUDGET = "out of memory budget"
_SETTING = "OPTIBENCH_WORKER_MEMORY_BYTES"
#: above the budget, for the runtime's own reservations that count as data (thread stacks, allocator arenas)
RUNTIME_HEADROOM_BYTES = 256 * 1024**2
#: one capped run per process: a second run that trains meanwhile (a threads pool) goes uncapped
_capping = threading.Lock()


def over_budget(estimate: MemoryEstimate, budget: int) -> str | None:
    """The error of a run whose estimate exceeds the budget, or None if it fits."""
    if estimate.total <= budget:
        return None
    return (
        f"{OUT_OF_BUDGET}: the run needs {estimate.describe()}, over the worker's budget of "
        f"{human_bytes(budget)} ({_SETTING})"
    )


def allocation_failure(exc: BaseException, budget: int) -> str | None:
    """The error of a run that failed to allocate memory (torch's or Python's), or None if ``exc`` is
    another failure."""
    failed = isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))
    )
    if not failed:
        return None
    return (
        f"{OUT_OF_BUDGET}: an allocation failed within the worker's budget of {human_bytes(budget)} ({_SETTING}): "
        f"{type(exc).__name__}: {str(exc)[:300]}"
    )


def _data_bytes() -> int:
    with open("/proc/self/status") as status:
        found = re.search(r"^VmData:\s+(\d+) kB", status.read(), re.MULTILINE)
    if found is None:
        raise RuntimeError("/proc/self/status has no VmData line")
    return int(found.group(1)) * 1024


@contextmanager
def data_limit(budget: int | None) -> Iterator[None]:
    """Cap this process's data segment at its current size plus ``budget`` (and the runtime's headroom)
    while the block runs; the previous limit comes back after. None, or another capped run in this process: no cap."""
    if budget is None or not _capping.acquire(blocking=False):
        yield
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = _data_bytes() + budget + RUNTIME_HEADROOM_BYTES
        for existing in (soft, hard):  # never loosen a limit the operator set
            if existing != resource.RLIM_INFINITY:
                limit = min(limit, existing)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    finally:
        _capping.release()
