"""The optibench command."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optibench.admin import admin_app
from optibench.client import FINISHED, Client, OptibenchError, as_float
from optibench.settings import get_settings
from optibench.status import ComparisonStatus

app = typer.Typer(help="optibench: paired optimizer comparisons as a service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

log = logging.getLogger("optibench")
SHUTDOWN_GRACE_S = 10.0
# `optibench serve` restarts a worker that crashed after 1, 2, 4, 8 s; a fifth crash within the window
# means it cannot run (a broken install, a database it cannot reach): the server stops, exit status 1
WORKER_CRASHES_TO_GIVE_UP = 5
WORKER_CRASH_WINDOW_S = 60.0


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to OPTIBENCH_DATABASE_URL."""
    from db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {revision}: {_redact(settings.database_url)}")


def _worker_command(concurrency: int | None, queues: list[str], name: str = "optibench") -> list[str]:
    # a distinct node name per process, so several workers on one host (one per GPU) don't clash
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--loglevel",
        "INFO",
        "--hostname",
        f"{name}-{os.getpid()}@%h",
        "--queues",
        ",".join(queues),
    ]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    return command


def _local_queues(device: str) -> list[str]:
    """The queues this machine serves: CPU runs, and GPU runs where it has a GPU."""
    import torch

    settings = get_settings()
    kinds = {"cpu": ["cpu"], "gpu": ["cuda"], "auto": ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]}
    return [settings.queue_for(kind) for kind in kinds[device]]


def _gpu_indices(gpus: str) -> list[str]:
    import torch

    if gpus == "all":
        return [str(i) for i in range(torch.cuda.device_count())]
    return [g.strip() for g in gpus.split(",") if g.strip()]


@app.command()
def worker(
    concurrency: int = typer.Option(None, help="training processes; default OPTIBENCH_WORKER_CONCURRENCY"),
    device: str = typer.Option("auto", help="queues to serve: cpu, gpu, or auto (cpu, and gpu where a GPU is seen)"),
    gpus: str = typer.Option(
        None,
        help="'all' or '0,1,...': one GPU worker per GPU, each seeing only its own "
        "(CUDA_VISIBLE_DEVICES), serving the gpu queue one run at a time",
    ),
) -> None:
    """Run Celery workers alone (the team deployment: point them at the shared broker and database)."""
    if device not in ("auto", "cpu", "gpu"):
        raise typer.BadParameter("choose cpu, gpu or auto", param_hint="--device")
    if gpus is None:
        os.execv(sys.executable, _worker_command(concurrency, _local_queues(device)))
    indices = _gpu_indices(gpus)
    if not indices:
        typer.echo("no GPU found (torch.cuda.device_count() is 0); run `optibench worker` for CPU runs", err=True)
        raise typer.Exit(2)
    queue = get_settings().queue_for("cuda")
    processes = [
        subprocess.Popen(
            _worker_command(1, [queue], name=f"optibench-gpu{i}"),
            env={**os.environ, "CUDA_VISIBLE_DEVICES": i},
            start_new_session=True,
        )
        for i in indices
    ]
    log.info("one worker per GPU: %s", ", ".join(f"GPU {i} (pid {p.pid})" for i, p in zip(indices, processes)))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and all(p.poll() is None for p in processes):
        stop.wait(1.0)
    for process in processes:
        _stop_worker(process)
    raise typer.Exit(0 if stop.is_set() else 1)


def _recover() -> None:
    """The embedded server owns the only worker, so at start, and whenever its worker died, every
    'running' run is an orphan: back to the outbox, which is then published (runs are leased, so a
    duplicate message is harmless). On the embedded broker the messages the dead worker had taken
    but not acknowledged are made visible again, as a live worker's shutdown would have done."""
    from db import leases
    from db.models import utcnow
    from db.session import transaction
    from worker.sweeper import sweep

    settings = get_settings()
    if settings.embedded_broker:
        restored = _restore_unacknowledged_messages(settings.broker_url)
        if restored:
            log.info("put back %d messages the last worker had taken but not acknowledged", restored)
    with transaction() as session:
        orphans = leases.requeue_orphans(session, older_than=utcnow())
    if orphans:
        log.info("requeued %d runs interrupted by the last worker's end", len(orphans))
    sweep()


