"""Response bodies. Request bodies are the engine's ComparisonSpec."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from sqlalchemy.orm import object_session

from db import workers
from db.history import SUMMARY_COLUMNS, Progress
from db.models import TERMINAL, ApiKey, Comparison, Run
from engine.identity import device_kind
from optibench.settings import get_settings
from optibench.status import ComparisonStatus, RunStatus


class OptimizerOut(BaseModel):
    name: str
    params: dict[str, Any]


class RunOut(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings")

    id: str
    comparison_id: str
    label: str
    optimizer: OptimizerOut
    seed: int
    status: RunStatus
    steps_done: int
    steps_total: int
    final_loss: float | None
    best_loss: float | None
    wall_time_s: float | None
    diverged_step: int | None
    error: str | None
    device: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    phase: Literal["search", "final"] | None = Field(
        description="tuning jobs: 'search' (the sweep on the first seed) or 'final' (the chosen setting on the others)"
    )
    sweep_values: dict[str, Any] = Field(description="this run's swept params; empty without a sweep")
    reused_from_id: str | None = Field(
        description="set when this run reused an identical succeeded run instead of "
        "training; its steps and evaluations are that run's"
    )
    config_hash: str | None = Field(description="hash of everything that determines the result (docs/sweeps.md)")
    execution: Literal["alone", "ensemble"] | None = Field(
        None,
        description=(
            "how the run trains: alone, or as a member of a vectorized ensemble (docs/vectorized.md); decided at "
            "submit, then how it actually trained once finished. The two differ in the last bits, so a run is only "
            "reused from one trained the same way. null for runs trained before it was recorded"
        ),
    )
    external: bool = Field(False, description="trained by a client on its own machine (docs/ingest.md)")
    client: dict[str, Any] | None = Field(None, description="an external run's client: package versions, hardware")
    waiting: str | None = Field(
        None,
        description="set while the run is queued on a queue no live worker consumes "
        "(e.g. a 'cuda' run without a GPU worker): which queue, and how to serve it",
    )

    @classmethod
    def of(cls, run: Run, served: Counter[str] | None = None) -> RunOut:
        """``served``: how many live workers consume each queue (db.workers.live_queues), read here if
        the run is queued and it is not given."""
        if run.status == "queued" and served is None:
            served = _served(run)
        return cls(
            id=run.id,
            comparison_id=run.comparison_id,
            label=run.label,
            optimizer=OptimizerOut(name=run.optimizer_name, params=run.optimizer_params),
            seed=run.seed,
            status=run.status,
            steps_done=run.steps_done,
            steps_total=run.steps_total,
            final_loss=run.final_loss,
            best_loss=run.best_loss,
            wall_time_s=run.wall_time_s,
            diverged_step=run.diverged_step,
            error=run.error,
            device=run.device,
            attempt=run.attempt,
            started_at=run.started_at,
            finished_at=run.finished_at,
            phase=run.phase,
            sweep_values=run.sweep_values or {},
            reused_from_id=run.reused_from_id,
            config_hash=run.config_hash,
            execution=run.execution,
            external=bool(run.external),
            client=run.client,
            waiting=_waiting(run, served),
        )


def _served(instance: Run | Comparison) -> Counter[str] | None:
    session = object_session(instance)
    return None if session is None else workers.live_queues(session, get_settings())


def _waiting(run: Run, served: Counter[str] | None) -> str | None:
    if run.status != "queued" or served is None:
        return None
    settings = get_settings()
    kind = run.device or device_kind("auto", settings.auto_device)
    queue = settings.queue_for(kind)
    if served[queue]:
        return None
    start = "optibench worker --gpus all" if kind == "cuda" else "optibench worker"
    return f"waiting for a worker on queue {queue}: no live worker consumes it (start one with `{start}`)"


class ProgressOut(BaseModel):
    runs_total: int
    runs_done: int
    steps_total: int
    steps_done: int


class ComparisonSummary(BaseModel):
    id: str
    name: str
    status: ComparisonStatus
    created_at: datetime
    finished_at: datetime | None
    tags: list[str]
    note: str | None
    #: the name of the API key that submitted it ("local" with auth off)
    submitted_by: str | None
    progress: ProgressOut

    @classmethod
    def of(cls, comparison: Comparison, progress: Progress, **extra: Any) -> Self:
        return cls(
            id=comparison.id,
            name=comparison.name,
            status=comparison.status,
            created_at=comparison.created_at,
            finished_at=comparison.finished_at,
            tags=comparison.tags,
            note=comparison.note,
            submitted_by=comparison.submitted_by,
            progress=ProgressOut(**progress.__dict__),
            **extra,
        )


class ComparisonOut(ComparisonSummary):
    spec: dict[str, Any]
    runs: list[RunOut]
    waiting: str | None = Field(
        None,
        description="set while some of its queued runs sit on a queue no live "
        "worker consumes: which queue, and how to serve it (the runs say which)",
    )
    adaptive: dict[str, Any] | None = Field(
        None,
        description="adaptive seeding: its round, whether it is done (and 'stopped' by a failed or cancelled run), "
        "and per pair its decision, evidence and seeds (docs/statistics.md); null for a list of seeds",
    )

    @classmethod
    def full(cls, comparison: Comparison, served: Counter[str] | None = None) -> ComparisonOut:
        """``served``: as for RunOut.of, read here if some run is queued and it is not given."""
        runs = comparison.runs
        progress = Progress(
            runs_total=len(runs),
            runs_done=sum(r.status in TERMINAL for r in runs),
            steps_total=sum(r.steps_total for r in runs),
            steps_done=sum(r.steps_done for r in runs),
        )
        if served is None and any(r.status == "queued" for r in runs):
            served = _served(comparison)
        outs = [RunOut.of(r, served) for r in runs]
        waiting = "; ".join(dict.fromkeys(out.waiting for out in outs if out.waiting)) or None
        return cls.of(
            comparison, progress, spec=comparison.spec, runs=outs, waiting=waiting, adaptive=comparison.adaptive
        )


class ComparisonPage(BaseModel):
    items: list[ComparisonSummary]
    next_cursor: str | None


def model_body(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as FastAPI sends a route's response_model, without validating it once more in a
    worker thread: its constructor validated it."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def page_body(rows: list[tuple], next_cursor: str | None) -> Response:
    """The ComparisonPage of db.history.history_page rows, encoded as pydantic encodes the model (the
    same serializer) without building and validating a model per row first."""
    n = len(SUMMARY_COLUMNS)
    items = [dict(zip(SUMMARY_COLUMNS, row[:n]), progress=dict(zip(ProgressOut.model_fields, row[n:]))) for row in rows]
    return Response(to_json({"items": items, "next_cursor": next_cursor}), media_type="application/json")


class ComparisonPatch(BaseModel):
    """History edits: a field left out is unchanged; ``note: null`` clears the note."""

    model_config = ConfigDict(extra="forbid")

    #: the same constraints as ComparisonSpec.tags
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)
    note: str | None = Field(None, max_length=10_000)


class Limits(BaseModel):
    max_runs_per_comparison: int
    max_steps_per_comparison: int
    max_running_comparisons: int


class Me(BaseModel):
    team_id: str
    team_name: str
    role: Literal["member", "admin"]
    key_name: str
    #: None with auth off
    key_id: str | None
    key_prefix: str | None
    #: the limits in force for the team (its own, else the server's settings)
    limits: Limits


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: Literal["member", "admin"] = "member"


class KeyOut(BaseModel):
    id: str
    name: str
    role: Literal["member", "admin"]
    #: the key's first characters, to tell keys apart; never the key
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    #: shown this once: only its SHA-256 is stored
    key: str


class ShareLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_hours: int = Field(168, ge=1, le=8760)


class ShareLinkOut(BaseModel):
    id: str
    comparison_id: str
    #: the public read of the comparison; anyone holding it can read the comparison until it expires.
    #: Absolute under OPTIBENCH_PUBLIC_URL; without it, a path when auth is required
    url: str
    token: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class HTTPError(BaseModel):
    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": HTTPError, "description": "no such id"}}


def json_body(body: dict) -> Response:
    """A large body already made ``json_safe``, encoded in one pass: FastAPI's own encoder walks every
    value first, which costs more than the query behind a long curve. ``allow_nan=False`` guards the
    promise that NaN never reaches JSON as a bare token."""
    return Response(json.dumps(body, allow_nan=False, separators=(",", ":")), media_type="application/json")


def printable(text: str) -> str:
    """``text`` with NUL and lone surrogates written as their escapes (``\\u0000``, ``\\ud800``), so
    that every encoder and backend takes it: for error messages that quote what was refused."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def printable_json(value: Any) -> Any:
    """``json_safe``, and every string ``printable``: what an error body may quote of any input."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k) if isinstance(k, str) else k: printable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_json(v) for v in value]
    return json_safe(value)


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: encode them as the strings "NaN", "Infinity", "-Infinity",
    inside dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
