"""A comparison's leaderboard and sensitivity: analysis.summary's statistics over the figures
db.figures aggregates in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from analysis import summary
from analysis.summary import AnalysisInputError, Phase
from db.figures import RowFigures
from db.models import Comparison
from services.access import InvalidQuery


def summarize(
    session: Session, comparison: Comparison, phase: Phase = "chosen", baseline: str | None = None
) -> dict[str, Any]:
    """The leaderboard, sorted by rank, and every other setting paired with the baseline."""
    try:
        result = summary.summarize(RowFigures(session), comparison, phase, baseline)
    except AnalysisInputError as exc:
        raise InvalidQuery(exc.field, str(exc), baseline) from exc
    return {**result, "adaptive": comparison.adaptive}


def sensitivity(comparison: Comparison, param: str) -> dict[str, Any]:
    """The final loss against the values of the swept hyperparameter ``param``, per optimizer entry."""
    try:
        return summary.sensitivity(comparison, param)
    except AnalysisInputError as exc:
        raise InvalidQuery(exc.field, str(exc), param) from exc
