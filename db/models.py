from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from optibench.status import TERMINAL_RUN, RunStatus

QUEUED, RUNNING, SUCCEEDED, FAILED, DIVERGED, CANCELLED = RunStatus
TERMINAL = TERMINAL_RUN
MEMBER, ADMIN = "member", "admin"
#: the team of the embedded single-user deployment (auth off); created by the migrations
LOCAL_TEAM_ID = "local"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class _UnconvertedDouble(Double):
    def bind_processor(self, dialect):
        return None


class FaithfulFloat(TypeDecorator):
    """A double that keeps NaN apart from NULL. PostgreSQL stores NaN natively; SQLite would turn it
    into NULL, so there it is stored as the text 'NaN' (SQLite columns take any type). Infinities
    are native on both."""

    impl = Double
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return _UnconvertedDouble() if dialect.name == "sqlite" else Double()

    def process_bind_param(self, value: float | None, dialect) -> float | str | None:
        if dialect.name == "sqlite" and value is not None and math.isnan(value):
            return "NaN"
        return value

    def process_result_value(self, value: float | str | None, dialect) -> float | None:
        return float(value) if isinstance(value, str) else value


def encode_float(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # 'nan', 'inf', '-inf'


class FloatList(TypeDecorator):
    """A list of floats as JSON text, non-finite values as strings, since JSON has no NaN."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[float] | None, dialect) -> str | None:
        return None if value is None else orjson.dumps([encode_float(v) for v in value]).decode()

    def process_result_value(self, value: str | None, dialect) -> list[float] | None:
        return None if value is None else [float(v) for v in orjson.loads(value)]


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


def table_of(model: type[Base]) -> Table:
    """A model's Table, for Core statements that bypass the ORM (declarative types ``__table__`` as any
    FromClause, which ``insert`` and ``update`` do not take)."""
    return cast(Table, model.__table__)


class Team(Base):
    """Owns comparisons and keys. A NULL limit falls back to the OPTIBENCH_* setting of the same name."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    max_runs_per_comparison: Mapped[int | None]
    max_steps_per_comparison: Mapped[int | None]
    max_running_comparisons: Mapped[int | None]


