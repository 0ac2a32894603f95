"""Free-form tracking (docs/tracking.md): runs of any model and loop with a config and any scalar metrics per
step, uploaded as Arrow IPC streams like external runs' steps (the same limits and errors, ``services.external``),
and grouped by config in a project's summary that says they are not paired. Another team's run or project
looks exactly like a missing one."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy.orm import Session

from db import tracking
from db.models import RUNNING, TrackedRun
from optibench.settings import Settings
from services.access import NotFound
from services.external import _INT4_MAX, ARROW_STREAM, BadInput, Finished, _limits, require_arrow

MAX_CONFIG_BYTES = 64 * 1024
METRIC_NAME = re.compile(r"[A-Za-z0-9_./-]{1,100}")
NOT_PAIRED = (
    "These runs were trained by their clients with no shared initial weights or batch order, so their "
    "differences mix the configs with seed and data-order noise: no paired tests are made. Compare "
    "configs over several seeds, or train a comparison's exact problem (docs/ingest.md) for paired tests."
)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys, no spaces); 422 at ``config`` when it is over
    MAX_CONFIG_BYTES or holds NaN or an infinity."""
    try:
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise BadInput(("body", "config"), f"the config must be plain JSON: {exc}") from exc
    size = len(canonical.encode())
    if size > MAX_CONFIG_BYTES:
        raise BadInput(("body", "config"), f"the config is {size} bytes encoded; at most {MAX_CONFIG_BYTES}")
    return hashlib.sha256(canonical.encode()).hexdigest()


def run(session: Session, team_id: str, run_id: str) -> TrackedRun:
    found = tracking.get_run(session, run_id, team_id)
    if found is None:
        raise NotFound(f"tracked run {run_id!r} not found")
    return found


def create_run(
    session: Session,
    team_id: str,
    project: str,
    config: dict[str, Any],
    *,
    name: str | None = None,
    seed: int | None = None,
    hardware: dict[str, Any] | None = None,
    packages: dict[str, str] | None = None,
    key: str | None = None,
) -> tuple[TrackedRun, bool]:
    """A running tracked run of the team's ``project``, and whether it is new: a ``key`` the project has seen
    returns the run created with it. Commits."""
    digest = config_hash(config)
    if key is not None and (made := tracking.run_with_key(session, team_id, project, key)) is not None:
        return made, False
    client: dict[str, Any] = {"packages": packages or {}} | ({"key": key} if key is not None else {})
    made = tracking.create_run(
        session,
        team_id,
        project,
        name=name or f"cfg-{digest[:8]}",
        config=config,
        config_hash=digest,
        seed=seed,
        hardware=hardware,
        client=client,
    )
    session.commit()
    return made, True


def heartbeat(session: Session, team_id: str, run_id: str) -> str:
    """Renew the run's lease. Commits."""
    run(session, team_id, run_id)
    try:
        status = tracking.hold(session, run_id)
    except tracking.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return status


def finish(session: Session, team_id: str, run_id: str, status: str, error: str | None) -> TrackedRun:
    """End the team's running run. Commits."""
    run(session, team_id, run_id)
    try:
        finished = tracking.finish(session, run_id, status, error)
    except tracking.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return finished


def append_metrics(
    session: Session, settings: Settings, team_id: str, run_id: str, content_type: str, body: bytes
) -> dict[str, Any]:
    """Store one uploaded batch of metrics, all or nothing, idempotent by (run, metric, step); a heartbeat too.
    Commits. The answer has the shape of an external run's upload's."""
    run(session, team_id, run_id)  # another team's run is missing, before anything about the body
    require_arrow(content_type)
    step, metrics = decode_metrics(body)
    _limits.take(team_id, len(step), len(body), settings)
    try:
        if len(step):
            stored = tracking.append_metrics(session, run_id, step, metrics)
        else:  # an empty batch is a heartbeat
            stored = 0
            tracking.hold(session, run_id)
    except tracking.NotRunning as exc:
        raise Finished(str(exc)) from exc
    session.commit()
    return {"run_id": run_id, "status": RUNNING, "cancelled": False, "rows": len(step), "stored": stored}


