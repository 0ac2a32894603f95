"""A comparison's leaderboard and sensitivity: analysis.summary's statistics over the figures
db.figures aggregates in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from analysis import summary
from analysis.summary import Phase
from db.figures import RowFigures
from db.models import Comparison


def summarize(session: Session, comparison: Comparison, phase: Phase = "chosen",
              baseline: str | None = None) -> dict[str, Any]:
    """The leaderboard, sorted by rank, and every other setting paired with the baseline."""
    return summary.summarize(RowFigures(session), comparison, phase, baseline)


sensitivity = summary.sensitivity