def _restore_unacknowledged_messages(broker_url: str) -> int:
    """kombu's SQLAlchemy transport keeps a delivered message with ``visible = false`` until it is
    acknowledged, and restores it only when its consumer shuts down cleanly; a consumer that was
    killed leaves it hidden for good. Call only when no worker consumes the broker."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(broker_url.removeprefix("sqla+"), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            if not inspect(connection).has_table("kombu_message"):
                return 0
            return connection.execute(
                text("UPDATE kombu_message SET visible = :yes WHERE visible = :no"), {"yes": True, "no": False}
            ).rowcount
    finally:
        engine.dispose()


def _die_with_parent():
    """A preexec_fn by which the kernel SIGKILLs the child when the thread that started it ends, the
    whole process included, even by SIGKILL (Linux PR_SET_PDEATHSIG); None elsewhere. Looked up here,
    in the parent: nothing may be imported between fork and exec."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    return lambda: prctl(1, signal.SIGKILL)


class WorkerSupervisor:
    """`optibench serve`'s Celery worker, kept running by a thread of the server, which started it
    and outlives it: the worker dies with the server, by whatever signal (PR_SET_PDEATHSIG). A worker
    that lost a pool process (POOL_PROCESS_LOST) is replaced at once; one that crashed, after a
    backoff of OPTIBENCH_WORKER_RESTART_BACKOFF_S (1 s), doubled at each crash; the fifth crash within
    WORKER_CRASH_WINDOW_S stops the server (``gave_up``). Before a new worker starts, ``_recover``
    hands back what the dead one held."""

    def __init__(self, command: list[str], recover) -> None:
        self.command, self.recover = command, recover
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.gave_up = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="optibench-worker-supervisor", daemon=True)

    def start(self) -> WorkerSupervisor:
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            # its own session: the terminal's Ctrl-C reaches us, and we stop the worker in order
            self.process = subprocess.Popen(self.command, start_new_session=True, preexec_fn=_die_with_parent())
            return self.process

    def _supervise(self) -> None:
        from worker.celery_app import POOL_PROCESS_LOST

        crashes: deque[float] = deque()
        while (process := self._spawn()) is not None:
            code = process.wait()
            if self._stopping.is_set():
                return
            if code == POOL_PROCESS_LOST:
                delay = 0.0
                log.warning("the Celery worker lost a pool process; starting a fresh worker")
            else:
                now = time.monotonic()
                crashes.append(now)
                while now - crashes[0] > WORKER_CRASH_WINDOW_S:
                    crashes.popleft()
                if len(crashes) >= WORKER_CRASHES_TO_GIVE_UP:
                    log.error(
                        "the Celery worker exited with %s, crashing %d times in %.0f s; stopping the server",
                        code,
                        len(crashes),
                        WORKER_CRASH_WINDOW_S,
                    )
                    self.gave_up = True
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                delay = get_settings().worker_restart_backoff_s * 2.0 ** (len(crashes) - 1)
                log.error("the Celery worker exited with %s; starting a new one in %g s", code, delay)
            if self._stopping.wait(delay):
                return
            try:
                self.recover()
            except Exception as exc:  # the watchdog requeues its runs within a lease anyway
                log.warning("recovering the dead worker's runs failed: %s: %s", type(exc).__name__, exc)
            self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None:
            _stop_worker(process)
        self._thread.join(SHUTDOWN_GRACE_S)


@app.command()
def serve(
    host: str = typer.Option(None, help="default OPTIBENCH_HOST"),
    port: int = typer.Option(None, help="default OPTIBENCH_PORT"),
    with_worker: bool = typer.Option(True, "--with-worker/--no-worker", help="also run a Celery worker"),
) -> None:
    """Run the API and one Celery worker together; Ctrl-C stops both."""
    from optibench.serving import run_api

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    _check_auth(settings, host)
    settings.ensure_data_dir()
    # what docker, systemd and every process manager send to stop a service: a Ctrl-C, so that the
    # worker is stopped below (uvicorn re-raises the signal it caught; by default SIGTERM would end
    # the process on the spot, leaving the worker behind)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    supervisor = None
    try:
        if with_worker:
            _recover()
            # on the embedded broker the server owns the only worker, so a dead worker's runs are its
            # orphans; elsewhere other workers may hold runs, which the watchdog reaps if they die
            supervisor = WorkerSupervisor(
                _worker_command(None, _local_queues("auto")), _recover if settings.embedded_broker else lambda: None
            ).start()
        log.info(
            "optibench on http://%s:%d  (database %s, broker %s)",
            host,
            port,
            _redact(settings.database_url),
            _redact(settings.broker_url),
        )
        run_api(host, port, settings.api_workers)
    except KeyboardInterrupt:
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
    if supervisor is not None and supervisor.gave_up:
        raise typer.Exit(1)


