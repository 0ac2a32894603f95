"""Runs and their step rows. Step rows stream from the database in chunks, never all in memory.

Optional extras (grad_norm, update_norm) appear when the spec's training.extras asks for them.
Non-finite values: in JSON, NaN and ±infinity are the strings "NaN", "Infinity" and "-Infinity"
(JSON has no such numbers); in CSV they are nan, inf and -inf, which float() and pandas read back.
"""

import csv
import io
import json
from collections.abc import Iterator
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, SessionDep
from api.schemas import NOT_FOUND, RunOut, json_safe
from db import history
from db.session import new_session
from engine.columns import EXTRAS, NUMBER_COLUMNS
from services import access

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

#: what every row has, and the extras, which a row has when its run recorded them
_ALWAYS = tuple(name for name in NUMBER_COLUMNS if name not in EXTRAS)


def _step_dict(step) -> dict:
    row = {name: getattr(step, name) for name in _ALWAYS}
    if step.x is not None:
        row["x"] = step.x
    for extra in EXTRAS:
        if getattr(step, extra) is not None:
            row[extra] = getattr(step, extra)
    return json_safe(row)


def _stream_json(run_id: str, data_id: str) -> Iterator[str]:
    with new_session() as session:
        yield f'{{"run_id": {json.dumps(run_id)}, "steps": ['
        for i, step in enumerate(history.iter_steps(session, data_id)):
            yield ("," if i else "") + json.dumps(_step_dict(step), allow_nan=False)
        yield "]}"


def _stream_csv(data_id: str, dim: int | None, extras: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    columns = [*_ALWAYS, *extras]
    out.writerow(columns + [f"x{i}" for i in range(dim or 0)])
    with new_session() as session:
        for i, step in enumerate(history.iter_steps(session, data_id)):
            out.writerow([*(_csv_value(getattr(step, name)) for name in columns), *(repr(v) for v in (step.x or []))])
            if i % 1000 == 999:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _csv_value(value: float | int | None) -> str:
    return "" if value is None else repr(value)


@router.get("/{run_id}", response_model=RunOut, responses=NOT_FOUND)
def get_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> RunOut:
    return RunOut.of(access.run(session, run_id, principal.team_id))


@router.post("/{run_id}/cancel", response_model=RunOut, responses=NOT_FOUND)
def cancel_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> RunOut:
    """Cancel one run: at once if queued, at its next flush if running; recorded rows are kept."""
    return RunOut.of(access.cancel_run(session, principal.team_id, run_id))


@router.get("/{run_id}/steps", responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **NOT_FOUND})
def get_steps(
    run_id: str, session: SessionDep, principal: PrincipalDep, format: Literal["json", "csv"] = "json"
) -> StreamingResponse:
    """Every step row of the run, in step order (a reused run's are its source's)."""
    run = access.run(session, run_id, principal.team_id)
    data_id = run.reused_from_id or run.id
    if format == "csv":
        spec = run.comparison.spec
        x0 = spec["problem"].get("x0")
        extras = [e for e in EXTRAS if e in spec["training"].get("extras", [])]
        return StreamingResponse(
            _stream_csv(data_id, len(x0) if x0 else None, extras),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="run-{run_id}-steps.csv"'},
        )
    return StreamingResponse(_stream_json(run_id, data_id), media_type="application/json")


@router.get("/{run_id}/evals", responses=NOT_FOUND)
def get_evals(run_id: str, session: SessionDep, principal: PrincipalDep) -> dict:
    """Whole-set evaluations (train loss, validation loss, accuracies), every ``eval_every`` steps.
    ``step`` counts the updates applied: 0 is the initial weights."""
    run = access.run(session, run_id, principal.team_id)
    columns = ("step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
    evals = history.iter_evals(session, run.reused_from_id or run.id)
    return {
        "run_id": run_id,
        "evals": [json_safe({c: getattr(e, c) for c in columns}) for e in evals],
    }
