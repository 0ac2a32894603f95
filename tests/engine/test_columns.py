"""The step-column registry is the one declaration every consumer reads: a column added there reaches the
recorder, the spec, bulk ingest, the curve metrics, the steps routes and the export without another edit."""

from __future__ import annotations

from typing import get_args

from db import bulk
from db.curves import Metric
from db.models import Step
from engine.columns import EXTRAS, STEP_COLUMNS, STEP_METRICS
from engine.recorder import StepBatch
from engine.spec import Training


def test_every_declared_column_is_a_step_column_of_the_database_and_nothing_else_is() -> None:
    assert [c.name for c in STEP_COLUMNS] == [c.name for c in Step.__table__.columns if c.name != "run_id"]


def test_consumers_read_the_registry() -> None:
    assert bulk.KINDS == {c.name: c.kind for c in STEP_COLUMNS}
    assert set(StepBatch.empty([]).columns()) == {c.name for c in STEP_COLUMNS}
    assert get_args(get_args(Training.model_fields["extras"].annotation)[0]) == EXTRAS
    assert set(STEP_METRICS) <= set(get_args(Metric))
