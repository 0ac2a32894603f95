"""Celery tasks. They take ids, re-read state from the database, and are safe to run twice."""

from __future__ import annotations

import logging

import torch
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from db import leases
from db.models import CANCELLED, FAILED, Run
from db.session import transaction
from engine import config as engine_config
from engine import hardware, sizing
from engine.identity import ALONE, ENSEMBLE, Execution
from engine.spec import ComparisonSpec, with_run_params
from engine.training import RunOutcome, train
from engine.vectorized import Member, train_ensemble
from optibench.settings import get_settings
from worker import (
    adaptive,  # also registers the round task
    memory,
    sweeper,  # noqa: F401 (connects the sweeper to the worker's start and stop)
)
from worker.celery_app import ENSEMBLE_TASK, TRAIN_TASK, celery_app
from worker.dispatch import enqueue_runs
from worker.writer import StepWriter

log = logging.getLogger(__name__)


def _finish(claim: leases.Claim, status: str, **outcome) -> None:
    with transaction() as session:
        leases.finish_run(session, claim.run_id, claim.attempt, status, **outcome)
    adaptive.send_if_due(claim.comparison_id, claim.spec)  # this run may have ended a round of adaptive seeding
    if claim.spec.get("tuning"):
        # this run may have ended a tuning job's search phase: publish the final phase now rather than
        # at the next sweep of the outbox
        with transaction() as session:
            pending = leases.unpublished_runs(session, comparison_id=claim.comparison_id)
        enqueue_runs(pending)


def _run_spec(claim: leases.Claim) -> ComparisonSpec:
    """The spec as this run trains it: its own optimizer params, on the device it was routed to."""
    engine_config.configure(data_root=get_settings().idx_root)  # the root this worker is configured with now
    spec = with_run_params(ComparisonSpec.model_validate(claim.spec), claim.entry_index, claim.optimizer_params)
    return spec if claim.device is None else spec.model_copy(update={"device": claim.device})


def _writer(claim: leases.Claim) -> StepWriter:
    settings = get_settings()
    return StepWriter(
        claim.run_id, claim.attempt, heartbeat_s=min(settings.flush_interval_s, settings.lease_timeout_s / 4)
    )


def _finish_outcome(claim: leases.Claim, outcome: RunOutcome, execution: Execution) -> None:
    """``execution``: how the run actually trained (a member that fell back to training alone says so)."""
    _finish(
        claim,
        outcome.status,
        steps_done=outcome.steps_done,
        final_loss=outcome.final_loss,
        best_loss=outcome.best_loss,
        wall_time_s=outcome.wall_time_s,
        diverged_step=outcome.diverged_step,
        device=outcome.device,
        hardware=hardware.describe(torch.device(outcome.device)),
        execution=execution,
    )
    log.info("run %s %s after %d steps", claim.run_id, outcome.status, outcome.steps_done)


def _claim(run_id: str) -> leases.Claim | None:
    with transaction() as session:
        claim = leases.claim_run(session, run_id, get_settings().lease_timeout_s)
    if claim is None:
        log.info("run %s is finished or held by a live worker; nothing to do", run_id)
    return claim


@celery_app.task(name=TRAIN_TASK)
def train_run(run_id: str) -> str:
    """Train one run with its own params. A second delivery of a run that is finished, or whose
    holder is alive, does nothing."""
    claim = _claim(run_id)
    return "skipped" if claim is None else _train_claimed(claim, _writer(claim))


def _cancelled(run_id: str) -> bool:
    with transaction() as session:
        return session.scalar(select(Run.status).where(Run.id == run_id)) == CANCELLED


def _capped_device(spec: ComparisonSpec) -> bool:
    """Whether the run trains on the CPU, where the data-segment cap measures its memory (CUDA's own
    mappings would count against it, and GPU memory would not)."""
    return spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available())