def _check_auth(settings, host: str) -> None:
    """Without auth every caller is the local admin: only on a loopback address, for one person."""
    from services.keys import is_loopback

    if settings.auth == "required":
        if settings.secret_key is None:
            log.warning(
                "OPTIBENCH_SECRET_KEY is not set: sessions and share links are signed with %s, "
                "and stop working if that file is lost",
                settings.data_dir / "secret_key",
            )
        return
    if not is_loopback(host):
        typer.echo(
            f"refusing to serve on {host} with authentication off: anyone reaching it would act as the "
            f"local admin. Set OPTIBENCH_AUTH=required (and create keys with `optibench admin "
            f"create-team`), or serve on 127.0.0.1.",
            err=True,
        )
        raise typer.Exit(2)
    log.warning(
        "authentication is off (OPTIBENCH_AUTH=off): every request on %s acts as the local admin; "
        "set OPTIBENCH_AUTH=required for a team",
        host,
    )


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


# --- the API's client: submit, ls, show, export, cancel -----------------------------------------
# Client commands import only the client and rich, so they answer without loading the server's stack.

URL = typer.Option(None, "--url", help="the server; default $OPTIBENCH_URL, else http://127.0.0.1:8000")
KEY = typer.Option(None, "--key", help="an API key; default $OPTIBENCH_API_KEY (better: an option shows in `ps`)")
#: rows of the history `ls` shows by default
LS_LIMIT = 20


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


def _console(stderr: bool = False) -> Console:
    # names, labels and errors are the users' text: "[b]" in a name is not rich markup
    console = Console(stderr=stderr, markup=False)
    if not console.is_terminal:
        console.width = 1000  # piped: never wrap a table row, so each row stays one greppable line
    return console


@contextmanager
def _api(url: str | None, key: str | None) -> Iterator[Client]:
    """The client; an API error becomes a message and the exit code: 2 for invalid input, else 1."""
    try:
        with Client(url, key) as client:
            yield client
    except OptibenchError as exc:
        if exc.fields:
            typer.echo(f"invalid request (HTTP {exc.status}):", err=True)
            for path, message in exc.fields:
                typer.echo(f"  {path}: {message}", err=True)
            raise typer.Exit(2) from None
        hint = {
            None: " (is the server running? set OPTIBENCH_URL or --url)",
            401: " (set OPTIBENCH_API_KEY or --key to a valid key)",
        }.get(exc.status, "")
        typer.echo(f"error: {exc}{hint}", err=True)
        raise typer.Exit(1) from None


def _number(value: float | str | None) -> str:
    number = as_float(value)
    return "-" if number is None else f"{number:.4g}"


def _interval(mean: float | str | None, low: float | str | None, high: float | str | None) -> str:
    return _number(mean) + (f" [{_number(low)}, {_number(high)}]" if low is not None else "")


def _when(moment: str | None) -> str:
    return datetime.fromisoformat(moment).astimezone().strftime("%Y-%m-%d %H:%M") if moment else "-"


def _progress(comparison: dict) -> str:
    progress = comparison["progress"]
    percent = 100 * progress["steps_done"] / progress["steps_total"] if progress["steps_total"] else 100
    return f"{percent:.0f}% ({progress['runs_done']}/{progress['runs_total']} runs)"


def _time_to_target(row: dict) -> str:
    reach = row["time_to_target"]
    if reach["steps"] is None:
        return f"never (0/{reach['of']})"
    # an ensemble's members share its wall time: no member's own time exists
    seconds = "shared ensemble time" if row["timed_together"] else f"{_number(reach['seconds'])} s"
    return f"{_number(reach['steps'])} steps, {seconds} ({reach['reached']}/{reach['of']})"


def _loss_interval(loss: dict) -> str:
    """The geometric mean and its interval on the log scale while every loss is positive, else the mean's."""
    center = loss["geometric_mean"] if loss["ci_method"] == "log_t" else loss["mean"]
    return _interval(center, loss["ci_low"], loss["ci_high"])


def _with_holm(raw: float | str | None, adjusted: float | str | None) -> str:
    return "-" if raw is None else f"{_number(raw)} ({_number(adjusted)})"


