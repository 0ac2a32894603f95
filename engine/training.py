"""The training loop of one run: one optimizer entry, one seed."""

from __future__ import annotations

import io
import math
import time
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
Status = Literal["succeeded", "diverged", "cancelled"]


@dataclass
class RunOutcome:
    status: Status
    steps_done: int
    final_loss: float | None
    best_loss: float | None
    wall_time_s: float
    diverged_step: int | None = None
    device: str = "cpu"


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _snapshot(module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, elapsed_s: float,
              best: float) -> bytes:
    """Everything a resumed run needs to continue bit for bit. The batch order is a pure function
    of (seed, epoch), so the data position is the step alone."""
    buffer = io.BytesIO()
    torch.save({"step": step, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(), "elapsed_s": elapsed_s, "best": best}, buffer)
    return buffer.getvalue()


def train(
    spec: ComparisonSpec,
    entry_index: int,
    seed: int,
    sink: FlushSink,
    *,
    total_steps: int,
    flush_every: int = 10_000,
    flush_interval_s: float = 1.0,
    checkpoint_interval_s: float | None = None,
    resume: bytes | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> RunOutcome:
    """Train one run, handing every flush to ``sink``. With ``checkpoint_interval_s``, a flush at
    least that long after the previous checkpoint carries a new one; ``resume`` continues from one.
    ``stop_requested`` is asked once the data and the model are built, before the first step: a run
    cancelled while it was being built ends there, as cancelled."""
    device = resolve_device(spec.device)
    problem = build_problem(spec.problem, device, DTYPES[spec.dtype])
    entry = spec.optimizers[entry_index]
    module = problem.make_module(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    hyper = entry.typed_params
    optimizer = entry.component.build(params, hyper)
    schedule = entry.schedule
    training = spec.training
    plan = BatchPlan.for_training(problem.n_train, training, seed, entry.batch_size)
    start, elapsed_s, best = 0, 0.0, math.inf
    if resume is not None:
        state = torch.load(io.BytesIO(resume), map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, elapsed_s, best = state["step"], state["elapsed_s"], state["best"]
    if stop_requested is not None and stop_requested():
        return RunOutcome("cancelled", start, None, finite_or_none(best), elapsed_s, device=device.type)
    recorder = StepRecorder(device, flush_every, flush_interval_s, first_step=start, time_offset_s=elapsed_s)
    status: Status = "succeeded"
    diverged_step = None
    last_checkpoint = time.monotonic()

    def flush() -> bool:
        nonlocal best, status, diverged_step, last_checkpoint
        batch = recorder.drain()
        if batch is None:
            return True
        bad = batch.first_non_finite()
        if bad is not None:
            batch = batch.head(bad + 1)
            status, diverged_step = "diverged", int(batch.step[-1])
        finite = batch.loss[np.isfinite(batch.loss)]
        if len(finite):
            best = min(best, float(finite.min()))
        if (status != "diverged" and checkpoint_interval_s is not None and len(batch)
                and time.monotonic() - last_checkpoint >= checkpoint_interval_s):
            batch.checkpoint = (recorder.next_step, _snapshot(module, optimizer, recorder.next_step, recorder.elapsed_s, best))
            last_checkpoint = time.monotonic()
        keep_going = sink(batch)
        if status == "diverged":
            return False
        if not keep_going:
            status = "cancelled"
        return keep_going

    def evaluate(updates: int, epoch: int | None) -> None:
        if training.eval_every is not None:
            recorder.record_eval(updates, None if problem.is_function else epoch, problem.evaluate(module))

    recorder.start()
    batches = plan.batches(device, start_step=start)
    epoch = 0
    if start == 0:
        evaluate(0, 0)
    # decided once: the loop below runs per step, and its own cost is what recording adds to training
    scheduled = schedule.name != "constant"
    want_grad_norm, want_update_norm = "grad_norm" in training.extras, "update_norm" in training.extras
    eval_every, is_function = training.eval_every, problem.is_function
    first_group = optimizer.param_groups[0]
    point = problem.point(module)  # a function problem's x, which every update changes in place
    for step in range(start, total_steps):
        epoch, indices = next(batches)
        if scheduled:
            for group in optimizer.param_groups:
                group["lr"] = hyper.lr * schedule.factor(step, total_steps)
        if point is not None:
            recorder.record_point(point)
        before = [p.detach().clone() for p in params] if want_update_norm else None

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = problem.batch_loss(module, indices)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        extras = None
        if want_grad_norm or want_update_norm:
            extras = {}
            if want_grad_norm:
                extras["grad_norm"] = _global_norm([p.grad for p in params if p.grad is not None])
            if want_update_norm:
                extras["update_norm"] = _global_norm([p.detach() - b for p, b in zip(params, before)])
        due = recorder.record(loss, None if is_function else epoch, first_group["lr"], extras)
        if eval_every is not None and (step + 1) % eval_every == 0 and step + 1 < total_steps:
            evaluate(step + 1, epoch)
        if due and not flush():
            break
    else:
        evaluate(total_steps, epoch)
        flush()

    steps_done = recorder.next_step if status != "diverged" else diverged_step + 1
    if status == "diverged":
        return RunOutcome(status, steps_done, None, finite_or_none(best), recorder.elapsed_s, diverged_step, device.type)
    with torch.no_grad():
        final = float(problem.full_loss(module))
    if math.isfinite(final):
        best = min(best, final)
    elif status == "succeeded":
        status, diverged_step = "diverged", steps_done - 1
    return RunOutcome(status, steps_done, final if math.isfinite(final) else None, finite_or_none(best),
                      recorder.elapsed_s, diverged_step, device.type)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
