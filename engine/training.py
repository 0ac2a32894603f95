"""The training loop of one run: one optimizer entry, one seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from engine.problem import BatchPlan, build_problem, resolve_device
from engine.recorder import StepBatch, StepRecorder
from engine.spec import ComparisonSpec

#: receives each flush; returning False asks the run to stop (it was cancelled)
FlushSink = Callable[[StepBatch], bool]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class RunOutcome:
    status: Literal["succeeded", "diverged", "cancelled"]
    steps_done: int
    final_loss: float | None
    best_loss: float | None
    wall_time_s: float
    diverged_step: int | None = None
    device: str = "cpu"


def train(
    spec: ComparisonSpec,
    entry_index: int,
    seed: int,
    sink: FlushSink,
    *,
    total_steps: int,
    flush_every: int = 500,
    flush_interval_s: float = 1.0,
) -> RunOutcome:
    device = resolve_device(spec.device)
    problem = build_problem(spec.problem, device, DTYPES[spec.dtype])
    entry = spec.optimizers[entry_index]
    module = problem.make_module(seed)
    optimizer = entry.component.build([p for p in module.parameters() if p.requires_grad], entry.typed_params)
    plan = BatchPlan.for_training(problem.n_train, spec.training, seed)
    recorder = StepRecorder(device, flush_every, flush_interval_s)
    best = math.inf
    status: Literal["succeeded", "diverged", "cancelled"] = "succeeded"
    diverged_step = None

    def flush() -> bool:
        nonlocal best, status, diverged_step
        batch = recorder.drain()
        if batch is None:
            return True
        bad = batch.first_non_finite()
        if bad is not None:
            batch = batch.head(bad + 1)
            status, diverged_step = "diverged", int(batch.step[-1])
        if bad is None or bad > 0:
            best = min(best, float(np.nanmin(batch.loss[: bad if bad is not None else None])))
        keep_going = sink(batch)
        if status == "diverged":
            return False
        if not keep_going:
            status = "cancelled"
        return keep_going

    recorder.start()
    batches = plan.batches(device)
    steps_done = 0
    for step in range(total_steps):
        epoch, indices = next(batches)
        point = problem.point(module)

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = problem.batch_loss(module, indices)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        steps_done = step + 1
        due = recorder.record(loss, None if problem.is_function else epoch, optimizer.param_groups[0]["lr"], point)
        if due and not flush():
            break
    else:
        flush()
    wall_time_s = recorder.elapsed_s
    if status == "diverged":
        return RunOutcome("diverged", diverged_step + 1, None, _finite_or_none(best), wall_time_s, diverged_step,
                          device.type)
    steps_done = min(steps_done, recorder.next_step)
    with torch.no_grad():
        final = float(problem.full_loss(module))
    if math.isfinite(final):
        best = min(best, final)
    elif status == "succeeded":
        status, diverged_step = "diverged", steps_done - 1
    return RunOutcome(status, steps_done, final if math.isfinite(final) else None, _finite_or_none(best),
                      wall_time_s, diverged_step, device.type)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
