from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from db import workers
from db.session import get_engine, new_session
from optibench.settings import get_settings
from worker.celery_app import celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def _check_database() -> str:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
    return "ok"


def _check_broker() -> str:
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _queues() -> dict[str, dict[str, int]]:
    """How many live workers consume each queue: the deployment's cpu and gpu queues always, and any
    other a worker consumes."""
    settings = get_settings()
    with new_session(autocommit=True) as session:
        served = workers.live_queues(session, settings)
    names = dict.fromkeys([settings.queue_for("cpu"), settings.queue_for("cuda"), *sorted(served)])
    return {name: {"workers": served[name]} for name in names}


@router.get("/readyz")
def readyz() -> JSONResponse:
    """Readiness: the database and the broker both answer; 503 naming the one that does not. ``queues``
    says how many live workers consume each queue: a queue without one is reported, not a 503, since
    the API serves and queues runs without workers (and a CPU-only deployment never has a GPU worker)."""
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body: dict = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["database"] == "ok":
        try:
            body["queues"] = _queues()
        except Exception:  # the database went away since the check: the next probe says so
            pass
    return JSONResponse(body, status_code=200 if ready else 503)
