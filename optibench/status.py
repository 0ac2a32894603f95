"""The one vocabulary of run and comparison statuses, shared by the database, the API, the CLI and the
client. A leaf module (nothing but the standard library), so the light client can import it."""

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"


class ComparisonStatus(StrEnum):
    """A comparison's status follows from its runs' (db.comparisons.comparison_status): never 'diverged'."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: a run in one of these has ended and will not change any more
TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.CANCELLED})
#: a run in one of these trained to its end (a diverged run is cut at its divergence): it counts in the statistics
TRAINED_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.DIVERGED})
#: a comparison in one of these will not change any more
TERMINAL_COMPARISON = frozenset({ComparisonStatus.SUCCEEDED, ComparisonStatus.FAILED, ComparisonStatus.CANCELLED})
