"""Per-step metrics that cost the training loop nothing it would notice.

On a GPU, losses stay on the device until a flush, when they cross to the host in one transfer; on the
CPU, where there is no device to wait for, they go straight into host arrays. Step times come from
``perf_counter`` on the CPU and from CUDA events on a GPU, read at flush time, so recording never
synchronises the device per step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.columns import EXTRAS


@dataclass
class StepBatch:
    """A flush worth of step rows, as host arrays."""

    step: np.ndarray  # int64
    epoch: np.ndarray | None  # int64; None for function problems
    loss: np.ndarray  # float64, the loss of the batch before the update
    time_s: np.ndarray  # seconds since training began, at the end of the step
    step_time_ms: np.ndarray
    lr: np.ndarray | None  # the rate each step used; None: the optimizer has none (A2Grad), NULL in every row
    x: np.ndarray | None  # (rows, dim): function problems, the point before the update
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-step (engine.columns.EXTRAS)
    evals: list[dict] = field(default_factory=list)  # whole-set evaluations made since the last flush
    checkpoint: tuple[int, bytes] | None = None  # (updates applied, state) taken right after these rows
    best_loss: float | None = None  # the run's lowest finite loss so far, these rows included (the loop's)

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def empty(cls, evals: list[dict]) -> StepBatch:
        none = np.zeros(0)
        return cls(
            step=np.zeros(0, dtype=np.int64),
            epoch=None,
            loss=none,
            time_s=none,
            step_time_ms=none,
            lr=none,
            x=None,
            evals=evals,
        )

    def first_non_finite(self) -> int | None:
        bad = np.flatnonzero(~np.isfinite(self.loss))
        return int(bad[0]) if len(bad) else None

    def head(self, rows: int) -> StepBatch:
        """The first ``rows`` steps, and the evaluations made up to the end of the last of them."""
        cut = slice(0, rows)
        updates = int(self.step[rows - 1]) + 1 if rows else 0
        return StepBatch(
            step=self.step[cut],
            epoch=None if self.epoch is None else self.epoch[cut],
            loss=self.loss[cut],
            time_s=self.time_s[cut],
            step_time_ms=self.step_time_ms[cut],
            lr=None if self.lr is None else self.lr[cut],
            x=None if self.x is None else self.x[cut],
            extras={k: v[cut] for k, v in self.extras.items()},
            evals=[e for e in self.evals if e["step"] <= updates],
        )

    def columns(self) -> dict[str, np.ndarray | None]:
        """The arrays per column, as the database layer bulk-inserts them (``db.bulk.ingest_steps``); None: all NULL."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.loss,
            "time_s": self.time_s,
            "step_time_ms": self.step_time_ms,
            "lr": self.lr,
            "x": self.x,
            **{name: self.extras.get(name) for name in EXTRAS},
        }

    def rows(self) -> list[dict]:
        """One dict of Python values per step."""
        absent = [None] * len(self)
        columns = {name: absent if values is None else values.tolist() for name, values in self.columns().items()}
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


#: rows per preallocated block of a column
BLOCK_ROWS = 1024


