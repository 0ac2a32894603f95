"""Free-form tracking (docs/tracking.md): runs of any model and loop with a config and any scalar metrics per
step, uploaded as Arrow IPC streams, read back wide, and grouped by config in a project summary that is
marked not paired."""

import io
from datetime import datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import NOT_FOUND, json_body, json_safe
from api.uploads import ARROW_UPLOAD, FINISHED, IngestOut, read_upload, refusals_as_http
from services import external, tracking

#: the app's body limit is for JSON; an upload's own (OPTIBENCH_INGEST_MAX_BODY_BYTES) is checked as it arrives
router = APIRouter(prefix="/api/v1/tracking", tags=["free-form tracking"], max_body_size=1 << 40)

Text = Annotated[str, Field(min_length=1, max_length=100)]


class TrackedRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    project: Text = Field(description="runs of one project are summarised together")
    config: dict[str, Any] = Field(
        description=f"any JSON object, at most {tracking.MAX_CONFIG_BYTES} bytes encoded: runs with the same "
        "config form one group"
    )
    name: Text | None = Field(None, description="the config's label; default: 'cfg-' and its hash's start")
    seed: int | None = Field(None, ge=-(2**31), le=2**31 - 1, description="the client's seed, shown as given")
    hardware: dict[str, Any] | None = Field(None, description="the client's CPU, GPU, torch and CUDA versions")
    packages: dict[str, Annotated[str, Field(max_length=100)]] | None = Field(
        None, description="package versions on the client, e.g. {'torch': '2.13.0'}"
    )
    key: Annotated[str, Field(min_length=8, max_length=64)] | None = Field(
        None, description="the client's idempotency key: a retried create with the same key returns the same run"
    )


class TrackedRunOut(BaseModel):
    id: str
    project: str
    name: str
    config: dict[str, Any]
    config_hash: str = Field(description="SHA-256 of the config's canonical JSON")
    seed: int | None
    status: Literal["running", "succeeded", "failed", "cancelled"]
    created_at: datetime
    heartbeat_at: datetime | None
    finished_at: datetime | None
    hardware: dict[str, Any] | None
    packages: dict[str, Any]
    error: str | None


class TrackedFinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["succeeded", "failed", "cancelled"]
    error: Annotated[str, Field(max_length=2000)] | None = None


def _out(run: Any) -> TrackedRunOut:
    return TrackedRunOut(**tracking.run_out(run))


@router.post("/runs", status_code=201, response_model=TrackedRunOut)
def create_tracked_run(body: TrackedRunIn, session: SessionDep, principal: PrincipalDep) -> TrackedRunOut:
    """Start a tracked run: running, its lease renewed by every upload or heartbeat."""
    with refusals_as_http():
        run, _ = tracking.create_run(
            session,
            principal.team_id,
            body.project,
            body.config,
            name=body.name,
            seed=body.seed,
            hardware=body.hardware,
            packages=body.packages,
            key=body.key,
        )
    return _out(run)


@router.post(
    "/runs/{tracked_run_id}/metrics",
    **ARROW_UPLOAD,
)
async def upload_metrics(
    tracked_run_id: str, request: Request, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> IngestOut:
    """Store a batch of metrics (an int ``step`` column and float64 metric columns, null: not logged), all or
    nothing, idempotent by (run, metric, step); also a heartbeat."""
    body = await read_upload(request, settings)
    with refusals_as_http():
        answer = await run_in_threadpool(
            tracking.append_metrics,
            session,
            settings,
            principal.team_id,
            tracked_run_id,
            request.headers.get("content-type", ""),
            body,
        )
    return IngestOut(**answer)


@router.post("/runs/{tracked_run_id}/heartbeat", response_model=IngestOut, responses={**NOT_FOUND, **FINISHED})
def heartbeat(tracked_run_id: str, session: SessionDep, principal: PrincipalDep) -> IngestOut:
    """Renew the run's lease without metrics."""
    with refusals_as_http():
        status = tracking.heartbeat(session, principal.team_id, tracked_run_id)
    return IngestOut(run_id=tracked_run_id, status=status, cancelled=False, rows=0, stored=0)


@router.post("/runs/{tracked_run_id}/finish", response_model=TrackedRunOut, responses={**NOT_FOUND, **FINISHED})
def finish(tracked_run_id: str, body: TrackedFinishIn, session: SessionDep, principal: PrincipalDep) -> TrackedRunOut:
    """End a tracked run with its status (and the error that ended a failed one)."""
    with refusals_as_http():
        run = tracking.finish(session, principal.team_id, tracked_run_id, body.status, body.error)
    return _out(run)


@router.get("/runs/{tracked_run_id}", response_model=TrackedRunOut, responses=NOT_FOUND)
def tracked_run(tracked_run_id: str, session: SessionDep, principal: PrincipalDep) -> TrackedRunOut:
    """One tracked run: its config, status and client."""
    return _out(tracking.run(session, principal.team_id, tracked_run_id))


@router.get(
    "/runs/{tracked_run_id}/metrics",
    responses={
        **NOT_FOUND,
        200: {
            "description": "wide: one row per step, one column per metric, null where it was not logged",
            "content": {"application/json": {}, external.ARROW_STREAM: {}},
        },
    },
)
def tracked_metrics(
    tracked_run_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    format: Literal["json", "arrow"] = "json",
) -> Response:
    """The run's metrics, wide: JSON ``{"run_id", "columns", "rows"}`` (NaN and infinities as strings), or an
    Arrow IPC stream."""
    table = tracking.metrics_table(session, principal.team_id, tracked_run_id)
    if format == "arrow":
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue(), media_type=external.ARROW_STREAM)
    rows = [list(row.values()) for row in table.to_pylist()]
    return json_body({"run_id": tracked_run_id, "columns": table.schema.names, "rows": json_safe(rows)})


@router.get("/projects/{project}", responses=NOT_FOUND)
def project_summary(project: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """The project's runs grouped by config, with each metric's last value per run and its mean, min and max
    over the group's runs. ``paired`` is false: the runs share no initial weights or batch order."""
    return json_body(json_safe(jsonable_encoder(tracking.project_summary(session, principal.team_id, project))))
