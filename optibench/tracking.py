"""Free-form tracking (docs/tracking.md): any model, any loop, any scalar metrics.

    with track(client, "mnist", config={"lr": 0.1, "width": 64}, seed=0) as run:
        for batch in loader:
            loss = ...
            run.log(loss=loss, lr=scheduler.get_last_lr()[0])
        run.log(val_accuracy=accuracy)

``run.log`` only appends to column lists: a tensor stays a tensor (a CUDA loss costs no sync per step) until
the flush, every second or 10,000 steps, turns each device's tensors into floats in one go. A flush's rows go
into a spool on disk (``optibench.spool``) that a background thread uploads as one Arrow IPC stream; the
server stores them idempotently by (run, metric, step), so a retried batch is stored once. Leaving the
``with`` block finishes the run: succeeded, or failed with the exception. Runs of one config are grouped in
the project's summary (``client.project``), never paired: they share no initial weights or batch order.

A process killed mid-run leaves its unsent batches in the spool; ``sync`` sends them. Tracked runs keep their
own spool folder ($OPTIBENCH_SPOOL_DIR's sibling ``tracking``): not the SDK's, whose ``sdk.sync`` would not
know their items.
"""

from __future__ import annotations

import io
import os
import platform
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa

from optibench.client import Client, OptibenchError
from optibench.spool import (
    RunSpool,
    client_packages,
    default_spool_dir,
    dropping_refused,
    locked,
    remove,
    sync_folders,
    write_meta,
)

FLUSH_EVERY = 10_000
FLUSH_INTERVAL_S = 1.0


def default_tracking_dir() -> Path:
    """Where tracked runs spool: beside the SDK's spool folder, in ``tracking``."""
    return default_spool_dir().with_name("tracking")


def _hardware() -> dict[str, Any]:
    return {"machine": platform.machine(), "processor": platform.processor() or None, "system": platform.system()}


