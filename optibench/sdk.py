"""Train a comparison's exact problem on your own machine, with your own optimizer, paired with the server's runs.

The problem is built by the engine code the workers run: for a seed, the same initial weights, the same batch
order, the same loss and evaluations, so on the same device and dtype step 0's loss equals the server run's bit
for bit when that run trained alone (``execution: "alone"``); a run trained as a member of a vectorized
ensemble (``execution: "ensemble"``) sums its matmuls in another order and agrees to float rounding
(docs/vectorized.md). The run is an *external* run of the comparison (docs/ingest.md): it is ranked and tested
against the catalogue runs of the same seeds. Its rows are recorded by the engine's recorder (no per-step device
sync), kept in a spool on disk and uploaded in bulk by a background thread (``optibench.spool``).

One call, with the SDK's loop (the engine's: evaluations, the divergence cut, checkpoints for a restart)::

    client = Client("http://127.0.0.1:8000", api_key="ob_...")
    runs = sdk.train(client, comparison_id, lambda params: SignSGD(params, lr=1e-2), label="signsgd")

Or your own loop::

    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    with sdk.start_run(client, problem, seed=0, label="signsgd") as run:
        optimizer = SignSGD(run.model.parameters(), lr=1e-2)
        for batch in run.batches():
            loss = run.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss)

A process killed mid-run leaves its rows in the spool; starting the same run again (same comparison, seed and
label) sends them and goes on with the same server run: the SDK's loop from its last checkpoint, your own loop
from step 0 (the server keeps the rows it has, by step, so every step is stored once).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import torch
from torch import Tensor, nn

from engine import hardware
from engine import suites as engine_suites
from engine.optimizers import Optimizer
from engine.problem import BatchPlan, BuiltProblem, build_problem, resolve_device
from engine.recorder import StepBatch, StepRecorder
from engine.spec import ComparisonSpec
from engine.training import DTYPES, train_with
from optibench.client import Client, OptibenchError
from optibench.spool import (
    RunSpool,
    client_packages,
    default_spool_dir,
    dropping_refused,
    locked,
    read_meta,
    remove,
    sync_folders,
    write_meta,
)

#: what ``train`` calls to make a run's optimizer: the model's trainable parameters in, a torch optimizer out
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: the upload's columns, in the order the server lists them (``x``, a function problem's point, is not uploaded)
UPLOADED = ("step", "epoch", "loss", "time_s", "step_time_ms", "lr", "grad_norm", "update_norm")


class RunCancelled(Exception):
    """Someone cancelled the run on the server: the loop stops at its next upload."""


@dataclass(frozen=True)
class Batch:
    """One step's batch: ``indices`` into the training set (None: all of it)."""

    step: int
    epoch: int
    indices: Tensor | None


