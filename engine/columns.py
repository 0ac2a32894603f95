"""Every per-step column, declared once: the recorder, the spec's ``training.extras``, bulk ingest, the
curve metrics, the steps routes and the export all read this table. A new per-step metric is one row here
(and, being a new database column, one in ``db.models.Step`` with its migration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StepColumn:
    name: str
    #: how it is stored and sent to the database (``db.columnar.KINDS``); 'faithful' keeps NaN apart from NULL
    kind: Literal["int4", "float8", "faithful", "text"]
    #: recorded only when the spec's ``training.extras`` asks for it
    extra: bool = False
    #: a metric the curve routes plot
    curve: bool = False


STEP_COLUMNS = (
    StepColumn("step", "int4"),
    StepColumn("epoch", "int4"),
    StepColumn("loss", "faithful", curve=True),  # the batch's, before the update
    StepColumn("time_s", "float8"),  # wall time since training began, at the end of the step
    StepColumn("step_time_ms", "float8", curve=True),
    StepColumn("lr", "float8", curve=True),  # the rate used
    StepColumn("x", "text"),  # function problems: the point before the update, one JSON list per step
    StepColumn("grad_norm", "faithful", extra=True, curve=True),  # global L2 norm of the gradient
    StepColumn("update_norm", "faithful", extra=True, curve=True),  # global L2 norm of the update
)
#: the number columns, in order: what the steps routes and the export send for every row (``x`` is apart)
NUMBER_COLUMNS = tuple(c.name for c in STEP_COLUMNS if c.name != "x")
EXTRAS = tuple(c.name for c in STEP_COLUMNS if c.extra)
STEP_METRICS = tuple(c.name for c in STEP_COLUMNS if c.curve)
Extra = Literal[EXTRAS]  # type: ignore[valid-type]
