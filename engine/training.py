"""The training core: one loop for one run, or for an ensemble of runs trained as one (engine.vectorized).

The loop owns what every run shares: the batches, the steps, the evaluation schedule, the flushes, the
divergence cut, cancellation, the best loss so far and the final status. What one update is lives in a
``Stepper``: one module and its torch optimizers here (``ModuleStepper``), or the stacked members of an
ensemble (``engine.vectorized``). A single run is an ensemble of one that checkpoints and resumes.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from engine.optimizers import Optimizer, OptimizerParams
from engine.problem import BatchPlan, BuiltProblem, build_problem, resolve_device
from engine.recorder import StepBatch, StepRecorder
from engine.schedules import Constant, Schedule
from engine.spec import ComparisonSpec, OptimizerEntry, Problem, Training, group_parameters

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


@dataclass
class Track:
    """One run in the loop: where its flushes go, its module (whose weights the stepper updates), its
    seed (its batch order) and its best loss so far."""

    sink: FlushSink
    module: torch.nn.Module
    seed: int
    best: float = math.inf
    outcome: RunOutcome | None = None


class Stepper:
    """One update of every member still training."""

    #: whether batches come for all members at once, [M, B] (else one run's [B])
    stacked = False
    #: a function problem's x before the update (live: every update changes it in place); None for datasets
    point: Tensor | None = None

    def step(
        self, step: int, indices: Tensor | None
    ) -> tuple[Tensor, float | np.ndarray | None, dict[str, Tensor] | None]:
        """Apply update number ``step`` (from 0) on the batch ``indices``: (the loss before it, the rate used or
        None where the optimizer has none, the extras asked for)."""
        raise NotImplementedError

    def evaluate(self, problem: BuiltProblem, modules: Sequence[torch.nn.Module]) -> dict[str, Tensor]:
        """Whole-set metrics of the members still training."""
        return problem.evaluate(modules[0])

    def evaluating(self) -> AbstractContextManager[None]:
        """Around every evaluation and the final loss: the weights to evaluate in place (a schedule-free
        optimizer's averaged ones), training's restored after."""
        return nullcontext()

    def member_rows(self, batch: StepBatch, row: int) -> StepBatch:
        """One member's share of a flush."""
        return batch

    def keep(self, rows: Sequence[int]) -> None:
        """Go on with these members only (positions among those still training)."""
        raise NotImplementedError(f"{type(self).__name__} trains one member")


def _global_norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


class ModuleStepper(Stepper):
    """One module and its torch optimizers (one, or one per optimizer of the entry's parameter groups), stepped
    together on one backward pass; every param group's rate is its own lr times the schedule's factor.

    ``components``: the optimizer component of each torch optimizer, whose capabilities decide the step: a
    closure for those that re-evaluate the loss, the loss value for those that read it, a backward pass that
    keeps its graph for Hessian-vector products (freed after the step), and train/eval modes (schedule-free:
    ``train()`` for steps, ``eval()`` around every evaluation and the final loss). None: plain optimizers."""

    def __init__(
        self,
        problem: BuiltProblem,
        module: torch.nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        lrs: Sequence[Sequence[float | None]],
        schedule: Schedule,
        total_steps: int,
        extras: Sequence[str],
        components: Sequence[type[Optimizer[Any]]] | None = None,
    ) -> None:
        self.problem, self.module, self.optimizers = problem, module, list(optimizers)
        self.components: list[type[Optimizer[Any]]] = (
            list(components) if components is not None else [Optimizer] * len(self.optimizers)
        )
        self.hvp = any(component.needs_hvp for component in self.components)
        self.moded = [o for o, c in zip(self.optimizers, self.components) if c.train_eval_modes]
        for optimizer in self.moded:
            optimizer.train()  # type: ignore[attr-defined]
        self.rate_key = self.components[0].rate_key
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.lrs, self.schedule, self.total_steps = lrs, schedule, total_steps
        # decided once: the step runs per step, and its own cost is what recording adds to training
        self.scheduled = schedule != Constant()
        self.grad_norm, self.update_norm = "grad_norm" in extras, "update_norm" in extras
        self.first_group = optimizers[0].param_groups[0]  # the entry's, or its groups.0's: the rate recorded
        self.point = problem.point(module)

    def step(self, step: int, indices: Tensor | None) -> tuple[Tensor, float | None, dict[str, Tensor] | None]:
        optimizers, params = self.optimizers, self.params
        if self.scheduled:
            factor = self.schedule.factor(step, self.total_steps)
            for optimizer, lrs in zip(optimizers, self.lrs):
                for group, lr in zip(optimizer.param_groups, lrs):
                    if lr is not None:  # a rule with no rate of its own (AliG's Polyak step) is not scheduled
                        group["lr"] = lr * factor
        before = [p.detach().clone() for p in params] if self.update_norm else None

        def closure() -> Tensor:
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss = self.problem.batch_loss(self.module, indices)
            loss.backward(create_graph=self.hvp)
            return loss

        if len(optimizers) == 1:
            loss = self.components[0].update(optimizers[0], closure)
        else:  # one backward pass for all; an optimizer of a group never re-evaluates (validation refuses it)
            loss = closure().detach()
            for component, optimizer in zip(self.components, optimizers):
                if component.needs_loss:
                    optimizer.step(lambda: loss)  # type: ignore[arg-type,return-value]
                else:
                    optimizer.step()
        extras = None
        if self.grad_norm or self.update_norm:
            extras = {}
            if self.grad_norm:  # detached: with create_graph the gradients are part of a graph
                extras["grad_norm"] = _global_norm([p.grad.detach() for p in params if p.grad is not None])
            if before is not None:
                extras["update_norm"] = _global_norm([p.detach() - b for p, b in zip(params, before)])
        if self.hvp:  # the gradients hold the graph create_graph kept (and a cycle through the parameters)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
        return loss, None if self.rate_key is None else self.first_group.get(self.rate_key, math.nan), extras

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        # before its first step an optimizer keeps no average, so its weights are the only ones (and SPlus's eval()
        # fails for want of one)
        moded = [optimizer for optimizer in self.moded if optimizer.state]
        for optimizer in moded:
            optimizer.eval()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for optimizer in moded:
                optimizer.train()  # type: ignore[attr-defined]

    def evaluating(self) -> AbstractContextManager[None]:
        return self._evaluating() if self.moded else nullcontext()


def build_optimizers(
    problem: Problem, entry: OptimizerEntry, module: torch.nn.Module, *, total_steps: int
) -> list[torch.optim.Optimizer]:
    """The entry's torch optimizers for ``module`` in a run of ``total_steps`` updates: one over every trainable
    parameter, or, with ``groups``, one per distinct optimizer with a param group per group (the first holds
    groups.0)."""
    return [optimizer for _, optimizer in build_components(problem, entry, module, total_steps=total_steps)]


def build_components(
    problem: Problem, entry: OptimizerEntry, module: torch.nn.Module, *, total_steps: int
) -> list[tuple[type[Optimizer[Any]], torch.optim.Optimizer]]:
    """``build_optimizers`` with the component each torch optimizer was built by (whose capabilities it steps by)."""
    if not entry.groups:
        params: list[Tensor] = [p for p in module.parameters() if p.requires_grad]
        arguments = entry.component.run_arguments(total_steps)
        return [(entry.component, entry.component.build(params, entry.typed_params, **arguments))]
    tensors = dict(module.named_parameters())
    by_optimizer: dict[str, list[tuple[list[Tensor], OptimizerParams]]] = {}
    components = {}
    for (component, hyper), chosen in zip(entry.group_optimizers(), group_parameters(problem, entry)):
        components[component.name] = component
        by_optimizer.setdefault(component.name, []).append(([tensors[p.name] for p in chosen], hyper))
    return [
        (components[name], built)
        for name, groups in by_optimizer.items()
        for built in components[name].build_groups(groups, **components[name].run_arguments(total_steps))
    ]


def run_loop(
    problem: BuiltProblem,
    stepper: Stepper,
    tracks: Sequence[Track],
    plan: BatchPlan,
    training: Training,
    recorder: StepRecorder,
    device: torch.device,
    *,
    total_steps: int,
    start: int = 0,
    checkpoint: Callable[[Track], bytes] | None = None,
    checkpoint_interval_s: float | None = None,
) -> list[RunOutcome]:
    """Train ``tracks`` (the runs) from update ``start`` to ``total_steps``, handing each its flushes; one outcome
    per member, in order. A member whose loss turns non-finite (diverged) or whose sink returns False
    (cancelled) leaves at that flush; the others go on. ``checkpoint``: a flush at least
    ``checkpoint_interval_s`` after the previous checkpoint carries a new one (one member only)."""
    active = list(range(len(tracks)))  # the members still training, in the stepper's row order
    is_function, eval_every = problem.is_function, training.eval_every
    last_checkpoint = time.monotonic()

    def batches_from(step: int) -> Iterator[tuple[int, Tensor | None]]:
        if stepper.stacked:
            return plan.batches(device, step, seeds=[tracks[m].seed for m in active])
        return plan.batches(device, step)

    def finish(member: Track, status: Status) -> None:
        """The whole-set loss of the final weights decides the rest."""
        steps_done, diverged_step = recorder.next_step, None
        with torch.no_grad(), stepper.evaluating():
            final = float(problem.full_loss(member.module))
        if math.isfinite(final):
            member.best = min(member.best, final)
        elif status == "succeeded":
            status, diverged_step = "diverged", steps_done - 1
        member.outcome = RunOutcome(
            status,
            steps_done,
            final if math.isfinite(final) else None,
            finite_or_none(member.best),
            recorder.elapsed_s,
            diverged_step,
            device.type,
        )

    def hand_over(member: Track, rows: StepBatch) -> bool:
        """One member's flush: False once it has stopped, diverged or cancelled."""
        nonlocal last_checkpoint
        bad = rows.first_non_finite()
        if bad is not None:
            rows = rows.head(bad + 1)
        finite = rows.loss[np.isfinite(rows.loss)]
        if len(finite):
            member.best = min(member.best, float(finite.min()))
        rows.best_loss = finite_or_none(member.best)
        if (
            bad is None
            and checkpoint is not None
            and checkpoint_interval_s is not None
            and len(rows)
            and time.monotonic() - last_checkpoint >= checkpoint_interval_s
        ):
            rows.checkpoint = (recorder.next_step, checkpoint(member))
            last_checkpoint = time.monotonic()
        keep_going = member.sink(rows)
        if bad is not None:
            diverged_step = int(rows.step[-1])
            member.outcome = RunOutcome(
                "diverged",
                diverged_step + 1,
                None,
                finite_or_none(member.best),
                recorder.elapsed_s,
                diverged_step,
                device.type,
            )
            return False
        if not keep_going:
            finish(member, "cancelled")
        return keep_going

    batches: Iterator[tuple[int, Tensor | None]]

    def flush(last: bool) -> None:
        nonlocal active, batches
        batch = recorder.drain()
        staying = [
            row
            for row, m in enumerate(active)
            if batch is None or hand_over(tracks[m], stepper.member_rows(batch, row))
        ]
        if last:
            for row in staying:
                finish(tracks[active[row]], "succeeded")
        elif staying and len(staying) < len(active):
            stepper.keep(staying)
            active = [active[row] for row in staying]
            batches = batches_from(recorder.next_step)
        else:
            active = [active[row] for row in staying]

    def evaluate(updates: int, epoch: int | None) -> None:
        if eval_every is not None:
            with recorder.paused(), stepper.evaluating():
                metrics = stepper.evaluate(problem, [tracks[m].module for m in active])
            recorder.record_eval(updates, None if is_function else epoch, metrics)

    recorder.start()
    batches = batches_from(start)
    epoch = 0
    if start == 0:
        evaluate(0, 0)
    for step in range(start, total_steps):
        epoch, indices = next(batches)
        point = stepper.point
        if point is not None:
            recorder.record_point(point)
        loss, lr, extras = stepper.step(step, indices)
        due = recorder.record(loss, None if is_function else epoch, lr, extras)
        if eval_every is not None and (step + 1) % eval_every == 0 and step + 1 < total_steps:
            evaluate(step + 1, epoch)
        if due:
            flush(last=False)
            if not active:
                break
    else:
        evaluate(total_steps, epoch)
        flush(last=True)
    return [_settled(track) for track in tracks]


def _settled(track: Track) -> RunOutcome:
    if track.outcome is None:
        raise RuntimeError("the loop ended with a member that has no outcome")
    return track.outcome


def _snapshot(
    module: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer], step: int, elapsed_s: float, best: float
) -> bytes:
    """Everything a resumed run needs to continue bit for bit. The batch order is a pure function
    of (seed, epoch), so the data position is the step alone."""
    buffer = io.BytesIO()
    torch.save(
        {
            "step": step,
            "model": module.state_dict(),
            # one optimizer's state under "optimizer", as checkpoints were written before parameter groups
            **(
                {"optimizer": optimizers[0].state_dict()}
                if len(optimizers) == 1
                else {"optimizers": [optimizer.state_dict() for optimizer in optimizers]}
            ),
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_s,
            "best": best,
        },
        buffer,
    )
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
    """Train one run of the spec's optimizer entry, handing every flush to ``sink``. With
    ``checkpoint_interval_s``, a flush at least that long after the previous checkpoint carries a new one;
    ``resume`` continues from one (with its best loss so far, which every flush carries). ``stop_requested``
    is asked once the data and the model are built, before the first step: a run cancelled while it was
    being built ends there, as cancelled."""
    entry = spec.optimizers[entry_index]
    return train_with(
        spec,
        seed,
        sink,
        lambda module: build_components(spec.problem, entry, module, total_steps=total_steps),
        schedule=entry.schedule,
        batch_size=entry.batch_size,
        total_steps=total_steps,
        flush_every=flush_every,
        flush_interval_s=flush_interval_s,
        checkpoint_interval_s=checkpoint_interval_s,
        resume=resume,
        stop_requested=stop_requested,
    )


