"""External runs: created in a comparison, fed step rows as Arrow IPC streams, kept alive by heartbeats and
finished by their client (docs/ingest.md)."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import NOT_FOUND, RunOut
from api.uploads import ARROW_UPLOAD, FINISHED, IngestOut, read_upload, refusals_as_http
from services import external

#: the app's body limit is for JSON; an upload's own (OPTIBENCH_INGEST_MAX_BODY_BYTES) is checked as it arrives
router = APIRouter(prefix="/api/v1", tags=["external runs"], max_body_size=1 << 40)

Text = Annotated[str, Field(min_length=1, max_length=100)]


class ExternalOptimizer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text = Field(description="free text: the client's optimizer, e.g. 'mylab.signsgd'")
    params: dict[str, Any] = Field(default_factory=dict, description="free-form hyperparameters, shown as given")


class ExternalRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seed: int = Field(description="one of the comparison's seeds: the run is paired with its runs of that seed")
    label: Text = Field(description="its row in the leaderboard; runs with one label differ only in seed")
    optimizer: ExternalOptimizer
    device: Annotated[str, Field(max_length=16)] | None = None
    hardware: dict[str, Any] | None = Field(None, description="the client's CPU, GPU, torch and CUDA versions")
    packages: dict[str, Annotated[str, Field(max_length=100)]] | None = Field(
        None, description="package versions on the client, e.g. {'torch': '2.13.0', 'optibench': '0.9.0'}"
    )
    key: Annotated[str, Field(min_length=8, max_length=64)] | None = Field(
        None, description="the client's idempotency key: a retried create with the same key returns the same run"
    )


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["succeeded", "failed", "diverged", "cancelled"]
    final_loss: float | None = Field(None, description="the loss on the whole training set after the last update")
    wall_time_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    diverged_step: Annotated[int, Field(ge=0)] | None = None
    error: Annotated[str, Field(max_length=2000)] | None = None


@router.post(
    "/comparisons/{comparison_id}/runs",
    status_code=201,
    response_model=RunOut,
    responses=NOT_FOUND,
)
def create_external_run(
    comparison_id: str, body: ExternalRunIn, session: SessionDep, principal: PrincipalDep
) -> RunOut:
    """Start an external run: running, its lease renewed by every upload or heartbeat."""
    with refusals_as_http():
        run = external.create_run(
            session,
            principal.team_id,
            comparison_id,
            seed=body.seed,
            label=body.label,
            optimizer=body.optimizer.name,
            params=body.optimizer.params,
            device=body.device,
            hardware=body.hardware,
            client={"packages": body.packages or {}},
            key=body.key,
        )
    return RunOut.of(run)


@router.post(
    "/runs/{run_id}/steps",
    **ARROW_UPLOAD,
)
async def upload_steps(
    run_id: str, request: Request, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> IngestOut:
    """Store a batch of step rows, all or nothing, idempotent by (run, step); also a heartbeat."""
    body = await read_upload(request, settings)
    with refusals_as_http():
        answer = await run_in_threadpool(
            external.append_steps,
            session,
            settings,
            principal.team_id,
            run_id,
            request.headers.get("content-type", ""),
            body,
        )
    return IngestOut(**answer)


class EvalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    step: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(
        description="updates applied before it (0: the initial weights)"
    )
    epoch: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    train_loss: float = Field(description="the loss on the whole training set; NaN and infinities as such")
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None


class EvalsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    evals: list[EvalIn] = Field(min_length=1, max_length=10_000, description="strictly increasing steps")


@router.post("/runs/{run_id}/evals", response_model=IngestOut, responses={**NOT_FOUND, **FINISHED})
def upload_evals(
    run_id: str, body: EvalsIn, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> IngestOut:
    """Store whole-set evaluations of an external run (what suites score), all or nothing, idempotent by
    (run, step); also a heartbeat."""
    with refusals_as_http():
        answer = external.append_evals(
            session, settings, principal.team_id, run_id, [row.model_dump() for row in body.evals]
        )
    return IngestOut(**answer)


@router.post("/runs/{run_id}/heartbeat", response_model=IngestOut, responses={**NOT_FOUND, **FINISHED})
def heartbeat(run_id: str, session: SessionDep, principal: PrincipalDep) -> IngestOut:
    """Renew the run's lease without rows; ``cancelled`` tells the client to stop."""
    with refusals_as_http():
        status = external.heartbeat(session, principal.team_id, run_id)
    return IngestOut(run_id=run_id, status=status, cancelled=status != "running", rows=0, stored=0)


@router.post("/runs/{run_id}/finish", response_model=RunOut, responses={**NOT_FOUND, **FINISHED})
def finish(run_id: str, body: FinishIn, session: SessionDep, principal: PrincipalDep) -> RunOut:
    """End an external run with its status and final loss."""
    with refusals_as_http():
        run = external.finish_run(
            session,
            principal.team_id,
            run_id,
            body.status,
            final_loss=body.final_loss,
            wall_time_s=body.wall_time_s,
            diverged_step=body.diverged_step,
            error=body.error,
        )
    return RunOut.of(run)