class ApiKey(Base):
    """Only a SHA-256 of the key is stored: keys are 256-bit random, so no salt or slow hash is needed."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16), default=MEMBER)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the key's first characters, to tell keys apart in listings without revealing them
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship()


class Comparison(Base):
    __tablename__ = "comparisons"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), server_default=LOCAL_TEAM_ID)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    spec: Mapped[dict[str, Any]]
    tags: Mapped[list[str]] = mapped_column(default=list)
    note: Mapped[str | None] = mapped_column(Text)
    #: who submitted it: the key's name (kept when the key is revoked)
    submitted_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    #: soft delete: hidden from history, rows kept until purged
    deleted_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: SHA-256 of the canonical submitted spec, to tell a retry from a different body under the same key
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # copied from the spec at submit, so the history filters on plain columns instead of parsing JSON
    model_name: Mapped[str | None] = mapped_column(String(100))
    dataset_name: Mapped[str | None] = mapped_column(String(100))
    function_name: Mapped[str | None] = mapped_column(String(100))
    #: the entries' registered optimizer names, each once, in entry order
    optimizer_names: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    #: the labels ranked first on the leaderboard (several on a tie), set when the comparison ends
    winners: Mapped[list[str] | None]
    #: adaptive seeding's state (db.adaptive): its round, whether it is done, each pair's decision; NULL without
    adaptive: Mapped[dict[str, Any] | None]
    #: set when a round's last run ended and the round awaits evaluation by the round task
    adaptive_due_at: Mapped[datetime | None] = mapped_column(index=True)
    #: made by a suite submission (services.suites): the suite's id, 'full' or 'reduced', the workload's name
    suite: Mapped[str | None] = mapped_column(String(64))
    suite_budget: Mapped[str | None] = mapped_column(String(16))
    suite_workload: Mapped[str | None] = mapped_column(String(64))

    runs: Mapped[list[Run]] = relationship(back_populates="comparison", order_by="Run.position")

    __table_args__ = (
        Index("ix_comparisons_team_created", "team_id", "created_at", "id"),
        Index("ix_comparisons_team_status_created", "team_id", "status", "created_at", "id"),
        Index("ux_comparisons_team_idempotency", "team_id", "idempotency_key", unique=True),
        Index("ix_comparisons_team_suite", "team_id", "suite", "suite_budget", "suite_workload"),
    )


class ShareLink(Base):
    """A read-only view of one comparison for people outside the team. The URL carries a signed token
    naming this row; the row makes it revocable and bounds its life."""

    __tablename__ = "share_links"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    comparison_id: Mapped[str] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: indexed with status (ix_runs_comparison_status), which db.comparisons.refresh_comparison probes
    comparison_id: Mapped[str] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"))
    position: Mapped[int]
    entry_index: Mapped[int]
    label: Mapped[str] = mapped_column(String(100))
    optimizer_name: Mapped[str] = mapped_column(String(100))
    optimizer_params: Mapped[dict[str, Any]]
    seed: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    steps_total: Mapped[int]
    steps_done: Mapped[int] = mapped_column(default=0)
    final_loss: Mapped[float | None] = mapped_column(Double)
    best_loss: Mapped[float | None] = mapped_column(Double)
    wall_time_s: Mapped[float | None] = mapped_column(Double)
    diverged_step: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(default=0)
    #: the outbox: NULL until the task is published, so a broker outage never loses a submit
    enqueued_at: Mapped[datetime | None] = mapped_column(index=True)
    heartbeat_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: canonical hash of everything that determines the run's result (see engine.identity)
    config_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    #: set when the run reused an identical succeeded run instead of training; its rows are read there
    reused_from_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    #: tuning jobs: 'search' (the sweep on the first seed) or 'final' (the chosen setting on the rest)
    phase: Mapped[str | None] = mapped_column(String(16))
    #: the swept hyperparameters of this run, e.g. {"lr": 0.001}; empty without a sweep
    sweep_values: Mapped[dict[str, Any] | None]
    #: CPU model, GPU name, torch and CUDA versions of the machine that trained it
    hardware: Mapped[dict[str, Any] | None]
    #: 'alone' or 'ensemble' (engine.identity): as planned at submit, then as it actually trained once it
    #: finishes; reuse only takes a run trained the way the new one would train. NULL: trained before 0009
    execution: Mapped[str | None] = mapped_column(String(16))
    #: trained by a client on its own machine (POST /comparisons/{id}/runs): never claimed by a worker, failed
    #: by the watchdog at the end of its lease
    external: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: an external run's description of its client: package versions, its optimizer's source
    client: Mapped[dict[str, Any] | None]

    comparison: Mapped[Comparison] = relationship(back_populates="runs")

    __table_args__ = (Index("ix_runs_comparison_status", "comparison_id", "status"),)


#: run ids are hex, so PostgreSQL may compare them bytewise ("C") rather than through the database's
#: locale (strcoll): cheaper keys for the write-heavy (run_id, step) indexes, where many runs interleave
_RUN_KEY = String(32).with_variant(String(32, collation="C"), "postgresql")


class Step(Base):
    """Append-only, keyed by (run_id, step): a redelivered task can never duplicate a row.

    No foreign key to runs: PostgreSQL checks one per inserted row, which cuts COPY from ~550k to
    ~145k rows/s. Rows are only written in the transaction that holds the run's lease (so the run
    exists), and deleting runs deletes their steps explicitly (``db.teams.purge_deleted``)."""

    __tablename__ = "steps"

    run_id: Mapped[str] = mapped_column(_RUN_KEY, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int | None]
    loss: Mapped[float] = mapped_column(FaithfulFloat)
    time_s: Mapped[float] = mapped_column(Double)
    step_time_ms: Mapped[float] = mapped_column(Double)
    lr: Mapped[float | None] = mapped_column(Double)
    x: Mapped[list[float] | None] = mapped_column(FloatList)
    grad_norm: Mapped[float | None] = mapped_column(FaithfulFloat)
    update_norm: Mapped[float | None] = mapped_column(FaithfulFloat)


class StepRollup(Base):
    """Loss aggregates per block of 2**level steps, maintained at ingest, so a downsampled curve of
    a million-step run reads a few thousand rows instead of a million. Fields mean what
    ``analysis.downsample.Bucket``'s do: NaN and ±inf are counted, min/max skip NaN but keep ±inf,
    the sum covers finite values only. A block's first and last rows give its x on every axis."""

    __tablename__ = "step_rollups"

    run_id: Mapped[str] = mapped_column(_RUN_KEY, primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    block: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int]
    nan_count: Mapped[int]
    pos_inf_count: Mapped[int]
    neg_inf_count: Mapped[int]
    finite_sum: Mapped[float] = mapped_column(Double)
    min: Mapped[float | None] = mapped_column(Double)
    max: Mapped[float | None] = mapped_column(Double)
    first: Mapped[float] = mapped_column(FaithfulFloat)
    last: Mapped[float] = mapped_column(FaithfulFloat)
    first_step: Mapped[int]
    last_step: Mapped[int]
    first_time_s: Mapped[float] = mapped_column(Double)
    last_time_s: Mapped[float] = mapped_column(Double)
    first_epoch: Mapped[int | None]
    last_epoch: Mapped[int | None]