class LocalProblem:
    """A comparison's problem built here by the engine: ``model(seed)``, ``batches(seed)``, ``loss``."""

    def __init__(
        self,
        spec: ComparisonSpec,
        *,
        comparison_id: str | None = None,
        seeds: Sequence[int] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.spec, self.comparison_id = spec, comparison_id
        self.device = torch.device(device) if device is not None else resolve_device(spec.device)
        self.dtype = DTYPES[spec.dtype]
        if seeds is None:
            seeds = spec.seeds if isinstance(spec.seeds, list) else range(spec.seeds.adaptive.min)
        self.seeds = list(seeds)
        self._built: BuiltProblem | None = None

    @classmethod
    def from_spec(cls, spec: dict | str | os.PathLike | ComparisonSpec, device: str | None = None) -> LocalProblem:
        """A spec (a dict, a JSON file's path, or a validated spec), not tied to a comparison."""
        if isinstance(spec, (str, os.PathLike)):
            spec = json.loads(Path(spec).read_text())
        return cls(spec if isinstance(spec, ComparisonSpec) else ComparisonSpec.model_validate(spec), device=device)

    @classmethod
    def from_workload(
        cls, suite: str, workload: str, budget: Literal["full", "reduced"] = "full", device: str | None = None
    ) -> LocalProblem:
        """A suite workload's problem at one of its budgets, with the suite's seeds for it (``suite``: an id such
        as "lite-v1"), not tied to a comparison: to try an optimizer on it before submitting anything."""
        suites = engine_suites.discover()
        if suite not in suites:
            raise ValueError(f"no suite {suite!r}; suites: {sorted(suites)}")
        found = suites[suite]
        if workload not in {w.name for w in found.workloads}:
            raise ValueError(
                f"suite {suite} has no workload {workload!r}; workloads: {[w.name for w in found.workloads]}"
            )
        chosen = found.workload(workload)
        seeds = found.seeds if budget == "full" else found.reduced_seeds
        budgets = {"full": chosen.budget, "reduced": chosen.reduced}
        spec = chosen.spec(found.baselines, seeds, budgets[budget], found.device)
        return cls(ComparisonSpec.model_validate(spec), device=device)

    @classmethod
    def from_comparison(cls, client: Client, comparison_id: str, device: str | None = None) -> LocalProblem:
        """The problem of a comparison on the server, with the seeds its runs train."""
        comparison = client.comparison(comparison_id)
        seeds = sorted({run["seed"] for run in comparison["runs"] if not run.get("external")})
        spec = ComparisonSpec.model_validate(comparison["spec"])
        return cls(spec, comparison_id=comparison_id, seeds=seeds, device=device)

    @property
    def built(self) -> BuiltProblem:
        """The data on the device (loaded on first use) and the model builder."""
        if self._built is None:
            self._built = build_problem(self.spec.problem, self.device, self.dtype)
        return self._built

    def plan(self, seed: int) -> BatchPlan:
        return BatchPlan.for_training(self.built.n_train, self.spec.training, seed)

    @property
    def steps_total(self) -> int:
        """Updates per run: the training's steps, or its epochs of the training's batch size."""
        training = self.spec.training
        if training.steps is not None:
            return training.steps
        assert training.epochs is not None
        return training.epochs * self.plan(0).batches_per_epoch

    def model(self, seed: int) -> nn.Module:
        """The model with the initial weights every optimizer gets for ``seed``."""
        return self.built.make_module(seed)

    def batches(self, seed: int, start: int = 0) -> Iterator[Batch]:
        """The seed's batches from step ``start`` to the end of training, in the server's order."""
        order = self.plan(seed).batches(self.device, start)
        for step, (epoch, indices) in zip(range(start, self.steps_total), order):
            yield Batch(step, epoch, indices)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The batch's loss, as the workers compute it."""
        return self.built.batch_loss(model, batch.indices)

    def full_loss(self, model: nn.Module) -> float:
        """The loss on the whole training set: what ranks a run."""
        with torch.no_grad():
            return float(self.built.full_loss(model))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The whole-set metrics the workers record: train_loss, and val_loss / accuracies where they apply."""
        with torch.no_grad():
            return {name: float(value) for name, value in self.built.evaluate(model).items()}


def steps_arrow(batch: StepBatch) -> bytes:
    """A flush's rows as the Arrow IPC stream the server's ingest takes."""
    columns = batch.columns()
    arrays, names = [], []
    for name in UPLOADED:
        values = columns.get(name)
        if values is None:
            continue
        arrays.append(pa.array(values, type=pa.int64() if name in ("step", "epoch") else pa.float64()))
        names.append(name)
    sink = io.BytesIO()
    table = pa.Table.from_arrays(arrays, names=names)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class LocalRun:
    """An external run trained here. In your own loop: ``model``, ``batches()``, ``loss(batch)``, ``log(loss)``
    per step, and ``evaluate()`` when you like; leaving the ``with`` block finishes it (succeeded, or failed
    with the exception; a cancel from the server ends it quietly)."""

    def __init__(
        self,
        client: Client,
        problem: LocalProblem,
        run: dict[str, Any],
        directory: Path,
        exit_stack: ExitStack,
        *,
        max_pending_bytes: int,
        flush_every: int,
        flush_interval_s: float,
    ) -> None:
        self.client, self.problem, self.directory = client, problem, directory
        self.id: str = run["id"]
        self.seed: int = run["seed"]
        self.label: str = run["label"]
        self._exit_stack = exit_stack
        self._spool = RunSpool(
            directory,
            self._upload,
            max_pending_bytes=max_pending_bytes,
            heartbeat=lambda: client.heartbeat(self.id),
        )
        self._recorder = StepRecorder(problem.device, flush_every, flush_interval_s)
        self._model: nn.Module | None = None
        self._epoch: int | None = None
        self._started = False
        self.finished: dict[str, Any] | None = None

    def _upload(self, kind: str, body: bytes) -> dict[str, Any]:
        return _send_item(self.client, self.id, kind, body)

    # --- your own loop ---------------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The model with the seed's initial weights (built on first use)."""
        if self._model is None:
            self._model = self.problem.model(self.seed)
        return self._model

    def batches(self) -> Iterator[Batch]:
        """The seed's batches, in the server's order; the run's clock starts with the first."""
        self._start()
        epochs = not self.problem.built.is_function  # a function problem's steps have none
        for batch in self.problem.batches(self.seed):
            self._epoch = batch.epoch if epochs else None
            yield batch

    def loss(self, batch: Batch) -> Tensor:
        """The batch's loss on ``model``."""
        return self.problem.loss(self.model, batch)

    def log(self, loss: Tensor | float, lr: float = math.nan) -> None:
        """Record one step's loss (the batch's, before the update): a tensor stays on its device until the
        next flush. Raises RunCancelled once the server has cancelled the run."""
        if self._recorder.record(loss if isinstance(loss, Tensor) else torch.tensor(float(loss)), self._epoch, lr):
            self.flush()

    def evaluate(self) -> dict[str, float]:
        """The whole-set metrics of ``model`` now, left out of the run's training time."""
        self._start()
        with self._recorder.paused(), torch.no_grad():
            metrics = self.problem.built.evaluate(self.model)
        self._recorder.record_eval(self._recorder.next_step, self._epoch, metrics)  # uploaded with the next flush
        return {name: float(value) for name, value in metrics.items()}

    def flush(self) -> None:
        """Hand the rows recorded so far to the uploader."""
        batch = self._recorder.drain()
        if batch is not None and len(batch) and not self.put(batch):
            raise RunCancelled(f"run {self.id} was cancelled on the server")

    def _start(self) -> None:
        if not self._started:
            self._recorder.start()
            self._started = True

    @property
    def cancelled(self) -> bool:
        """Whether the server has answered that the run is cancelled."""
        return self._spool.cancelled

    # --- shared with the SDK's loop ------------------------------------------------------------------

    def put(self, batch: StepBatch) -> bool:
        """Spool a flush's rows (and the checkpoint it carries, once its rows are on disk); False once the
        server has cancelled the run."""
        keep_going = self._spool.put("steps", steps_arrow(batch)) if len(batch) else not self._spool.cancelled
        if batch.evals and keep_going:  # after the rows: a suite times an evaluation by the step before it
            keep_going = self._spool.put("evals", json.dumps(batch.evals).encode())
        if batch.checkpoint is not None:
            partial = self.directory / "checkpoint.tmp"
            partial.write_bytes(batch.checkpoint[1])
            partial.replace(self.directory / "checkpoint.pt")
        return keep_going

    def checkpoint(self) -> bytes | None:
        """The SDK loop's last checkpoint of this run, when a killed process left one."""
        path = self.directory / "checkpoint.pt"
        return path.read_bytes() if path.exists() else None

    def finish(
        self,
        status: str = "succeeded",
        *,
        final_loss: float | None = None,
        wall_time_s: float | None = None,
        diverged_step: int | None = None,
        error: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Upload every row, then end the run on the server; the run as the server has it. ``final_loss``
        defaults to the whole-set loss of ``model``. After ``timeout_s`` without the server, the rows and the
        finish stay in the spool for ``sync``."""
        if self.finished is not None:
            return self.finished
        try:
            if self._started and self._recorder.next_step:
                self.flush()
        except RunCancelled:
            pass
        if final_loss is None and status == "succeeded" and self._model is not None:
            final_loss = self.problem.full_loss(self._model)
        if wall_time_s is None and self._started:
            wall_time_s = self._recorder.elapsed_s
        outcome = {
            "final_loss": final_loss if final_loss is None or math.isfinite(final_loss) else None,
            "wall_time_s": wall_time_s,
            "diverged_step": diverged_step,
            "error": error,
        }
        write_meta(self.directory, finish={"status": status, **outcome})
        left = self._spool.close(timeout_s)
        if left:
            self._exit_stack.close()  # this process is done with the folder: a sync may take it
            raise OptibenchError(None, f"{left} batches of run {self.id} wait in {self.directory}: `optibench sync`")
        self.finished = _finish_on_server(self.client, self.id, status, outcome, cancelled=self._spool.cancelled)
        self._exit_stack.close()
        remove(self.directory)
        return self.finished

    def __enter__(self) -> LocalRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _traceback: object) -> bool:
        if error is None:
            self.finish()
            return False
        if isinstance(error, RunCancelled):
            self.finish("cancelled")
            return True
        self.finish("failed", error=f"{kind.__name__ if kind else 'error'}: {error}")
        return False


def _send_item(client: Client, run_id: str, kind: str, body: bytes) -> dict[str, Any]:
    """Upload one spooled item: step rows (an Arrow stream) or evaluations (a JSON list)."""
    if kind == "steps":
        return client.upload_steps(run_id, body)
    if kind == "evals":
        return client.upload_evals(run_id, json.loads(body))
    raise ValueError(f"unknown spool item {kind!r}")


def _finish_on_server(
    client: Client, run_id: str, status: str, outcome: dict[str, Any], *, cancelled: bool
) -> dict[str, Any]:
    """POST the finish; a run the server has ended already (cancelled, or the finish sent before a crash)
    is read as it is."""
    if cancelled:
        return client.run(run_id)
    try:
        return client.finish_run(run_id, status, **outcome)
    except OptibenchError as exc:
        if exc.status == 409:
            return client.run(run_id)
        raise


def _run_directory(spool_dir: Path, client: Client, comparison_id: str, seed: int, label: str) -> Path:
    name = hashlib.sha256(json.dumps([client.url, comparison_id, seed, label]).encode()).hexdigest()[:20]
    return spool_dir / name


def start_run(
    client: Client,
    problem: LocalProblem,
    *,
    seed: int,
    label: str,
    optimizer: str | None = None,
    params: dict[str, Any] | None = None,
    spool_dir: str | os.PathLike | None = None,
    max_pending_bytes: int = 256 << 20,
    flush_every: int = 10_000,
    flush_interval_s: float = 1.0,
) -> LocalRun:
    """Start the external run ``label`` of the problem's comparison for ``seed``, or go on with the one a
    killed process left in the spool (its rows are sent first). ``optimizer`` and ``params`` are shown with
    it (default: the label, no params)."""
    if problem.comparison_id is None:
        raise ValueError("the problem has no comparison: build it with LocalProblem.from_comparison")
    if seed not in problem.seeds:
        raise ValueError(f"seed {seed} is not one of the comparison's seeds {problem.seeds}")
    directory = _run_directory(
        Path(spool_dir) if spool_dir is not None else default_spool_dir(), client, problem.comparison_id, seed, label
    )
    stack = ExitStack()
    stack.enter_context(locked(directory))
    try:
        meta = read_meta(directory)
        run = _resumable(client, directory, meta)
        if run is None:
            key = meta.get("key") if meta.get("run_id") is None and meta.get("key") else uuid.uuid4().hex
            write_meta(directory, url=client.url, comparison_id=problem.comparison_id, seed=seed, label=label, key=key)
            run = client.create_run(
                problem.comparison_id,
                seed=seed,
                label=label,
                optimizer=optimizer or label,
                params=params,
                device=problem.device.type,
                hardware=hardware.describe(problem.device),
                packages=client_packages(),
                key=key,
            )
            write_meta(directory, run_id=run["id"])
        return LocalRun(
            client,
            problem,
            run,
            directory,
            stack,
            max_pending_bytes=max_pending_bytes,
            flush_every=flush_every,
            flush_interval_s=flush_interval_s,
        )
    except BaseException:
        stack.close()
        raise


def _resumable(client: Client, directory: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The server run a killed process left in ``directory``, if it is still running; else the folder is
    emptied (a finished run's finish is sent first) and None."""
    if not meta.get("run_id"):
        return None
    run = client.run(meta["run_id"])
    if run["status"] == "running" and "finish" not in meta:
        return run
    sync_directory(client, directory)
    return None


def sync_directory(client: Client, directory: Path, timeout_s: float | None = None) -> dict[str, Any] | None:
    """Send what a run's spool folder holds (its rows, then its finish if it got that far) and empty it; the run
    as the server has it. A run still running is left running (a later start goes on with it). Rows the server
    no longer takes (the run is finished) are dropped."""
    meta = read_meta(directory)
    if not meta.get("run_id"):
        remove(directory)
        return None
    run_id = meta["run_id"]
    upload = dropping_refused(lambda kind, body: _send_item(client, run_id, kind, body))
    left = RunSpool(directory, upload, max_pending_bytes=1 << 62).close(timeout_s)
    if left:
        raise OptibenchError(None, f"{left} batches of run {run_id} still wait in {directory}")
    if "finish" in meta:
        finish = dict(meta["finish"])
        run = _finish_on_server(client, run_id, finish.pop("status"), finish, cancelled=False)
        remove(directory)
        return run
    run = client.run(run_id)
    if run["status"] != "running":
        remove(directory)
    return run


def sync(client: Client, spool_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Send everything killed or offline processes left in the spool for this server: the runs as the server
    has them. Folders a live process holds are left alone."""
    root = Path(spool_dir) if spool_dir is not None else default_spool_dir()
    return sync_folders(root, client.url, lambda directory, _meta: sync_directory(client, directory))


def train(
    client: Client,
    comparison_id: str,
    make_optimizer: OptimizerFactory,
    *,
    label: str,
    optimizer: str | None = None,
    params: dict[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    device: str | None = None,
    closure: bool = False,
    checkpoint_interval_s: float = 10.0,
    spool_dir: str | os.PathLike | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``make_optimizer``'s optimizer on the comparison's problem for each seed (default: all of the
    comparison's) with the engine's loop, as external runs labelled ``label``; the runs as the server has them
    once finished. ``closure``: the optimizer's ``step`` takes a closure (re-evaluates the loss). A run a killed
    process left goes on from its last checkpoint (at most ``checkpoint_interval_s`` old)."""
    problem = LocalProblem.from_comparison(client, comparison_id, device)
    component = _Closure if closure else Optimizer
    finished = []
    for seed in seeds if seeds is not None else problem.seeds:
        run = start_run(
            client, problem, seed=seed, label=label, optimizer=optimizer, params=params, spool_dir=spool_dir
        )
        try:
            outcome = train_with(
                problem.spec,
                seed,
                run.put,
                lambda module: [(component, make_optimizer(p for p in module.parameters() if p.requires_grad))],
                total_steps=problem.steps_total,
                device=problem.device,
                checkpoint_interval_s=checkpoint_interval_s,
                resume=run.checkpoint(),
            )
        except BaseException as exc:
            run.finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        stored = run.finish(
            outcome.status,
            final_loss=outcome.final_loss,
            wall_time_s=outcome.wall_time_s,
            diverged_step=outcome.diverged_step,
        )
        finished.append(stored)
        if on_run is not None:
            on_run(stored)
    return finished


class _Closure(Optimizer):
    """A client's optimizer whose step re-evaluates the loss through a closure."""

    needs_closure = True