class _DeviceColumn:
    """One tensor value per step, copied into preallocated blocks on its device and moved to the host in
    one transfer per drain. Keeping each step's tensor alive instead costs a small step about 3%: it
    takes fresh memory every step."""

    def __init__(self) -> None:
        self._blocks: list = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def append(self, value: torch.Tensor) -> None:
        row = self._rows % BLOCK_ROWS
        if row == 0:
            self._blocks.append(value.new_empty((BLOCK_ROWS, *value.shape)))
        self._blocks[-1][row] = value.detach()
        self._rows += 1

    def to_host(self) -> np.ndarray:
        rows = torch.cat(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        return rows[: self._rows].to("cpu", torch.float64).numpy()


class _HostColumn:
    """On the CPU the values lie in host memory already. A single run's (a loss, a point) is read as
    Python floats (``tolist``), for a sixth of what a tensor write costs; an ensemble's, as a numpy
    copy, since as floats it would make Python objects by the hundred every step. The drain makes
    them one array."""

    #: values of at most this many elements are read as floats
    SMALL = 16

    def __init__(self) -> None:
        self._values: list = []

    def __len__(self) -> int:
        return len(self._values)

    def append(self, value: torch.Tensor) -> None:
        self._values.append(value.tolist() if value.numel() <= self.SMALL else value.detach().numpy().copy())

    def to_host(self) -> np.ndarray:
        return np.array(self._values, dtype=np.float64)


class StepRecorder:
    def __init__(
        self,
        device: torch.device,
        flush_every: int,
        flush_interval_s: float,
        first_step: int = 0,
        time_offset_s: float = 0.0,
    ) -> None:
        self.cuda = device.type == "cuda"
        self._column = _HostColumn if device.type == "cpu" else _DeviceColumn
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.next_step = first_step
        self.time_offset_s = time_offset_s
        self._reset()

    def _reset(self) -> None:
        self._epochs: list[int | None] = []
        self._losses = self._column()
        self._lrs: list[float | np.ndarray | None] = []  # an ensemble's: one rate per member; None: no rate
        self._points = self._column()
        self._extras: dict[str, _DeviceColumn | _HostColumn] = {}
        self._evals: list[tuple[int, int | None, dict[str, torch.Tensor]]] = []
        self._marks: list = []  # perf_counter floats, or CUDA events
        self._paused_before: list[int] = []  # per mark: how many of the pauses below came before it
        self._pauses: list[tuple] = []  # (start, end) of each evaluation, perf_counter floats or CUDA events

    def start(self) -> None:
        self._paused_s = 0.0  # evaluation time drained so far, left out of the training clock
        self._t0 = time.perf_counter()
        self._last_flush = self._t0
        self._prev_end_s = self.time_offset_s
        if self.cuda:
            self._t0_event = torch.cuda.Event(enable_timing=True)
            self._t0_event.record()

    @property
    def elapsed_s(self) -> float:
        """Training time up to the end of the last drained step."""
        return self._prev_end_s

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Around an evaluation: its time is not training time (AlgoPerf's rule), so time_s and step times
        leave it out. On a GPU the pause is timed by events, so this never synchronises the device."""
        self._pauses.append((self._mark(), None))
        try:
            yield
        finally:
            self._pauses[-1] = (self._pauses[-1][0], self._mark())

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def record_eval(self, step: int, epoch: int | None, metrics: dict[str, torch.Tensor]) -> None:
        """Whole-set metrics after ``step`` updates, kept on the device until the next drain."""
        self._evals.append((step, epoch, metrics))

    def record_point(self, point: torch.Tensor) -> None:
        """Function problems: the point of the step about to run, before its update changes it."""
        self._points.append(point)

    def record(
        self,
        loss: torch.Tensor,
        epoch: int | None,
        lr: float | np.ndarray | None,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> bool:
        """Note one finished step (``lr``: the rate it used, None where the optimizer has none); True when a flush
        is due."""
        now = time.perf_counter()
        self._marks.append(self._mark() if self.cuda else now)
        self._paused_before.append(len(self._pauses))
        self.next_step += 1
        self._epochs.append(epoch)
        self._losses.append(loss)
        self._lrs.append(lr)
        if extras:
            for name, value in extras.items():
                self._extras.setdefault(name, self._column()).append(value)
        return len(self._marks) >= self.flush_every or now - self._last_flush >= self.flush_interval_s

    def drain(self) -> StepBatch | None:
        """Everything recorded since the last drain, moved to the host in one transfer."""
        if not self._marks and not self._evals:
            return None
        evals = [
            {
                "step": step,
                "epoch": epoch,
                **dict(zip(metrics, torch.stack(list(metrics.values())).double().cpu().tolist())),
            }
            for step, epoch, metrics in self._evals
        ]
        if not self._marks:
            self._evals = []
            return StepBatch.empty(evals)
        if self.cuda:
            self._marks[-1].synchronize()
            ends = np.array([self._t0_event.elapsed_time(e) / 1000.0 for e in self._marks])
            pauses = [start.elapsed_time(end) / 1000.0 for start, end in self._pauses if end is not None]
        else:
            ends = np.array(self._marks) - self._t0
            pauses = [end - start for start, end in self._pauses if end is not None]
        paused = self._paused_s + np.concatenate(([0.0], np.cumsum(pauses)))
        ends += self.time_offset_s - paused[np.minimum(self._paused_before, len(pauses))]
        self._paused_s = float(paused[-1])
        starts = np.concatenate(([self._prev_end_s], ends[:-1]))
        batch = StepBatch(
            step=np.arange(self.next_step - len(self._marks), self.next_step, dtype=np.int64),
            epoch=None if self._epochs[0] is None else np.array(self._epochs, dtype=np.int64),
            loss=self._losses.to_host(),
            time_s=ends,
            step_time_ms=(ends - starts) * 1000.0,
            lr=None if self._lrs[0] is None else np.array(self._lrs, dtype=np.float64),
            x=self._points.to_host() if self._points else None,
            extras={name: column.to_host() for name, column in self._extras.items()},
            evals=evals,
        )
        self._prev_end_s = float(ends[-1])
        self._last_flush = time.perf_counter()
        self._reset()
        return batch
