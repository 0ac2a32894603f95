"""The fault harness itself: real Redis, real PostgreSQL, real API and worker processes."""

from __future__ import annotations

import pytest

from tests.faults.harness import group_pids, injected, step_problems, verified, wait_until


def _readyz(api) -> tuple[int, dict]:
    response = api.readyz(timeout=15)
    return response.status_code, response.json()


def test_a_comparison_is_trained_on_the_tests_own_redis_and_postgres(fault_env, quadratic_spec):
    api = fault_env.start_api(wait=False)  # both start at once; the API is waited for below
    worker = fault_env.start_worker()
    api.wait_healthy()
    comparison_id = fault_env.submit(quadratic_spec)
    body = fault_env.wait_for_comparison(comparison_id, timeout=60)
    assert body["status"] == "succeeded", body
    for run in body["runs"]:
        rows = fault_env.step_rows(run["id"])
        assert step_problems(rows, expected=2000) == [], (run["id"], step_problems(rows, expected=2000))
    verified(
        f"comparison {comparison_id} succeeded: {len(body['runs'])} runs, each with steps 0..1999 exactly "
        f"once in PostgreSQL :{fault_env.postgres.port}, via Redis :{fault_env.redis.port}"
    )

    pgid = worker.pgid
    assert len(group_pids(pgid)) >= 2, "a prefork worker has a main process and a pool child"
    injected(f"SIGKILL to worker process group {pgid} ({len(group_pids(pgid))} processes)")
    worker.sigkill()
    assert not worker.alive and group_pids(pgid) == []
    verified("the worker and its pool child are gone")


@pytest.mark.fault_env(sweep_interval_s=1)
def test_readyz_names_the_broker_while_redis_restarts(fault_env, fault_api):
    assert fault_env.env["OPTIBENCH_SWEEP_INTERVAL_S"] == "1"
    status, body = _readyz(fault_api)
    assert status == 200 and body["checks"]["database"] == body["checks"]["broker"] == "ok", body
    port = fault_env.redis.port

    injected(f"redis-server on :{port} stopped (SIGTERM)")
    fault_env.redis.stop()
    status, body = wait_until(lambda: (r := _readyz(fault_api))[0] == 503 and r, 20, "/readyz 503")
    assert body["checks"]["broker"].startswith("unavailable"), body
    assert body["checks"]["database"] == "ok", body
    assert fault_api.get("/healthz").status_code == 200
    verified(f"/readyz {status} {body}; /healthz still 200")

    injected(f"redis-server started again on the same port :{port}")
    fault_env.redis.start()
    assert fault_env.redis.port == port
    wait_until(lambda: _readyz(fault_api)[0] == 200, 20, "/readyz 200 after Redis is back")
    verified("/readyz 200 again once Redis is back")


def test_readyz_names_the_database_while_postgres_is_down(fault_env, fault_api):
    assert _readyz(fault_api)[0] == 200
    port = fault_env.postgres.port

    injected(f"PostgreSQL on :{port} stopped (pg_ctl stop -m fast)")
    fault_env.postgres.stop("fast")
    status, body = wait_until(lambda: (r := _readyz(fault_api))[0] == 503 and r, 20, "/readyz 503")
    assert body["checks"]["database"].startswith("unavailable"), body
    assert body["checks"]["broker"] == "ok", body
    assert fault_api.alive and fault_api.get("/healthz").status_code == 200
    verified(f"/readyz {status} {body}; /healthz still 200")

    injected(f"PostgreSQL started again on :{port}")
    fault_env.postgres.start()
    wait_until(lambda: _readyz(fault_api)[0] == 200, 20, "/readyz 200 after PostgreSQL is back")
    verified("/readyz 200 again once PostgreSQL is back")