def _train_claimed(claim: leases.Claim, writer: StepWriter) -> str:
    """Train a claimed run alone; ``writer``, started when the run was claimed, has kept its lease alive.
    The memory budget is checked on the estimate before anything is built, and caps the training."""
    settings = get_settings()
    budget = settings.worker_memory_bytes
    try:
        spec = _run_spec(claim)
        refusal = memory.over_budget(sizing.estimate(spec, claim.entry_index), budget)
        if refusal is not None:
            _finish(claim, FAILED, error=refusal)
            return FAILED
        with memory.data_limit(budget if _capped_device(spec) else None):
            outcome = train(
                spec,
                claim.entry_index,
                claim.seed,
                writer,
                total_steps=claim.steps_total,
                flush_every=settings.flush_every_steps,
                flush_interval_s=settings.flush_interval_s,
                checkpoint_interval_s=settings.checkpoint_interval_s,
                resume=claim.checkpoint,
                stop_requested=lambda: _cancelled(claim.run_id),
            )
        writer.close()
    except leases.LeaseLost:
        log.warning("run %s attempt %d lost its lease; another delivery owns it", claim.run_id, claim.attempt)
        return "lease lost"
    except SoftTimeLimitExceeded:
        limit = settings.soft_time_limit_s(claim.steps_total)
        _finish(claim, FAILED, error=f"exceeded its time limit of {limit:.0f}s (OPTIBENCH_TIME_LIMIT_*)")
        return FAILED
    except Exception as exc:
        log.exception("run %s failed", claim.run_id)
        _finish(claim, FAILED, error=memory.allocation_failure(exc, budget) or f"{type(exc).__name__}: {exc}")
        return FAILED
    finally:
        writer.stop()
    if claim.checkpoint is not None:
        log.info("run %s resumed from its checkpoint", claim.run_id)
    _finish_outcome(claim, outcome, ALONE)
    return outcome.status


def _ensemble_over_budget(claims: list[leases.Claim], budget: int) -> bool:
    try:
        estimate = sizing.estimate(_run_spec(claims[0]), claims[0].entry_index, members=len(claims))
    except Exception:  # the runs alone will fail with the reason
        return True
    return estimate.total > budget


class _LeaseGuard:
    """An ensemble member's sink: a member whose lease was taken over leaves the ensemble (as if
    cancelled) instead of stopping the others."""

    def __init__(self, writer: StepWriter) -> None:
        self.writer, self.lost = writer, False

    def __call__(self, batch) -> bool:
        try:
            return self.writer(batch)
        except leases.LeaseLost:
            self.lost = True
            return False


@celery_app.task(name=ENSEMBLE_TASK)
def train_ensemble_runs(run_ids: list[str]) -> dict[str, str]:
    """Train runs of one comparison that share the problem, the optimizer and the batch size as one
    vectorized ensemble (engine.vectorized), each run under its own lease and writer. Runs another
    delivery holds or finished are left out; a run with a checkpoint to resume from trains alone."""
    settings = get_settings()
    claims = [claim for claim in map(_claim, run_ids) if claim is not None]
    # every claimed run beats its heart from now on, so none goes stale while others train first
    writers = {claim.run_id: _writer(claim) for claim in claims}
    results = {run_id: "skipped" for run_id in run_ids}
    fresh = [c for c in claims if c.checkpoint is None]
    if len(fresh) >= 2 and _ensemble_over_budget(fresh, settings.worker_memory_bytes):
        fresh = []  # stacked they would not fit: one by one, each under the budget on its own
    for claim in claims:
        if claim.checkpoint is not None or len(fresh) < 2:
            results[claim.run_id] = _train_claimed(claim, writers[claim.run_id])
    if len(fresh) < 2:
        return results
    guards = [_LeaseGuard(writers[claim.run_id]) for claim in fresh]
    spec = _run_spec(fresh[0])
    members = [Member(c.entry_index, c.seed, c.optimizer_params) for c in fresh]
    try:
        outcomes = train_ensemble(
            spec,
            members,
            guards,
            total_steps=fresh[0].steps_total,
            flush_every=settings.flush_every_steps,
            flush_interval_s=settings.flush_interval_s,
        )
        for guard in guards:
            try:
                guard.writer.close()
            except leases.LeaseLost:
                guard.lost = True
    except SoftTimeLimitExceeded:
        for claim in fresh:
            _finish(claim, FAILED, error="the ensemble exceeded its time limit (OPTIBENCH_TIME_LIMIT_*)")
        return results | {claim.run_id: FAILED for claim in fresh}
    except Exception as exc:
        log.exception("ensemble of runs %s failed", ", ".join(c.run_id for c in fresh))
        error = memory.allocation_failure(exc, settings.worker_memory_bytes) or f"{type(exc).__name__}: {exc}"
        for claim in fresh:
            _finish(claim, FAILED, error=error)
        return results | {claim.run_id: FAILED for claim in fresh}
    finally:
        for guard in guards:
            guard.writer.stop()
    for claim, guard, outcome in zip(fresh, guards, outcomes):
        if guard.lost:
            results[claim.run_id] = "lease lost"
            continue
        _finish_outcome(claim, outcome, ENSEMBLE)
        results[claim.run_id] = outcome.status
    return results