def decode_metrics(body: bytes) -> tuple[np.ndarray, dict[str, np.ma.MaskedArray]]:
    """An Arrow IPC stream's ``step`` column and metric columns (nulls masked: not logged at that step).
    Raises BadInput, naming the column, for a malformed stream, a bad metric name, a column that is not
    float64, and steps that are missing, null, negative, too large or not strictly increasing."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise BadInput(("body",), f"not an Arrow IPC stream ({ARROW_STREAM}): {exc}") from exc
    names = table.schema.names
    if len(set(names)) != len(names):
        raise BadInput(("body",), f"a column appears twice: {names}")
    if "step" not in names:
        raise BadInput(("body", "step"), "column 'step' is required")
    kind = table.schema.field("step").type
    if not (pa.types.is_int64(kind) or pa.types.is_int32(kind)):
        raise BadInput(("body", "step"), f"column 'step' is {kind}; it must be int64 or int32")
    if table.column("step").null_count:
        raise BadInput(("body", "step"), "column 'step' needs a value in every row")
    step = table.column("step").to_numpy().astype(np.int64)
    if len(step) and (step[0] < 0 or step[-1] > _INT4_MAX):
        raise BadInput(("body", "step"), f"steps count from 0 and stay below {_INT4_MAX + 1}")
    order = np.diff(step)
    if (order <= 0).any():
        at = int(np.flatnonzero(order <= 0)[0]) + 1
        what = "duplicate" if order[at - 1] == 0 else "decreasing"
        raise BadInput(
            ("body", "step"),
            f"steps must be strictly increasing within a batch: row {at} has a {what} step {int(step[at])}",
        )
    metrics: dict[str, np.ma.MaskedArray] = {}
    for name in names:
        if name == "step":
            continue
        if not METRIC_NAME.fullmatch(name):
            raise BadInput(("body", name), f"metric name {name!r}: 1-100 characters of A-Z a-z 0-9 _ . / -")
        column = table.column(name)
        if pa.types.is_null(column.type):
            continue
        if not pa.types.is_float64(column.type):
            raise BadInput(("body", name), f"column {name!r} is {column.type}; metrics are float64")
        values = column.to_numpy(zero_copy_only=False)
        metrics[name] = np.ma.MaskedArray(values, mask=column.is_null().to_numpy(zero_copy_only=False))
    return step, metrics


def metrics_table(session: Session, team_id: str, run_id: str) -> pa.Table:
    """The run's metrics wide: a ``step`` column (each step where something was logged) and one float64 column
    per metric, null where it was not logged."""
    run(session, team_id, run_id)
    names, steps, values = tracking.metric_rows(session, run_id)
    unique_steps, row = np.unique(steps, return_inverse=True)
    columns: dict[str, pa.Array] = {"step": pa.array(unique_steps, pa.int64())}
    name_array = np.asarray(names, dtype=object)
    for name in sorted(set(names)):
        mine = name_array == name
        wide = np.full(len(unique_steps), np.nan)
        logged = np.zeros(len(unique_steps), bool)
        wide[row[mine]], logged[row[mine]] = values[mine], True
        columns[name] = pa.array(wide, pa.float64(), mask=~logged)
    return pa.table(columns)


def project_summary(session: Session, team_id: str, project: str) -> dict[str, Any]:
    """The project's runs grouped by config: each group's runs, and per metric each run's last logged value
    with their mean, min and max over the group. Marked not paired."""
    runs = tracking.project_runs(session, team_id, project)
    if not runs:
        raise NotFound(f"project {project!r} not found")
    last = tracking.last_values(session, [r.id for r in runs])
    groups: dict[str, list[TrackedRun]] = {}
    for tracked in runs:
        groups.setdefault(tracked.config_hash, []).append(tracked)
    configs = []
    for digest, members in groups.items():
        metric_names = sorted({name for (run_id, name) in last if run_id in {m.id for m in members}})
        metrics = {}
        for name in metric_names:
            logged = {m.id: last[m.id, name] for m in members if (m.id, name) in last}
            finals = np.array([value for _, value in logged.values()])
            metrics[name] = {
                "last": {run_id: {"step": step, "value": value} for run_id, (step, value) in logged.items()},
                "runs": len(finals),
                "mean": float(finals.mean()),
                "min": float(finals.min()),
                "max": float(finals.max()),
            }
        configs.append(
            {
                "name": members[0].name,
                "config": members[0].config,
                "config_hash": digest,
                "runs": [
                    {"id": m.id, "name": m.name, "seed": m.seed, "status": m.status, "finished_at": m.finished_at}
                    for m in members
                ],
                "metrics": metrics,
            }
        )
    return {"project": project, "paired": False, "note": NOT_PAIRED, "configs": configs}


def run_out(tracked: TrackedRun) -> dict[str, Any]:
    """A run as the API answers it."""
    return {
        "id": tracked.id,
        "project": tracked.project,
        "name": tracked.name,
        "config": tracked.config,
        "config_hash": tracked.config_hash,
        "seed": tracked.seed,
        "status": tracked.status,
        "created_at": tracked.created_at,
        "heartbeat_at": tracked.heartbeat_at,
        "finished_at": tracked.finished_at,
        "hardware": tracked.hardware,
        "packages": (tracked.client or {}).get("packages", {}),
        "error": tracked.error,
    }
