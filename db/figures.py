"""What the dashboards draw besides curves, computed in the database: sampled points of a run's path
(function problems) and a histogram of step times. Neither sends every step row to Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Double, case, func, literal, select
from sqlalchemy.orm import Session

from db.models import Step


@dataclass(frozen=True)
class PathPoint:
    step: int
    #: the point before the update of this step
    x: list[float]
    #: f(x)
    loss: float


def path_points(session: Session, run_id: str, steps: Sequence[int]) -> list[PathPoint]:
    """The run's rows at these steps (primary-key lookups), in step order."""
    rows = session.execute(select(Step.step, Step.x, Step.loss)
                           .where(Step.run_id == run_id, Step.step.in_(steps), Step.x.is_not(None))
                           .order_by(Step.step))
    return [PathPoint(step, x, loss) for step, x, loss in rows]


@dataclass(frozen=True)
class Histogram:
    #: bins + 1 edges, in ms, log-spaced: step times are skewed, a slow first step is common
    edges: list[float]
    #: per run id, the count in each bin
    counts: dict[str, list[int]]


def step_time_histogram(session: Session, run_ids: Sequence[str], bins: int) -> Histogram:
    """One set of bins for all the runs' step times, from the fastest step to the slowest; a value
    falls in the bin whose lower edge it reaches (the slowest in the last). Two aggregate queries."""
    positive = (Step.run_id.in_(run_ids), Step.step_time_ms > 0)
    low, high = session.execute(select(func.min(Step.step_time_ms), func.max(Step.step_time_ms)).where(*positive)).one()
    if low is None:
        return Histogram(edges=[], counts={})
    edges = np.geomspace(low, high, bins + 1) if high > low else np.array([low, high])
    inner = edges[1:-1]
    index = case(*((Step.step_time_ms < literal(float(edge), Double()), i) for i, edge in enumerate(inner)),
                 else_=len(edges) - 2) if len(inner) else literal(0)
    counts = {run_id: [0] * (len(edges) - 1) for run_id in run_ids}
    for run_id, i, n in session.execute(select(Step.run_id, index.label("bin"), func.count())
                                        .where(*positive).group_by(Step.run_id, index)):
        counts[run_id][i] = n
    return Histogram(edges=[low, *inner.tolist(), high], counts=counts)
