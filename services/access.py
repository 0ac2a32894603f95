"""Who may see what: a team's comparisons and runs, and cancelling them. Another team's, a deleted and
a missing one all look missing (NotFound, a 404 in the API)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db import history, leases
from db.models import Comparison, Run


class NotFound(LookupError):
    """What was asked for does not exist for this team; ``str()`` says what."""


class InvalidQuery(ValueError):
    """A read's parameter that cannot be answered (in the API, a 422 at ``("query", field)``)."""

    def __init__(self, field: str, message: str, value: object) -> None:
        super().__init__(message)
        self.field, self.value = field, value


def comparison(session: Session, comparison_id: str, team_id: str) -> Comparison:
    found = history.get_comparison(session, comparison_id, team_id)
    if found is None:
        raise NotFound(f"comparison {comparison_id!r} not found")
    return found


def run(session: Session, run_id: str, team_id: str) -> Run:
    found = history.get_run(session, run_id, team_id)
    if found is None:
        raise NotFound(f"run {run_id!r} not found")
    return found


def cancel_comparison(session: Session, team_id: str, comparison_id: str) -> Comparison:
    """Cancel every unfinished run of the team's comparison and commit; returns it as it is now.
    Queued runs stop at once, running ones at their next flush; recorded rows are kept."""
    comparison(session, comparison_id, team_id)
    leases.cancel(session, comparison_id=comparison_id)
    session.commit()
    session.expire_all()
    return comparison(session, comparison_id, team_id)


def cancel_run(session: Session, team_id: str, run_id: str) -> Run:
    """``cancel_comparison`` for one of the team's runs."""
    run(session, run_id, team_id)
    leases.cancel(session, run_id=run_id)
    session.commit()
    session.expire_all()
    return run(session, run_id, team_id)
