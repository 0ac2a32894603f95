"""The optibench command."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import typer

from api.auth import is_loopback
from optibench.admin import admin_app
from optibench.settings import get_settings

app = typer.Typer(help="optibench: paired optimizer comparisons as a service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

log = logging.getLogger("optibench")
SHUTDOWN_GRACE_S = 10.0


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to OPTIBENCH_DATABASE_URL."""
    from db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {revision}: {_redact(settings.database_url)}")


def _worker_command(concurrency: int | None) -> list[str]:
    # a distinct node name per process, so several workers on one host (one per GPU) don't clash
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
               "--hostname", f"optibench-{os.getpid()}@%h"]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    return command


@app.command()
def worker(concurrency: int = typer.Option(None, help="training processes; default OPTIBENCH_WORKER_CONCURRENCY")) -> None:
    """Run a Celery worker alone (the team deployment: point it at the shared broker and database)."""
    os.execv(sys.executable, _worker_command(concurrency))


def _recover() -> None:
    """The embedded server owns the only worker, so at start every 'running' run is an orphan of the
    last shutdown: back to the outbox, which is then published (runs are leased, so a duplicate
    message is harmless)."""
    from db import queries
    from db.models import utcnow
    from db.session import transaction
    from worker.sweeper import sweep

    with transaction() as session:
        orphans = queries.requeue_orphans(session, older_than=utcnow())
    if orphans:
        log.info("requeued %d runs interrupted by the last shutdown", len(orphans))
    sweep()


@app.command()
def serve(
    host: str = typer.Option(None, help="default OPTIBENCH_HOST"),
    port: int = typer.Option(None, help="default OPTIBENCH_PORT"),
    with_worker: bool = typer.Option(True, "--with-worker/--no-worker", help="also run a Celery worker"),
) -> None:
    """Run the API and one Celery worker together; Ctrl-C stops both."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    _check_auth(settings, host)
    settings.ensure_data_dir()
    worker_process = None
    if with_worker:
        _recover()
        # its own session: the terminal's Ctrl-C reaches us, and we stop the worker in order
        worker_process = subprocess.Popen(_worker_command(None), start_new_session=True)
        threading.Thread(target=_stop_if_worker_dies, args=(worker_process,), daemon=True).start()
    log.info("optibench on http://%s:%d  (database %s, broker %s)", host, port,
             _redact(settings.database_url), _redact(settings.broker_url))
    try:
        uvicorn.run("api.main:app", host=host, port=port, log_level="info")
    finally:
        if worker_process is not None:
            _stop_worker(worker_process)


def _check_auth(settings, host: str) -> None:
    """Without auth every caller is the local admin: only on a loopback address, for one person."""
    if settings.auth == "required":
        if settings.secret_key is None:
            log.warning("OPTIBENCH_SECRET_KEY is not set: sessions and share links are signed with %s, "
                        "and stop working if that file is lost", settings.data_dir / "secret_key")
        return
    if not is_loopback(host):
        typer.echo(f"refusing to serve on {host} with authentication off: anyone reaching it would act as the "
                   f"local admin. Set OPTIBENCH_AUTH=required (and create keys with `optibench admin "
                   f"create-team`), or serve on 127.0.0.1.", err=True)
        raise typer.Exit(2)
    log.warning("authentication is off (OPTIBENCH_AUTH=off): every request on %s acts as the local admin; "
                "set OPTIBENCH_AUTH=required for a team", host)


def _stop_if_worker_dies(process: subprocess.Popen) -> None:
    code = process.wait()
    if code not in (0, -signal.SIGTERM, -signal.SIGQUIT):
        log.error("the Celery worker exited with %s; stopping the server", code)
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_worker(process: subprocess.Popen) -> None:
    """Warm shutdown first; a run still training after the grace period is cut off and resumes
    from the queue at the next start."""
    for sig, wait_s in ((signal.SIGTERM, SHUTDOWN_GRACE_S), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("worker still running after %s; escalating", sig.name)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url.removeprefix("sqla+")).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


if __name__ == "__main__":
    app()