def _budget_table(summary: dict) -> Table:
    """Each setting's rank (and mean loss) at 25, 50, 75 and 100 % of its steps; ↕ where it moved."""
    changes = "the ranking changes" if summary["ranking_changes"] else "the same ranking"
    table = Table(title=f"rank (mean loss) at each budget: {changes}")
    table.add_column("label")
    for budget in summary["budgets"]:
        table.add_column(f"{100 * budget['fraction']:.0f} %", justify="right")
    ranks = [{row["label"]: row for row in budget["rows"]} for budget in summary["budgets"]]
    for label in ranks[-1]:
        cells = []
        for i, rows in enumerate(ranks):
            row = rows[label]
            moved = i > 0 and row["rank"] != ranks[i - 1][label]["rank"]
            cells.append(f"{row['rank'] or '-'} ({_number(row['mean_loss'])}){' ↕' if moved else ''}")
        table.add_row(label, *cells)
    return table


def _leaderboard_tables(summary: dict) -> list[Table]:
    """The leaderboard, the paired tests against the baseline (p-values raw and Holm-adjusted) and the
    ranking at each budget (docs/statistics.md)."""
    board = Table(
        title=f"leaderboard: final loss, target loss {_number(summary['target_loss'])} "
        f"({summary['target_loss_source']})"
    )
    for header in (
        "rank",
        "label",
        "seeds (diverged)",
        "final loss [95% CI]",
        "best final",
        "time to target",
        "steps/s",
    ):
        board.add_column(header, justify="left" if header == "label" else "right")
    for row in summary["rows"]:
        loss = row["final_loss"]
        board.add_row(
            str(row["rank"] or "-"),
            row["label"],
            f"{row['n_seeds']} ({row['n_diverged']})",
            _loss_interval(loss),
            _number(loss["best"]),
            _time_to_target(row),
            _number(row["steps_per_s"]) + (" (ensemble)" if row["timed_together"] else ""),
        )
    tables = [board]
    if summary["paired"]:
        paired = Table(title=f"paired on seeds, final loss minus {summary['baseline']}'s")
        headers = ("label", "pairs", "mean difference [95% CI]", "t-test p (Holm)", "Wilcoxon p (Holm)", "P(lower)")
        for header in headers:
            paired.add_column(header, justify="left" if header == "label" else "right")
        for pair in summary["paired"]:
            paired.add_row(
                pair["label"],
                str(pair["n_pairs"]),
                _interval(pair["mean_diff"], pair["ci_low"], pair["ci_high"]),
                _with_holm(pair["t_pvalue"], pair["t_pvalue_holm"]),
                _with_holm(pair["wilcoxon_pvalue"], pair["wilcoxon_pvalue_holm"]),
                _interval(pair["prob_improvement"], pair["prob_improvement_ci_low"], pair["prob_improvement_ci_high"]),
            )
        tables.append(paired)
    if summary["budgets"] and any(row["n_finished"] for row in summary["rows"]):
        tables.append(_budget_table(summary))
    if summary.get("adaptive") and summary["adaptive"]["pairs"]:
        tables.append(_adaptive_table(summary["adaptive"]))
    return tables


def _adaptive_table(adaptive: dict) -> Table:
    """Adaptive seeding's decision per pair: the seeds it took, its repeated interval, and |t| against the
    boundary of its deciding (or last) look (docs/statistics.md)."""
    state = "done" if adaptive["done"] else f"round {adaptive['round']}"
    if adaptive["stopped"]:
        state += f", stopped by a {adaptive['stopped']} run"
    table = Table(
        title=f"adaptive seeding ({state}): against {adaptive['baseline']}, "
        f"alpha {_number(adaptive['alpha_per_pair'])} per pair (Bonferroni)"
    )
    for header in ("label", "decision", "seeds", r"mean difference \[repeated CI]", "|t| / boundary"):
        table.add_column(header, justify="right" if header in ("seeds", "|t| / boundary") else "left")
    for pair in adaptive["pairs"]:
        statistic = pair["statistic"]
        table.add_row(
            pair["label"],
            pair["decision"] + (f" ({pair['reason']})" if pair["reason"] else ""),
            str(pair["seeds"]),
            _interval(pair["mean_diff"], pair["ci_low"], pair["ci_high"])
            + (f" ({pair['scale']})" if pair["scale"] else ""),
            "-" if statistic is None else f"{_number(abs(statistic))} / {_number(pair['boundary'])}",
        )
    return table


