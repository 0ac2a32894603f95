"""Vectorized ensembles through the public surface: a sweep's runs go out as one ensemble task on a
real broker, the task trains them to the rows one-by-one training gives, and is safe to run twice."""

from __future__ import annotations

import base64
import copy
import json

import numpy as np
import pytest

from db import comparisons
from db.models import Run, Step
from db.session import transaction
from engine.spec import ComparisonSpec
from worker import dispatch
from worker.celery_app import ENSEMBLE_TASK, TRAIN_TASK
from worker.tasks import train_ensemble_runs, train_run

SWEEP = {
    "name": "ensemble sweep",
    "problem": {"function": {"name": "rosenbrock"}},
    "training": {"steps": 150},
    "optimizers": [{"name": "adam", "sweep": {"lr": [0.001, 0.01, 0.05]}}, {"name": "lbfgs", "params": {"lr": 0.5}}],
    "seeds": [0, 1],
    "device": "cpu",
    "dtype": "float64",
    "reuse": False,
}


def _create(spec: dict) -> tuple[ComparisonSpec, list[Run]]:
    validated = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        comparison = comparisons.create_comparison(session, validated.model_dump(mode="json"), 150)
        session.expunge_all()
        return validated, comparison.runs


def _rows(run_id: str) -> np.ndarray:
    with transaction() as session:
        return np.array(
            session.execute(
                Step.__table__.select()
                .with_only_columns(Step.step, Step.loss, Step.lr)
                .where(Step.run_id == run_id)
                .order_by(Step.step)
            ).all(),
            dtype=float,
        )


def _published(broker) -> list[tuple[str, list]]:
    """(task name, first argument) of each message waiting on the cpu queue, whatever its priority."""
    messages = [json.loads(m) for m in broker.messages("cpu")]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0][0]) for m in messages]


def test_a_sweep_goes_out_as_one_ensemble_and_the_rest_alone(redis_dispatch):
    spec, runs = _create(SWEEP)
    assert dispatch.enqueue_new_runs(spec, runs) == 8
    published = _published(redis_dispatch)
    adam = {r.id for r in runs if r.optimizer_name == "adam"}
    assert sorted(task for task, _ in published) == [ENSEMBLE_TASK, TRAIN_TASK, TRAIN_TASK]
    assert {tuple(sorted(arg)) for task, arg in published if task == ENSEMBLE_TASK} == {tuple(sorted(adam))}


@pytest.mark.parametrize("optimizer", ["adam", "pytorch_optimizer.lion", "pytorch_optimizer.adabelief"])
def test_the_ensemble_task_trains_what_one_by_one_training_gives(use_database, optimizer: str):
    """By a rule (adam), stacked (the library's Lion) and one group per member (the library's AdaBelief)."""
    sweep = copy.deepcopy(SWEEP)
    sweep["optimizers"][0]["name"] = optimizer
    _, runs = _create(sweep)
    _, reference = _create(sweep)
    adam = [r for r in runs if r.optimizer_name == optimizer]
    statuses = train_ensemble_runs.apply(args=[[r.id for r in adam]]).get()
    assert statuses == {r.id: "succeeded" for r in adam}
    for run, alone in zip(adam, (r for r in reference if r.optimizer_name == optimizer)):
        assert train_run.apply(args=[alone.id]).get() == "succeeded"
        together, by_itself = _rows(run.id), _rows(alone.id)
        assert together.shape == by_itself.shape == (150, 3)
        np.testing.assert_allclose(together, by_itself, rtol=1e-10, atol=0)
        with transaction() as session:
            stored, expected = session.get(Run, run.id), session.get(Run, alone.id)
            assert stored.status == "succeeded" and stored.final_loss == pytest.approx(expected.final_loss, rel=1e-10)
            assert stored.hardware["torch"]
    assert train_ensemble_runs.apply(args=[[r.id for r in adam]]).get() == {r.id: "skipped" for r in adam}
