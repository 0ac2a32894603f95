"""Shared fixtures. Two backends: the embedded default (SQLite + SQLite broker) and the team one
(the machine's PostgreSQL + Redis). With CI=true an unreachable service fails the run, never skips."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator

# Before any project import: the Celery app and settings read the environment once.
_SESSION_DIR = tempfile.mkdtemp(prefix="optibench-tests-")
os.environ["OPTIBENCH_DATA_DIR"] = _SESSION_DIR
os.environ.pop("OPTIBENCH_DATABASE_URL", None)
os.environ.pop("OPTIBENCH_BROKER_URL", None)
# The tests' problems are tiny and CI has two cores shared by pytest, the API and the workers: one torch
# thread per process trains them 5-30x faster than two threads contending
os.environ.setdefault("OPTIBENCH_TORCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("OPTIBENCH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OPTIBENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(service: str, error: Exception) -> None:
    message = f"{service} is unreachable: {type(error).__name__}: {error}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the team-deployment suite must run)", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def empty_postgres_database(prefix: str = "optibench_test") -> Iterator[str]:
    """The URL of a new, empty database on the machine's PostgreSQL, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require("PostgreSQL", exc)
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh, migrated database on the machine's PostgreSQL, dropped afterwards."""
    from db.migrate import upgrade
    from db.session import get_engine

    with empty_postgres_database() as url:
        upgrade(url)
        yield url
        get_engine.cache_clear()


@pytest.fixture(scope="session")
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        require("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'optibench.db'}"
    from db.migrate import upgrade

    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """Each test using this runs on both databases."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def use_database(database_url, monkeypatch):
    """Point the in-process settings, engine and sessions at ``database_url``."""
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    monkeypatch.setenv("OPTIBENCH_DATABASE_URL", database_url)
    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()
    yield database_url
    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


@pytest.fixture
def settings_env(monkeypatch):
    """Set OPTIBENCH_* variables for one test; the settings are re-read, and restored afterwards."""
    from optibench.settings import get_settings

    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


#: the folders and modules whose tests start real processes (API servers, Celery workers, brokers, browsers)
PROCESS_TESTS = ("tests/e2e/", "tests/faults/", "tests/web/", "tests/optibench/")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that start real processes share one xdist worker, one at a time, as their timings were set for;
    the in-process tests run on the other."""
    for item in items:
        path = item.path.as_posix()
        if any(part in path for part in PROCESS_TESTS):
            item.add_marker(pytest.mark.xdist_group("processes"))