def _load_spec(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        typer.echo(f"{path}: not a JSON spec: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(spec, dict):
        typer.echo(f"{path}: a spec is a JSON object", err=True)
        raise typer.Exit(2)
    return spec


def _wait_with_progress(client: Client, comparison: dict) -> dict:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TextColumn("{task.fields[runs]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=_console(stderr=True)) as bar:
        task = bar.add_task(comparison["name"], total=comparison["progress"]["steps_total"], runs="")

        def show(current: dict) -> None:
            progress = current["progress"]
            bar.update(
                task,
                total=progress["steps_total"],
                completed=progress["steps_done"],
                runs=f"{progress['runs_done']}/{progress['runs_total']} runs done, {current['status']}",
            )

        return client.wait(comparison["id"], on_progress=show)


@app.command()
def submit(
    spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="a comparison spec (JSON)"),
    wait: bool = typer.Option(False, "--wait", help="show the progress until it finishes, then the leaderboard"),
    idempotency_key: str = typer.Option(
        None, help="the same key and spec return the same comparison; default: a fresh key"
    ),
    url: str = URL,
    key: str = KEY,
) -> None:
    """Submit a comparison and print its id.

    With --wait: a progress bar, then the leaderboard; exit code 0 if it succeeded, 1 if it failed or
    was cancelled. Ctrl-C stops waiting and leaves the comparison running."""
    with _api(url, key) as client:
        comparison = client.submit(_load_spec(spec), idempotency_key)
        comparison_id = comparison["id"]
        typer.echo(comparison_id)
        if not wait:
            return
        try:
            comparison = _wait_with_progress(client, comparison)
        except KeyboardInterrupt:
            typer.echo(
                f"stopped waiting; comparison {comparison_id} goes on (`optibench show {comparison_id}`, "
                f"`optibench cancel {comparison_id}`)",
                err=True,
            )
            raise typer.Exit(130) from None
        _console().print(*_leaderboard_tables(client.summary(comparison_id)))
    if comparison["status"] != "succeeded":
        typer.echo(f"comparison {comparison_id} {comparison['status']}", err=True)
        raise typer.Exit(1)


class SuiteBudget(StrEnum):
    full = "full"
    reduced = "reduced"


@app.command()
def suite(
    name: str = typer.Argument(..., help="the suite's name: lite, standard"),
    version: str = typer.Argument(..., help="its version: v1"),
    optimizers: Path = typer.Argument(
        None, exists=True, dir_okay=False, help="a JSON list of optimizer entries to submit; none: only show the scores"
    ),
    budget: SuiteBudget = typer.Option(SuiteBudget.full, help="reduced: a few steps, scored apart (smoke runs)"),
    workload: list[str] = typer.Option(None, help="submit to these workloads only (repeat it); default: all"),
    url: str = URL,
    key: str = KEY,
) -> None:
    """Run optimizers against a suite (one comparison per workload, beside the suite's baselines), wait for every
    workload, then print the suite's ranking: score, score by steps and the steps to target per workload."""
    with _api(url, key) as client:
        if optimizers is not None:
            entries = json.loads(optimizers.read_text())
            submission = {"optimizers": entries, "budget": budget.value} | ({"workloads": workload} if workload else {})
            made = client.submit_suite(name, version, submission)
            for comparison in made["comparisons"]:
                typer.echo(f"{comparison['workload']}: {comparison['comparison']['id']}", err=True)
                client.wait(comparison["comparison"]["id"])
        scored = client.suite(name, version, budget.value)
    table = Table(title=f"{scored['suite']} ({budget.value} budget)")
    for column in ("#", "optimizer", "score", "score (steps)", *(w["name"] for w in scored["workloads"])):
        table.add_column(column)
    for rank, row in enumerate(scored["optimizers"], 1):
        reached = [
            "-" if w["steps"] is None else f"{w['steps']:.0f} ({w['reached_seeds']}/{w['seeds']})"
            for w in row["workloads"]
        ]
        table.add_row(str(rank), row["label"], f"{row['score']:.3f}", f"{row['score_steps']:.3f}", *reached)
    _console().print(table)


@app.command("ls")
def list_comparisons(
    status: ComparisonStatus = typer.Option(None, help="only comparisons in this status"),
    tag: str = typer.Option(None, help="only comparisons with this tag"),
    optimizer: str = typer.Option(None, help="only comparisons with an entry of this optimizer (registry name)"),
    model: str = typer.Option(None, help="only comparisons training this model"),
    dataset: str = typer.Option(None, help="only comparisons on this dataset"),
    function: str = typer.Option(None, help="only comparisons minimising this test function"),
    q: str = typer.Option(None, "--name", help="only comparisons whose name contains this, in any case"),
    limit: int = typer.Option(LS_LIMIT, min=1, help="at most this many"),
    url: str = URL,
    key: str = KEY,
) -> None:
    """The team's comparisons, newest first; every filter given must hold."""
    table = Table()
    for header in ("id", "name", "status", "progress", "created", "submitted by"):
        table.add_column(header, no_wrap=header == "id")
    with _api(url, key) as client:
        found = client.comparisons(
            limit,
            page_size=min(limit, 500),
            status=status and status.value,
            tag=tag,
            optimizer=optimizer,
            model=model,
            dataset=dataset,
            function=function,
            q=q,
        )
        for comparison in found:
            table.add_row(
                comparison["id"],
                comparison["name"],
                comparison["status"],
                _progress(comparison),
                _when(comparison["created_at"]),
                comparison["submitted_by"] or "-",
            )
    _console().print(table)


@app.command()
def show(comparison_id: str, url: str = URL, key: str = KEY) -> None:
    """A comparison: its header, its runs and, once finished, its leaderboard."""
    console = _console()
    with _api(url, key) as client:
        comparison = client.comparison(comparison_id)
        header = Table.grid(padding=(0, 2))
        for name, value in (
            ("name", comparison["name"]),
            ("id", comparison["id"]),
            ("status", comparison["status"]),
            ("progress", _progress(comparison)),
            ("created", _when(comparison["created_at"])),
            ("finished", _when(comparison["finished_at"])),
            ("submitted by", comparison["submitted_by"] or "-"),
            ("tags", ", ".join(comparison["tags"]) or "-"),
            ("note", comparison["note"] or "-"),
        ):
            header.add_row(name, value)
        runs = Table(title="runs")
        for column in ("label", "seed", "status", "steps", "final loss", "best loss", "wall time s", "run id"):
            runs.add_column(column, no_wrap=column == "run id")
        for run in comparison["runs"]:
            runs.add_row(
                run["label"],
                str(run["seed"]),
                run["status"] + (f": {run['error']}" if run["error"] else ""),
                f"{run['steps_done']}/{run['steps_total']}",
                _number(run["final_loss"]),
                _number(run["best_loss"]),
                _number(run["wall_time_s"]),
                run["id"],
            )
        console.print(header, runs)
        if comparison["status"] in FINISHED:
            console.print(*_leaderboard_tables(client.summary(comparison_id)))


@app.command()
def export(
    comparison_id: str,
    format: ExportFormat = typer.Option(ExportFormat.csv, "--format", help="csv or parquet"),
    output: Path = typer.Option(None, "--output", "-o", help="default: comparison-ID.FORMAT"),
    url: str = URL,
    key: str = KEY,
) -> None:
    """Write every step of every run to a file, streamed (docs/curves.md has the columns)."""
    output = output or Path(f"comparison-{comparison_id}.{format.value}")
    with _api(url, key) as client:
        client.export(comparison_id, format.value, output)
    typer.echo(f"wrote {output} ({output.stat().st_size} bytes)")


@app.command()
def cancel(comparison_id: str, url: str = URL, key: str = KEY) -> None:
    """Cancel a comparison's unfinished runs; running ones stop at their next flush."""
    with _api(url, key) as client:
        comparison = client.cancel(comparison_id)
    typer.echo(f"comparison {comparison['id']} {comparison['status']}: {_progress(comparison)}")


@app.command()
def sync(
    spool_dir: Path = typer.Option(
        None, "--spool-dir", help="default $OPTIBENCH_SPOOL_DIR, else ~/.cache/optibench/spool"
    ),
    url: str = URL,
    key: str = KEY,
) -> None:
    """Send the rows (and finishes) of SDK runs that a killed or offline process left in the spool."""
    from optibench import sdk  # torch and the engine: only this command needs them

    with _api(url, key) as client:
        runs = sdk.sync(client, spool_dir)
    for run in runs:
        typer.echo(f"run {run['id']} {run['status']}: {run['steps_done']} steps")
    if not runs:
        typer.echo("nothing to sync")


if __name__ == "__main__":
    app()
