"""Celery tasks. They take ids, re-read state from the database, and are safe to run twice."""

from __future__ import annotations

import logging

import torch
from celery.exceptions import SoftTimeLimitExceeded

from db import queries
from db.models import FAILED
from db.session import transaction
from engine import hardware
from engine.spec import ComparisonSpec
from engine.sweeps import with_run_params
from engine.training import train
from optibench.settings import get_settings
from worker.celery_app import TRAIN_TASK, celery_app
from worker.dispatch import enqueue_runs
from worker.writer import StepWriter

log = logging.getLogger(__name__)


def _finish(claim: queries.Claim, status: str, **outcome) -> None:
    with transaction() as session:
        queries.finish_run(session, claim.run_id, claim.attempt, status, **outcome)
    if claim.spec.get("tuning"):
        # this run may have ended a tuning job's search phase: publish the final phase now rather than
        # at the next sweep of the outbox
        with transaction() as session:
            pending = queries.unpublished_runs(session, comparison_id=claim.comparison_id)
        enqueue_runs(pending)


@celery_app.task(name=TRAIN_TASK)
def train_run(run_id: str) -> str:
    """Train one run with its own params. A second delivery of a run that is finished, or whose
    holder is alive, does nothing."""
    settings = get_settings()
    with transaction() as session:
        claim = queries.claim_run(session, run_id, settings.lease_timeout_s)
    if claim is None:
        log.info("run %s is finished or held by a live worker; nothing to do", run_id)
        return "skipped"

    writer = StepWriter(run_id, claim.attempt, heartbeat_s=min(settings.flush_interval_s, settings.lease_timeout_s / 4))
    try:
        spec = with_run_params(ComparisonSpec.model_validate(claim.spec), claim.entry_index, claim.optimizer_params)
        if claim.device is not None:  # train where the run was routed
            spec = spec.model_copy(update={"device": claim.device})
        outcome = train(
            spec, claim.entry_index, claim.seed, writer, total_steps=claim.steps_total,
            flush_every=settings.flush_every_steps, flush_interval_s=settings.flush_interval_s,
            checkpoint_interval_s=settings.checkpoint_interval_s, resume=claim.checkpoint,
        )
        writer.close()
    except queries.LeaseLost:
        log.warning("run %s attempt %d lost its lease; another delivery owns it", run_id, claim.attempt)
        return "lease lost"
    except SoftTimeLimitExceeded:
        limit = settings.soft_time_limit_s(claim.steps_total)
        _finish(claim, FAILED, error=f"exceeded its time limit of {limit:.0f}s (OPTIBENCH_TIME_LIMIT_*)")
        return FAILED
    except Exception as exc:
        log.exception("run %s failed", run_id)
        _finish(claim, FAILED, error=f"{type(exc).__name__}: {exc}")
        return FAILED
    finally:
        writer.stop()

    _finish(claim, outcome.status, steps_done=outcome.steps_done, final_loss=outcome.final_loss,
            best_loss=outcome.best_loss, wall_time_s=outcome.wall_time_s, diverged_step=outcome.diverged_step,
            device=outcome.device, hardware=hardware.describe(torch.device(outcome.device)))
    if claim.checkpoint is not None:
        log.info("run %s resumed from its checkpoint", run_id)
    log.info("run %s %s after %d steps", run_id, outcome.status, outcome.steps_done)
    return outcome.status
