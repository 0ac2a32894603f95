"""`optibench admin` against a real database (both), checked through HTTP; and `optibench serve`'s
auth decision, in-process where it refuses and as a real process where it serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from db.models import Comparison, Eval, Run, ShareLink, Step
from db.session import transaction
from optibench.cli import app
from services.keys import is_loopback
from tests.api.teams import COMPARISONS, bearer, function_spec, record_steps, submit, team_client

__all__ = ["team_client"]
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def admin(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["admin", *args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result.output


def _new_team(*options: str) -> tuple[str, str]:
    """A team made by the CLI: its name and its first admin key (the output's last line)."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    return name, admin("create-team", name, *options).strip().splitlines()[-1]


# --- teams and keys ----------------------------------------------------------------------------


def test_create_team_prints_the_admin_key_once(team_client):
    name, key = _new_team()
    me = team_client.get("/api/v1/me", headers=bearer(key))
    assert me.status_code == 200
    assert (me.json()["team_name"], me.json()["role"], me.json()["key_name"]) == (name, "admin", "admin")
    listing = admin("list-keys", name)
    assert me.json()["key_prefix"] in listing and key not in listing and "active" in listing
    assert "exists already" in admin("create-team", name, code=1)


def test_create_list_and_revoke_keys(team_client):
    name, _ = _new_team()
    output = admin("create-key", name, "laptop", "--role", "member")
    member = output.strip().splitlines()[-1]
    assert "shown this once" in output
    assert team_client.get("/api/v1/me", headers=bearer(member)).json()["role"] == "member"
    prefix = team_client.get("/api/v1/me", headers=bearer(member)).json()["key_prefix"]

    assert "laptop" in admin("revoke-key", prefix)
    assert team_client.get("/api/v1/me", headers=bearer(member)).status_code == 401
    assert "revoked" in [line for line in admin("list-keys", name).splitlines() if "laptop" in line][0]
    assert "no key" in admin("revoke-key", "ob_nosuchkey", code=1)
    assert "no team" in admin("create-key", "no-such-team", "x", code=1)
    assert admin("create-key", name, "x", "--role", "owner", code=2)


def test_set_limits_overrides_the_settings_and_0_restores_them(team_client):
    from optibench.settings import get_settings

    name, key = _new_team("--max-running", "5")
    assert team_client.get("/api/v1/me", headers=bearer(key)).json()["limits"]["max_running_comparisons"] == 5
    output = admin("set-limits", name, "--max-runs", "3", "--max-running", "0")
    assert "max_runs_per_comparison = 3 (this team)" in output
    limits = team_client.get("/api/v1/me", headers=bearer(key)).json()["limits"]
    assert limits["max_runs_per_comparison"] == 3
    assert limits["max_running_comparisons"] == get_settings().max_running_comparisons
    rejected = team_client.post(COMPARISONS, json=function_spec(), headers=bearer(key))
    assert rejected.status_code == 422 and f"set-limits {name} --max-runs" in rejected.json()["detail"][0]["msg"]
    assert "no team" in admin("set-limits", "no-such-team", "--max-runs", "3", code=1)
    assert admin("set-limits", name, "--max-runs", "-1", code=2)


# --- purge -------------------------------------------------------------------------------------


def _count(model, column, value) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(model).where(column == value))


def test_purge_deletes_only_deleted_comparisons_with_their_rows(team_client):
    client = team_client
    _, key = _new_team()
    doomed, kept = submit(client, key), submit(client, key)
    doomed_run = doomed["runs"][0]["id"]
    record_steps(doomed_run, [2.0, 1.0])
    with transaction() as session:
        session.add(Eval(run_id=doomed_run, step=0, train_loss=2.0))
    client.post(f"{COMPARISONS}/{doomed['id']}/share", json={}, headers=bearer(key))
    assert client.delete(f"{COMPARISONS}/{doomed['id']}", headers=bearer(key)).status_code == 204

    assert admin("purge", "--older-than-days", "1").strip() == "purged 0 deleted comparisons"
    assert _count(Comparison, Comparison.id, doomed["id"]) == 1
    assert "purged" in admin("purge")
    for model, column, value in (
        (Comparison, Comparison.id, doomed["id"]),
        (Run, Run.comparison_id, doomed["id"]),
        (Step, Step.run_id, doomed_run),
        (Eval, Eval.run_id, doomed_run),
        (ShareLink, ShareLink.comparison_id, doomed["id"]),
    ):
        assert _count(model, column, value) == 0, model.__name__
    assert client.get(f"{COMPARISONS}/{kept['id']}", headers=bearer(key)).status_code == 200