class Checkpoint(Base):
    """The latest resumable state of a run: model, optimizer, RNG and data position after ``step``
    updates. Kept in the database so any worker, on any machine, can resume it; deleted when the run ends."""

    __tablename__ = "checkpoints"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int]
    state: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Eval(Base):
    """Whole-set metrics after ``step`` updates (0: the initial weights)."""

    __tablename__ = "evals"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int | None]
    train_loss: Mapped[float] = mapped_column(FaithfulFloat)
    train_accuracy: Mapped[float | None] = mapped_column(FaithfulFloat)
    val_loss: Mapped[float | None] = mapped_column(FaithfulFloat)
    val_accuracy: Mapped[float | None] = mapped_column(FaithfulFloat)


class DashboardSession(Base):
    """A dashboard login. The signed cookie names this row; logging out revokes it here, so a saved
    copy of the cookie stops working at once rather than when it expires."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Worker(Base):
    """A live Celery worker and the queues it consumes, refreshed by its sweeper: what /readyz and a
    run waiting for a GPU read. A row whose last_seen is older than a lease is a worker that is gone."""

    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[str]]
    pid: Mapped[int | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(index=True)


class TrackedRun(Base):
    """A free-form tracked run (docs/tracking.md): any model and loop, trained by its client, with a config
    and any scalar metrics per step. Runs of one config are grouped, never paired: nothing ties their initial
    weights or batch order together. Failed by the watchdog (``db.tracking.reap_stale``) when its client stops
    sending for a lease."""

    __tablename__ = "tracked_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(100))
    #: the setting's label; by default ``cfg-`` and the config hash's first characters
    name: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]]
    #: SHA-256 of the config's canonical JSON (sorted keys, no spaces): runs with one hash form a group
    config_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    hardware: Mapped[dict[str, Any] | None]
    #: the client's package versions and its idempotency key
    client: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_tracked_runs_team_project", "team_id", "project"),
        Index("ix_tracked_runs_status", "status"),
    )


class TrackedMetric(Base):
    """One logged value of a tracked run, stored long: a step where a metric was not logged has no row."""

    __tablename__ = "tracked_metrics"

    run_id: Mapped[str] = mapped_column(ForeignKey("tracked_runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(FaithfulFloat)
