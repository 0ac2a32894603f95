"""Response bodies. Request bodies are the engine's ComparisonSpec."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from db.models import TERMINAL, Comparison, Run
from db.queries import Progress

RunStatus = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled"]
ComparisonStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


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

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            id=run.id, comparison_id=run.comparison_id, label=run.label,
            optimizer=OptimizerOut(name=run.optimizer_name, params=run.optimizer_params), seed=run.seed,
            status=run.status, steps_done=run.steps_done, steps_total=run.steps_total, final_loss=run.final_loss,
            best_loss=run.best_loss, wall_time_s=run.wall_time_s, diverged_step=run.diverged_step, error=run.error,
            device=run.device, attempt=run.attempt, started_at=run.started_at, finished_at=run.finished_at,
        )


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
    progress: ProgressOut

    @classmethod
    def of(cls, comparison: Comparison, progress: Progress, **extra: Any) -> ComparisonSummary:
        return cls(
            id=comparison.id, name=comparison.name, status=comparison.status, created_at=comparison.created_at,
            finished_at=comparison.finished_at, tags=comparison.tags,
            progress=ProgressOut(**progress.__dict__), **extra,
        )


class ComparisonOut(ComparisonSummary):
    spec: dict[str, Any]
    runs: list[RunOut]

    @classmethod
    def full(cls, comparison: Comparison) -> ComparisonOut:
        runs = comparison.runs
        progress = Progress(
            runs_total=len(runs), runs_done=sum(r.status in TERMINAL for r in runs),
            steps_total=sum(r.steps_total for r in runs), steps_done=sum(r.steps_done for r in runs),
        )
        return cls.of(comparison, progress, spec=comparison.spec, runs=[RunOut.of(r) for r in runs])


class ComparisonPage(BaseModel):
    items: list[ComparisonSummary]
    next_cursor: str | None


class HTTPError(BaseModel):
    detail: str


NOT_FOUND = {404: {"model": HTTPError, "description": "no such id"}}


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