def test_purge_hands_a_reused_runs_rows_to_the_runs_that_reuse_it(team_client):
    client = team_client
    _, key = _new_team()
    source, first, second = (submit(client, key, seeds=[0], optimizers=[{"name": "adam"}]) for _ in range(3))
    source_run, first_run, second_run = (c["runs"][0]["id"] for c in (source, first, second))
    record_steps(source_run, [3.0, 2.0, 1.0])
    with transaction() as session:
        session.execute(update(Run).where(Run.id.in_([first_run, second_run])).values(reused_from_id=source_run))
    expected = client.get(f"/api/v1/runs/{source_run}/steps", headers=bearer(key)).json()["steps"]
    assert len(expected) == 3

    client.delete(f"{COMPARISONS}/{source['id']}", headers=bearer(key))
    admin("purge")
    with transaction() as session:
        links = dict(
            session.execute(select(Run.id, Run.reused_from_id).where(Run.id.in_([first_run, second_run]))).all()
        )
    heir = min(first_run, second_run)
    assert links == {heir: None, max(first_run, second_run): heir}
    for run_id in (first_run, second_run):
        assert client.get(f"/api/v1/runs/{run_id}/steps", headers=bearer(key)).json()["steps"] == expected


# --- serve: auth off only on a loopback address -----------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_serve_refuses_auth_off_on_other_addresses(monkeypatch, host):
    from optibench.settings import get_settings

    monkeypatch.setenv("OPTIBENCH_AUTH", "off")
    get_settings.cache_clear()
    result = runner.invoke(app, ["serve", "--no-worker", "--host", host])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert "OPTIBENCH_AUTH=required" in result.output and host in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(database_url: str, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    environment = {**os.environ, "OPTIBENCH_DATABASE_URL": database_url, "OPTIBENCH_PORT": str(port), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "optibench.cli", "serve", "--no-worker"],
        cwd=REPO,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"serve did not start:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(30)


def test_serve_warns_when_auth_is_off(sqlite_url, tmp_path):
    process, url = _serve(sqlite_url, tmp_path / "serve.log", OPTIBENCH_AUTH="off")
    try:
        assert httpx.get(f"{url}/api/v1/me").json()["team_id"] == "local"
    finally:
        _stop(process)
    assert "authentication is off (OPTIBENCH_AUTH=off)" in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # logging does not depend on the database
def test_a_served_api_logs_no_key(use_database, tmp_path):
    _, key = _new_team()
    log = tmp_path / "serve.log"
    process, url = _serve(
        use_database,
        log,
        OPTIBENCH_AUTH="required",
        OPTIBENCH_SECRET_KEY="served-secret-for-the-admin-cli-test-0123456789",
    )
    try:
        with httpx.Client(base_url=url) as client:
            created = client.post("/api/v1/admin/keys", json={"name": "second"}, headers=bearer(key)).json()
            keys = [key, created["key"], "ob_" + "w" * 43]
            client.delete(f"/api/v1/admin/keys/{created['id']}", headers=bearer(key))
            codes = {
                client.get(path, headers=bearer(secret)).status_code
                for secret in keys
                for path in ("/api/v1/me", "/api/v1/comparisons", "/api/v1/admin/keys")
            }
            assert codes == {200, 401}
            client.post("/login", data={"key": key})
    finally:
        _stop(process)
    logged = log.read_text()
    assert "GET /api/v1/me" in logged  # uvicorn's access log is there
    assert not any(secret in logged for secret in keys)
