"""A run's uploads kept on disk until the server has them: what the SDK's runs send through.

Every batch is written to the run's spool folder before it is sent, and deleted once the server has answered
for it, so nothing a client recorded is lost to a crash, a killed process or a lost network: the next start
sends what is left (``optibench sync``). A background thread sends the batches in order; the server stores
each idempotently by (run, step), so a batch sent twice (its answer lost, or its process killed before the
delete) is stored once. Transient failures (no answer, 429, 5xx) are retried after the server's Retry-After
or a doubling pause; when more than ``max_pending_bytes`` wait, ``put`` blocks until the server catches up
(back-pressure), so a slow server slows the loop instead of filling the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from optibench.client import OptibenchError

try:
    import fcntl
except ImportError:  # Windows: a spool folder is not locked against a second process
    fcntl = None  # type: ignore[assignment]

#: answers after which the same request may succeed: none at all, a timeout, the rate limit, the server's errors
TRANSIENT = frozenset({None, 408, 429, 500, 502, 503, 504})
MAX_PAUSE_S = 30.0

#: sends one spooled item's body (by kind: "steps", ...) and returns the server's answer
Upload = Callable[[str, bytes], dict[str, Any]]


def default_spool_dir() -> Path:
    """$OPTIBENCH_SPOOL_DIR, else $XDG_CACHE_HOME/optibench/spool, else ~/.cache/optibench/spool."""
    if os.environ.get("OPTIBENCH_SPOOL_DIR"):
        return Path(os.environ["OPTIBENCH_SPOOL_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "optibench" / "spool"


def client_packages() -> dict[str, str]:
    """The versions a client reports with the runs it creates (torch where it is installed)."""
    import numpy
    import pyarrow

    import optibench

    packages = {
        "optibench": optibench.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch
    except ImportError:
        return packages
    return packages | {"torch": torch.__version__}


def read_meta(directory: Path) -> dict[str, Any]:
    """A run folder's ``run.json``: the server, the run and, once it ended here, its finish."""
    path = directory / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_meta(directory: Path, **values: Any) -> dict[str, Any]:
    """Add ``values`` to the folder's ``run.json``, replaced whole (a crash leaves the old one or the new)."""
    meta = read_meta(directory) | values
    partial = directory / "run.json.tmp"
    partial.write_text(json.dumps(meta))
    partial.replace(directory / "run.json")
    return meta


def remove(directory: Path) -> None:
    """A run folder the server has everything of."""
    for path in directory.iterdir():
        path.unlink(missing_ok=True)
    directory.rmdir()


def dropping_refused(upload: Upload) -> Upload:
    """``upload`` for what an earlier process left: a run the server has finished takes no more (409), and its
    leftover item is dropped rather than retried."""

    def send(kind: str, body: bytes) -> dict[str, Any]:
        try:
            return upload(kind, body)
        except OptibenchError as exc:
            if exc.status == 409:
                return {"stored": 0, "cancelled": False}
            raise

    return send


