"""A small Python client of the optibench HTTP API; the `optibench` CLI is built on it.

Every method returns the API's JSON as plain dicts and lists (shapes: docs/teams.md, docs/curves.md,
docs/statistics.md), with NaN and infinities as the strings "NaN", "Infinity" and "-Infinity";
``as_float`` turns such a value into a float. Every failure is an ``OptibenchError``.

    with Client("http://127.0.0.1:8000", api_key="ob_...") as client:
        comparison = client.submit("examples/adam_vs_sgd_quadratic.json", wait=True)
        for row in client.summary(comparison["id"])["rows"]:
            print(row["rank"], row["label"], as_float(row["final_loss"]["mean"]))
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from optibench.status import TERMINAL_COMPARISON

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

DEFAULT_URL = "http://127.0.0.1:8000"
#: a comparison in one of these will not change any more
FINISHED = TERMINAL_COMPARISON
#: the longest Retry-After the client honours; a longer one is waited this long
MAX_RETRY_WAIT_S = 30.0


class OptibenchError(Exception):
    """A request the API refused (``status`` is its HTTP status), or one that never got an answer
    (``status`` None). ``detail`` is the API's ``detail``: a message, or for a 422 the list of
    errors, each with its ``loc`` and ``msg``; ``fields`` has those as (path, message) pairs."""

    def __init__(self, status: int | None, detail: Any, retry_after_s: float | None = None) -> None:
        self.status, self.detail, self.retry_after_s = status, detail, retry_after_s
        super().__init__(str(self))

    @property
    def fields(self) -> list[tuple[str, str]]:
        if not isinstance(self.detail, list):
            return []
        return [(_field_path(error.get("loc", [])), error.get("msg", "")) for error in self.detail]

    def __str__(self) -> str:
        if self.fields:
            message = "; ".join(f"{path}: {msg}" for path, msg in self.fields)
        else:
            message = str(self.detail)
        return message if self.status is None else f"HTTP {self.status}: {message}"


def _field_path(loc: list) -> str:
    """["body", "optimizers", 0, "params", "lr"] -> "optimizers.0.params.lr": the body is the
    spec the user wrote, so its fields go without the prefix; query and header ones keep theirs."""
    parts = loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc
    return ".".join(str(part) for part in parts)


def as_float(value: float | str | None) -> float | None:
    """A number of the API as a float: "NaN", "Infinity" and "-Infinity" become float('nan'), inf, -inf."""
    return None if value is None else float(value)


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text or response.reason_phrase


class Client:
    """The API at ``url`` (default: $OPTIBENCH_URL, else http://127.0.0.1:8000), as the team of
    ``api_key`` (default: $OPTIBENCH_API_KEY; none is needed with the server's auth off).

    Requests that get no answer (refused, broken or timed-out connections), or are answered 503
    (the database is briefly down), are sent again up to ``retries`` times, after the server's
    Retry-After or a doubling pause. That is safe for every request here: reads and cancels are
    idempotent, and each submit carries an Idempotency-Key, so a submit whose answer was lost
    returns the comparison it created."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("OPTIBENCH_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("OPTIBENCH_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- comparisons ---------------------------------------------------------------------------

    def submit(
        self,
        spec: dict | str | os.PathLike,
        idempotency_key: str | None = None,
        wait: bool = False,
        on_progress: Callable[[dict], None] | None = None,
    ) -> dict:
        """Submit a comparison spec (a dict, or the path of a JSON file); the accepted comparison,
        or with ``wait`` the finished one (see ``wait``). Without ``idempotency_key`` a fresh one is
        sent, so retries of this call's requests never submit twice."""
        if not isinstance(spec, dict):
            spec = json.loads(Path(spec).read_text())
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        comparison = self._json("POST", "/api/v1/comparisons", json=spec, headers=headers)
        return self.wait(comparison["id"], on_progress) if wait else comparison

    def comparison(self, comparison_id: str) -> dict:
        """The comparison with its spec, progress and every run."""
        return self._json("GET", f"/api/v1/comparisons/{comparison_id}")

    def comparisons(
        self, limit: int | None = None, cursor: str | None = None, page_size: int = 100, **filters: str
    ) -> Iterator[dict]:
        """The team's history, newest first, page after page from ``cursor``: at most ``limit``
        comparisons (all without). ``filters`` are the list's query parameters (status, tag, ...)."""
        count = 0
        while limit is None or count < limit:
            size = page_size if limit is None else min(page_size, limit - count)
            page = self._json("GET", "/api/v1/comparisons", params=_present(limit=size, cursor=cursor, **filters))
            yield from page["items"][:size]
            count += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def summary(
        self, comparison_id: str, phase: Literal["chosen", "all"] | None = None, baseline: str | None = None
    ) -> dict:
        """The leaderboard and the paired tests against the baseline (docs/statistics.md)."""
        return self._json(
            "GET", f"/api/v1/comparisons/{comparison_id}/summary", params=_present(phase=phase, baseline=baseline)
        )

    def curves(
        self,
        comparison_id: str,
        metric: str = "loss",
        x: str = "step",
        points: int = 1000,
        band: str = "ci",
        scale: str = "linear",
        group_by: str = "setting",
    ) -> dict:
        """Each optimizer setting's curve aggregated over seeds, or each group of ``group_by``; ``scale="log"``
        aggregates the logs (docs/curves.md)."""
        return self._json(
            "GET",
            f"/api/v1/comparisons/{comparison_id}/curves",
            params={"metric": metric, "x": x, "points": points, "band": band, "scale": scale, "group_by": group_by},
        )

    def run_curve(
        self,
        run_id: str,
        metric: str = "loss",
        x: str = "step",
        points: int = 1000,
        start: float | None = None,
        end: float | None = None,
    ) -> dict:
        """One run's metric downsampled into ``points`` buckets of x (docs/curves.md)."""
        return self._json(
            "GET",
            f"/api/v1/runs/{run_id}/curve",
            params=_present(metric=metric, x=x, points=points, start=start, end=end),
        )

    def steps(self, run_id: str) -> pd.DataFrame:
        """Every step row of a run, in step order, read from the Arrow stream (docs/ingest.md, "Reading back").
        Columns: the run's (comparison_id, run_id, label, optimizer, params, seed, phase, status, as the
        comparison export has them; the text ones categorical), then the step columns (int64 step, float64
        loss, time_s, step_time_ms, lr, grad_norm, update_norm; epoch int64, float64 where some row has none;
        NaN where a value was not recorded) and, for a function problem, the point before the update as x0,
        x1, ... The evaluations are ``evals``."""
        from optibench import frames

        run = self.run(run_id)
        return frames.run_frame(self._arrow_stream(f"/api/v1/runs/{run_id}/steps"), run)

    def evals(self, run_id: str) -> pd.DataFrame:
        """A run's whole-set evaluations (step, epoch, train_loss, train_accuracy, val_loss, val_accuracy;
        ``step`` counts the updates applied, 0 being the initial weights, so an evaluation at step s saw the
        weights that ``steps``' row s trained on), with the run's columns in front as ``steps`` has them."""
        from optibench import frames

        run = self.run(run_id)
        evals = self._json("GET", f"/api/v1/runs/{run_id}/evals")["evals"]
        return frames.run_frame(frames.evals_table(evals), run)

    def comparison_steps(self, comparison_id: str) -> pd.DataFrame:
        """Every step row of every run of a comparison, in run then step order, from the export's Arrow stream:
        the run columns (categorical text) and the step columns as ``steps`` has them."""
        from optibench import frames

        return frames.comparison_frame(self._arrow_stream(f"/api/v1/comparisons/{comparison_id}/export"))

    def _arrow_stream(self, path: str) -> pa.Table:
        """A ``format=arrow`` read, decoded as it streams in."""
        import pyarrow as pa

        from optibench import frames

        response = self._send(self._http.build_request("GET", path, params={"format": "arrow"}), stream=True)
        try:
            return frames.read_stream(response)
        except (pa.ArrowInvalid, httpx.HTTPError) as exc:
            raise OptibenchError(None, f"reading {path} failed: {exc}") from exc
        finally:
            response.close()

    def cancel(self, comparison_id: str) -> dict:
        """Cancel every unfinished run; the comparison as it is after that."""
        return self._json("POST", f"/api/v1/comparisons/{comparison_id}/cancel")

    def export(self, comparison_id: str, format: Literal["csv", "parquet"], path: str | os.PathLike) -> Path:
        """Every step row of every run into ``path``, streamed to disk in pieces. The file appears
        only once complete: an interrupted download leaves nothing behind."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        request = self._http.build_request(
            "GET", f"/api/v1/comparisons/{comparison_id}/export", params={"format": format}
        )
        response = self._send(request, stream=True)
        try:
            with partial.open("wb") as file:
                for piece in response.iter_bytes():
                    file.write(piece)
            partial.replace(path)
        except (OSError, httpx.HTTPError) as exc:
            partial.unlink(missing_ok=True)
            raise OptibenchError(None, f"export of {comparison_id} to {path} failed: {exc}") from exc
        finally:
            response.close()
        return path

    def wait(
        self,
        comparison_id: str,
        on_progress: Callable[[dict], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> dict:
        """Poll until the comparison is succeeded, failed or cancelled, and return it. Each poll's
        comparison goes to ``on_progress`` first. Raises TimeoutError after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            comparison = self.comparison(comparison_id)
            if on_progress is not None:
                on_progress(comparison)
            if comparison["status"] in FINISHED:
                return comparison
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"comparison {comparison_id} is still {comparison['status']} after {timeout_s}s")
            time.sleep(poll_s)

    # --- external runs (docs/ingest.md; the SDK, optibench.sdk, trains them) ----------------------

    def run(self, run_id: str) -> dict:
        """One run: its status, progress, losses and hyperparameters."""
        return self._json("GET", f"/api/v1/runs/{run_id}")

    def create_run(
        self,
        comparison_id: str,
        *,
        seed: int,
        label: str,
        optimizer: str,
        params: dict[str, Any] | None = None,
        device: str | None = None,
        hardware: dict[str, Any] | None = None,
        packages: dict[str, str] | None = None,
        key: str | None = None,
    ) -> dict:
        """Start an external run of the comparison, paired by ``seed`` with its catalogue runs. ``key`` makes
        the call idempotent: a retry with the same key returns the run the first call created."""
        body = _present(
            seed=seed,
            label=label,
            optimizer={"name": optimizer, "params": params or {}},
            device=device,
            hardware=hardware,
            packages=packages,
            key=key or uuid.uuid4().hex,
        )
        return self._json("POST", f"/api/v1/comparisons/{comparison_id}/runs", json=body)

    def upload_steps(self, run_id: str, arrow_stream: bytes) -> dict:
        """Store a batch of step rows (an Arrow IPC stream), idempotent by (run, step); the answer says how
        many rows were new and whether the run was cancelled."""
        headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
        return self._json("POST", f"/api/v1/runs/{run_id}/steps", content=arrow_stream, headers=headers)

    def upload_evals(self, run_id: str, evals: list[dict]) -> dict:
        """Store an external run's whole-set evaluations ({"step", "epoch", "train_loss", "val_loss", ...} each,
        steps increasing), idempotent by (run, step): what suites score."""
        body = json.dumps({"evals": evals}).encode()  # NaN and infinities as JSON's NaN / Infinity
        headers = {"Content-Type": "application/json"}
        return self._json("POST", f"/api/v1/runs/{run_id}/evals", content=body, headers=headers)

    def heartbeat(self, run_id: str) -> dict:
        """Renew an external run's lease; ``cancelled`` in the answer says it should stop."""
        return self._json("POST", f"/api/v1/runs/{run_id}/heartbeat")

    def finish_run(self, run_id: str, status: str, **outcome: Any) -> dict:
        """End an external run: ``status`` and any of final_loss, wall_time_s, diverged_step, error."""
        return self._json("POST", f"/api/v1/runs/{run_id}/finish", json={"status": status, **_present(**outcome)})

    # --- free-form tracking (docs/tracking.md; optibench.tracking logs to them) -----------------------

    def create_tracked_run(
        self,
        project: str,
        config: dict[str, Any],
        *,
        name: str | None = None,
        seed: int | None = None,
        hardware: dict[str, Any] | None = None,
        packages: dict[str, str] | None = None,
        key: str | None = None,
    ) -> dict:
        """Start a tracked run of ``project`` with ``config`` (any JSON object, at most 64 KiB); ``name`` labels
        the config (default: ``cfg-`` and its hash's start). A retry with the same ``key`` returns the same run."""
        body = _present(
            project=project,
            config=config,
            name=name,
            seed=seed,
            hardware=hardware,
            packages=packages,
            key=key or uuid.uuid4().hex,
        )
        return self._json("POST", "/api/v1/tracking/runs", json=body)

    def upload_metrics(self, run_id: str, arrow_stream: bytes) -> dict:
        """Store a batch of a tracked run's metrics (an Arrow IPC stream: an int ``step`` column and float64
        metric columns, null where not logged), idempotent by (run, metric, step)."""
        headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
        return self._json("POST", f"/api/v1/tracking/runs/{run_id}/metrics", content=arrow_stream, headers=headers)

    def tracked_heartbeat(self, run_id: str) -> dict:
        """Renew a tracked run's lease."""
        return self._json("POST", f"/api/v1/tracking/runs/{run_id}/heartbeat")

    def finish_tracked_run(self, run_id: str, status: str, error: str | None = None) -> dict:
        """End a tracked run: 'succeeded', 'failed' (with its ``error``) or 'cancelled'."""
        return self._json("POST", f"/api/v1/tracking/runs/{run_id}/finish", json=_present(status=status, error=error))

    def tracked_run(self, run_id: str) -> dict:
        """One tracked run: its project, config, status and client."""
        return self._json("GET", f"/api/v1/tracking/runs/{run_id}")

    def tracked_metrics(self, run_id: str) -> pa.Table:
        """A tracked run's metrics as a pyarrow Table, wide: ``step`` and one column per metric, null where it
        was not logged (``.to_pandas()`` for a DataFrame)."""
        import pyarrow as pa

        response = self._send(self._http.build_request("GET", f"/api/v1/tracking/runs/{run_id}/metrics?format=arrow"))
        return pa.ipc.open_stream(response.content).read_all()

    def project(self, project: str) -> dict:
        """A project's tracked runs grouped by config, each metric's last value per run and its mean, min and
        max per config. Not paired (``note`` says why)."""
        return self._json("GET", f"/api/v1/tracking/projects/{project}")

    # --- suites --------------------------------------------------------------------------------

    def submit_suite(self, name: str, version: str, submission: dict, wait: bool = False) -> dict:
        """Submit optimizers against a suite (docs/suites.md): ``submission`` is {"optimizers": [...], "budget":
        "full" | "reduced", ...}. One comparison per workload; with ``wait``, once all have finished, the suite's
        scores (``suite``)."""
        made = self._json("POST", f"/api/v1/suites/{name}/{version}/submissions", json=submission)
        if not wait:
            return made
        for comparison in made["comparisons"]:
            self.wait(comparison["comparison"]["id"])
        return self.suite(name, version, made["budget"])

    def suite(self, name: str, version: str, budget: Literal["full", "reduced"] = "full") -> dict:
        """The suite's targets, and every optimizer setting the team ran on it ranked by score."""
        return self._json("GET", f"/api/v1/suites/{name}/{version}", params={"budget": budget})

    # --- transport -----------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(self._http.build_request(method, path, **kwargs)).json()

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        pause_s, retries_left = 0.5, self.retries
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not retries_left:
                    raise OptibenchError(None, f"no answer from {self.url}: {str(exc) or type(exc).__name__}") from exc
                wait_s = pause_s
            else:
                if response.is_success:
                    return response
                if stream:
                    response.read()
                if response.status_code != 503 or not retries_left:
                    retry_after = _retry_after(response, None) if response.status_code in (429, 503) else None
                    raise OptibenchError(response.status_code, _detail(response), retry_after)
                wait_s = _retry_after(response, pause_s)
            time.sleep(wait_s)
            retries_left -= 1
            pause_s = min(2 * pause_s, MAX_RETRY_WAIT_S)


def _retry_after(response: httpx.Response, default_s: Any) -> Any:
    try:
        seconds = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return default_s
    return min(seconds, MAX_RETRY_WAIT_S) if math.isfinite(seconds) and seconds >= 0 else default_s


def _present(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}