class TrackedRun:
    """A tracked run on the server, logged to from this process. Use ``track`` to make one."""

    def __init__(
        self,
        client: Client,
        run: dict[str, Any],
        directory: Path,
        exit_stack: ExitStack,
        *,
        flush_every: int = FLUSH_EVERY,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_pending_bytes: int = 256 << 20,
    ) -> None:
        self.client, self.directory = client, directory
        self.id: str = run["id"]
        self.name: str = run["name"]
        self.config: dict[str, Any] = run["config"]
        self.flush_every, self.flush_interval_s = flush_every, flush_interval_s
        self._exit_stack = exit_stack
        self._spool = RunSpool(directory, self._upload, max_pending_bytes=max_pending_bytes, heartbeat=self._heartbeat)
        self._steps: list[int] = []
        self._columns: dict[str, list[Any]] = {}
        self._last_step = -1
        self._flushed_at = time.monotonic()
        self.finished: dict[str, Any] | None = None

    def _upload(self, kind: str, body: bytes) -> dict[str, Any]:
        if kind != "metrics":
            raise ValueError(f"unknown spool item {kind!r}")
        return self.client.upload_metrics(self.id, body)

    def _heartbeat(self) -> dict[str, Any]:
        return self.client.tracked_heartbeat(self.id)

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Record scalar metrics (floats, ints, 0-d tensors or numpy scalars) at ``step``: by default the step
        after the previous one, from 0. Logging again at the current step adds to that step's row; a step
        before it is a ValueError. Names are 1-100 characters of A-Z a-z 0-9 _ . / -."""
        if step is None:
            step = self._last_step + 1
        elif step < self._last_step:
            raise ValueError(f"step {step} comes before the last logged step {self._last_step}")
        if step != self._last_step or not self._steps:
            self._steps.append(step)
            self._last_step = step
            for column in self._columns.values():
                column.append(None)
        rows = len(self._steps)
        for name, value in metrics.items():
            if name not in self._columns:
                self._columns[name] = [None] * rows
            column = self._columns[name]
            if isinstance(value, float):
                column[-1] = value
            elif _is_tensor(value):  # a CPU value is read now (no device to wait for); a GPU one at the flush
                column[-1] = value.item() if value.device.type == "cpu" else value
            else:
                column[-1] = float(value)
        if rows >= self.flush_every or time.monotonic() - self._flushed_at >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Hand the rows logged so far to the uploader (tensors turned to floats in one go per device)."""
        self._flushed_at = time.monotonic()
        if not self._steps:
            return
        steps, columns = self._steps, self._columns
        self._steps, self._columns = [], {name: [] for name in columns}
        _tensors_to_floats(columns)
        table = pa.table(
            {
                "step": pa.array(steps, pa.int64()),
                **{name: pa.array(values, pa.float64()) for name, values in columns.items()},
            }
        )
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self._spool.put("metrics", sink.getvalue())

    def finish(
        self, status: str = "succeeded", error: str | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Upload every logged value, then end the run on the server; the run as the server has it. After
        ``timeout_s`` without the server, the rest and the finish stay in the spool for ``sync``."""
        if self.finished is not None:
            return self.finished
        try:
            self.flush()
        finally:
            write_meta(self.directory, finish={"status": status, "error": error})
            left = self._spool.close(timeout_s)
        self._exit_stack.close()
        if left:
            raise OptibenchError(None, f"{left} batches of tracked run {self.id} wait in {self.directory}: sync them")
        self.finished = _finish_on_server(self.client, self.id, status, error)
        remove(self.directory)
        return self.finished

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _traceback: object) -> None:
        if error is None:
            self.finish()
        else:
            self.finish("failed", error=f"{kind.__name__ if kind else 'error'}: {error}"[:2000])


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _tensors_to_floats(columns: dict[str, list[Any]]) -> None:
    """Replace every tensor in the columns by its float: the tensors of one device are stacked and copied to
    the host once (one sync per device and flush, none per step)."""
    by_device: dict[Any, list[tuple[list[Any], int, Any]]] = {}
    for values in columns.values():
        for index, value in enumerate(values):
            if value is not None and not isinstance(value, float):
                by_device.setdefault(value.device, []).append((values, index, value))
    if not by_device:
        return
    import torch

    with torch.no_grad():
        for entries in by_device.values():
            tensors = [value for _, _, value in entries]
            try:
                stacked = torch.stack(tensors)
            except RuntimeError:  # some are shaped (1,) or (1, 1): each made 0-d costs an op, so only then
                stacked = torch.stack([tensor.reshape(()) for tensor in tensors])
            for (values, index, _), number in zip(entries, stacked.cpu().double().tolist(), strict=True):
                values[index] = number


def _finish_on_server(client: Client, run_id: str, status: str, error: str | None) -> dict[str, Any]:
    """POST the finish; a run the server has ended already (the watchdog, a finish sent before a crash) is
    read as it is."""
    try:
        return client.finish_tracked_run(run_id, status, error)
    except OptibenchError as exc:
        if exc.status == 409:
            return client.tracked_run(run_id)
        raise


def track(
    client: Client,
    project: str,
    config: dict[str, Any],
    name: str | None = None,
    seed: int | None = None,
    spool_dir: str | os.PathLike | None = None,
    *,
    flush_every: int = FLUSH_EVERY,
    flush_interval_s: float = FLUSH_INTERVAL_S,
) -> TrackedRun:
    """Start a tracked run of ``project`` with ``config`` (any JSON object; runs with the same config are one
    group), ``name`` labelling the config (default: ``cfg-`` and its hash's start) and the client's ``seed``.
    A context manager: leaving it finishes the run. ``spool_dir``: where unsent batches wait
    (default ``default_tracking_dir()``)."""
    key = os.urandom(16).hex()
    run = client.create_tracked_run(
        project, config, name=name, seed=seed, hardware=_hardware(), packages=client_packages(), key=key
    )
    root = Path(spool_dir) if spool_dir is not None else default_tracking_dir()
    directory = root / run["id"]
    stack = ExitStack()
    stack.enter_context(locked(directory))
    try:
        write_meta(directory, url=client.url, run_id=run["id"])
        return TrackedRun(client, run, directory, stack, flush_every=flush_every, flush_interval_s=flush_interval_s)
    except BaseException:
        stack.close()
        raise


def sync(client: Client, spool_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Send what killed or offline processes left in the tracking spool for this server (their batches, then
    their finish if they got that far); the runs as the server has them. Folders a live process holds are
    left alone; batches of a run the server has finished are dropped."""
    root = Path(spool_dir) if spool_dir is not None else default_tracking_dir()

    def sync_one(directory: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
        run_id = meta.get("run_id")
        if not run_id:
            return None
        upload = dropping_refused(lambda kind, body: client.upload_metrics(run_id, body))
        RunSpool(directory, upload, max_pending_bytes=1 << 62).close()
        if "finish" in meta:
            run = _finish_on_server(client, run_id, meta["finish"]["status"], meta["finish"].get("error"))
        else:
            run = client.tracked_run(run_id)
            if run["status"] == "running":
                return run
        remove(directory)
        return run

    return sync_folders(root, client.url, sync_one)


__all__ = ["TrackedRun", "default_tracking_dir", "sync", "track"]