def sync_folders(
    root: Path, url: str, sync_one: Callable[[Path, dict[str, Any]], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """``sync_one(folder, its run.json)`` for every run folder under ``root`` of the server at ``url``, each under
    its lock: what it returns (the runs as the server has them). Folders a live process holds are left alone."""
    runs = []
    for directory in sorted(root.iterdir()) if root.exists() else []:
        if not directory.is_dir() or read_meta(directory).get("url", url) != url:
            continue
        try:
            with locked(directory):
                run = sync_one(directory, read_meta(directory))
        except SpoolLocked:
            continue
        if run is not None:
            runs.append(run)
    return runs


class SpoolLocked(Exception):
    """Another live process holds this run's spool."""


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[IO[bytes]]:
    """Hold the folder's lock for as long as this process uses it; SpoolLocked when another live process
    holds it. The lock goes with the process, however it ends."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("ab") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise SpoolLocked(f"{directory} is in use by another process") from exc
        yield handle


class RunSpool:
    """One run's spool folder and the thread that empties it. Items are files ``<sequence>.<kind>``, sent in
    sequence order; the folder's leftovers from an earlier process are sent first."""

    def __init__(
        self,
        directory: Path,
        upload: Upload,
        *,
        max_pending_bytes: int = 256 << 20,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        heartbeat_s: float = 15.0,
    ) -> None:
        self.directory = directory
        self.max_pending_bytes = max_pending_bytes
        self._upload = upload
        self._heartbeat, self.heartbeat_s = heartbeat, heartbeat_s
        self._changed = threading.Condition()
        self._queue: deque[tuple[Path, int]] = deque()
        self._pending_bytes = 0
        self._closing = self._gave_up = False
        self.cancelled = False
        self.error: Exception | None = None
        self.sent = self.stored = 0  # batches answered, and the rows the server took as new
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
        items = sorted(p for p in directory.iterdir() if p.name.split(".")[0].isdigit())
        for path in items:
            self._queue.append((path, path.stat().st_size))
            self._pending_bytes += path.stat().st_size
        self._sequence = int(items[-1].name.split(".")[0]) + 1 if items else 0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"optibench-upload-{directory.name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Items on disk that the server has not answered for yet."""
        with self._changed:
            return len(self._queue)

    def put(self, kind: str, body: bytes) -> bool:
        """Write an item to disk and queue it; False once the server has said the run is cancelled (nothing
        more is stored then). Blocks while more than ``max_pending_bytes`` wait. Raises the upload's error
        if the server refused an item for good."""
        self._raise_error()
        if self.cancelled:
            return False
        with self._changed:
            path = self.directory / f"{self._sequence:012d}.{kind}"
            self._sequence += 1
        partial = path.with_suffix(".tmp")
        partial.write_bytes(body)
        partial.replace(path)  # whole or absent: a crash mid-write leaves only a .tmp, removed at the next start
        with self._changed:
            self._queue.append((path, len(body)))
            self._pending_bytes += len(body)
            self._changed.notify_all()
            while self._pending_bytes > self.max_pending_bytes and self.error is None and not self.cancelled:
                self._changed.wait(1.0)
        self._raise_error()
        return not self.cancelled

    def close(self, timeout_s: float | None = None) -> int:
        """Send what is queued and stop the thread; after ``timeout_s`` the rest stays on disk for the next
        start. Returns how many items are left. Raises the upload's error if an item was refused for good."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            while self._queue and self.error is None and not self.cancelled:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._gave_up = True
                    self._wake.set()
                    self._changed.notify_all()
                    break
                self._changed.wait(0.2 if left is None else min(left, 0.2))
        self._thread.join()
        self._raise_error()
        return self.pending

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        while True:
            with self._changed:
                idle = False
                while not self._queue and not self._closing and not idle:
                    # idle for a fraction of the lease (a long step, an evaluation): keep the run alive
                    idle = not self._changed.wait(self.heartbeat_s if self._heartbeat else None)
                if not idle and (not self._queue or self._gave_up or self.cancelled):
                    return
                if not idle:
                    path, size = self._queue[0]
            if idle:
                self._beat()
                continue
            try:
                answer = self._send(path)
            except Exception as exc:  # noqa: BLE001 - refused for good: the loop learns it at its next put
                with self._changed:
                    self.error = exc
                    self._changed.notify_all()
                return
            if answer is None:  # gave up on a transient failure at close: the item stays on disk
                return
            path.unlink(missing_ok=True)
            with self._changed:
                self._queue.popleft()
                self._pending_bytes -= size
                self.sent += 1
                self.stored += int(answer.get("stored", 0))
                if answer.get("cancelled"):  # the server took nothing of this batch and will take nothing more
                    self.cancelled = True
                    for rest, _ in self._queue:
                        rest.unlink(missing_ok=True)
                    self._queue.clear()
                    self._pending_bytes = 0
                self._changed.notify_all()

    def _beat(self) -> None:
        """Between uploads (a long step, an evaluation), the run's lease is renewed; a failed beat waits for
        the next one, since the next upload renews it too."""
        assert self._heartbeat is not None
        try:
            answer = self._heartbeat()
        except OptibenchError:
            return
        if answer.get("cancelled"):
            with self._changed:
                self.cancelled = True
                self._changed.notify_all()

    def _send(self, path: Path) -> dict[str, Any] | None:
        kind, body = path.suffix.lstrip("."), path.read_bytes()
        pause_s = 0.5
        while True:
            try:
                return self._upload(kind, body)
            except OptibenchError as exc:
                if exc.status not in TRANSIENT:
                    raise
                wait_s = max(exc.retry_after_s, 0.05) if exc.retry_after_s is not None else pause_s
            if self._wake.wait(min(wait_s, MAX_PAUSE_S)) or self._gave_up:
                return None
            pause_s = min(2 * pause_s, MAX_PAUSE_S)
