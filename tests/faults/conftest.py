"""Fixtures for fault tests: each test gets its own Redis and its own PostgreSQL cluster (real
processes, started here and always stopped), plus the env for the API and workers it starts.

Without redis-server or the PostgreSQL binaries the tests are skipped with the reason; with CI=true
they fail instead. Run with ``pytest -s tests/faults`` to see each test's INJECTED/VERIFIED lines."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.faults.harness import FaultEnv, kill_leftovers, make_template, postgres_bin_dir, reap_stale_clusters

IN_CI = os.environ.get("CI", "").lower() == "true"

# A small function problem: four runs (adam, sgd × 2 seeds) that take a moment each.
QUADRATIC_SPEC = {
    "name": "fault harness: quadratic",
    "problem": {"function": {"name": "quadratic", "params": {"center": [2.0, -1.0]}}, "x0": [8.0, 3.0]},
    "training": {"steps": 2000},
    "optimizers": [{"name": "adam", "params": {"lr": 0.01}}, {"name": "sgd", "params": {"lr": 0.01}}],
    "seeds": [0, 1],
    "dtype": "float64",
    "tags": ["faults"],
}


def _missing_binaries() -> str | None:
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (not on PATH)")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing.append("PostgreSQL initdb (not under /usr/lib/postgresql/*/bin nor on PATH)")
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (needed to run PostgreSQL as the postgres user)")
    return ", ".join(missing) or None


@pytest.fixture(scope="session")
def fault_binaries():
    missing = _missing_binaries()
    if missing:
        message = f"fault tests need their own servers; missing: {missing}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the fault suite must run)", pytrace=False)
        pytest.skip(message)
    reap_stale_clusters()  # left by an earlier session that was killed before its teardown
    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def postgres_template(fault_binaries):
    """A cluster initdb'd, its database created and migrated (``optibench db upgrade``) once per
    session, then stopped; every ``fault_env`` starts a copy of it on its own port."""
    template = make_template()
    yield template
    template.close()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fault_env(redis_appendonly=False, **settings): options of the fault_env fixture; settings "
        "become OPTIBENCH_* variables of every API and worker it starts (lease_timeout_s=5, sweep_interval_s=1)",
    )


@pytest.fixture
def fault_env(fault_binaries, postgres_template, tmp_path, request):
    """A fresh Redis + a fresh migrated PostgreSQL + the env dict (``fault_env.env``); start the
    API and workers with ``fault_env.start_api()`` / ``fault_env.start_worker()``. Everything is
    killed and removed afterwards, whatever the test did. Options:
    ``@pytest.mark.fault_env(redis_appendonly=True, lease_timeout_s=5, sweep_interval_s=1)``."""
    marker = request.node.get_closest_marker("fault_env")
    options = dict(marker.kwargs) if marker else {}
    env = FaultEnv(tmp_path / "faults", postgres_template=postgres_template, **options)
    try:
        yield env
    finally:
        env.close()
        kill_leftovers()


@pytest.fixture
def fault_api(fault_env):
    return fault_env.start_api()


@pytest.fixture
def quadratic_spec():
    import copy

    return copy.deepcopy(QUADRATIC_SPEC)