#: builds a run's torch optimizers for its module, each with the component whose capabilities step it
BuildOptimizers = Callable[[torch.nn.Module], list[tuple[type[Optimizer[Any]], torch.optim.Optimizer]]]


def train_with(
    spec: ComparisonSpec,
    seed: int,
    sink: FlushSink,
    build: BuildOptimizers,
    *,
    total_steps: int,
    schedule: Schedule | None = None,
    batch_size: int | str | None = None,
    device: torch.device | None = None,
    flush_every: int = 10_000,
    flush_interval_s: float = 1.0,
    checkpoint_interval_s: float | None = None,
    resume: bytes | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> RunOutcome:
    """``train`` with optimizers from ``build`` instead of a spec entry: the spec's problem for ``seed`` (its
    initial weights, batch order, loss and evaluations) stepped by any torch optimizers; what the SDK trains
    a client's own optimizer with. ``device`` overrides the spec's."""
    device = device or resolve_device(spec.device)
    problem = build_problem(spec.problem, device, DTYPES[spec.dtype])
    module = problem.make_module(seed)
    # an optimizer drawing from torch's global generator (Kron's preconditioner updates, Hutchinson probes)
    # draws the same numbers for a seed whatever the process ran before
    torch.manual_seed(seed)
    built = build(module)
    optimizers = [optimizer for _, optimizer in built]
    lrs = [
        [group.get("lr") for group in optimizer.param_groups] for optimizer in optimizers
    ]  # before a resume sets them
    plan = BatchPlan.for_training(problem.n_train, spec.training, seed, batch_size)
    start, elapsed_s, best = 0, 0.0, math.inf
    if resume is not None:
        state = torch.load(io.BytesIO(resume), map_location=device, weights_only=True)
        module.load_state_dict(state["model"])
        for optimizer, saved in zip(optimizers, state["optimizers"] if "optimizers" in state else [state["optimizer"]]):
            optimizer.load_state_dict(saved)
        torch.set_rng_state(state["torch_rng"])
        start, elapsed_s, best = state["step"], state["elapsed_s"], state["best"]
    if stop_requested is not None and stop_requested():
        return RunOutcome("cancelled", start, None, finite_or_none(best), elapsed_s, device=device.type)
    recorder = StepRecorder(device, flush_every, flush_interval_s, first_step=start, time_offset_s=elapsed_s)
    stepper = ModuleStepper(
        problem,
        module,
        optimizers,
        lrs,
        schedule or Constant(),
        total_steps,
        spec.training.extras,
        components=[component for component, _ in built],
    )
    track = Track(sink, module, seed, best)

    def checkpoint(track: Track) -> bytes:
        return _snapshot(module, optimizers, recorder.next_step, recorder.elapsed_s, track.best)

    [outcome] = run_loop(
        problem,
        stepper,
        [track],
        plan,
        spec.training,
        recorder,
        device,
        total_steps=total_steps,
        start=start,
        checkpoint=checkpoint,
        checkpoint_interval_s=checkpoint_interval_s,
    )
    return outcome


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
