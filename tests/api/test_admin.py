"""A team admin's keys over HTTP, /me, and the embedded deployment with auth off, on both databases."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import ApiKey
from db.session import transaction
from tests.api.teams import COMPARISONS, bearer, function_spec, make_team, team_client

__all__ = ["team_client"]
KEYS = "/api/v1/admin/keys"


def test_an_admin_creates_a_key_that_is_shown_once_and_stored_as_a_hash(team_client):
    client = team_client
    team = make_team()
    response = client.post(KEYS, json={"name": "ci runner", "role": "member"}, headers=bearer(team.admin))
    assert response.status_code == 201
    created = response.json()
    secret = created["key"]
    assert secret.startswith("ob_") and len(secret) >= 40 and created["prefix"] == secret[:11]
    assert (created["name"], created["role"]) == ("ci runner", "member")
    assert created["revoked_at"] is None and created["last_used_at"] is None

    with transaction() as session:
        stored = session.get(ApiKey, created["id"])
        assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        row = session.execute(select(ApiKey.__table__).where(ApiKey.id == created["id"])).one()
        assert all(secret not in str(value) for value in row)

    me = client.get("/api/v1/me", headers=bearer(secret)).json()
    assert (me["team_id"], me["role"], me["key_name"], me["key_id"]) == (team.id, "member", "ci runner", created["id"])
    assert me["key_prefix"] == created["prefix"]
    listed = client.get(KEYS, headers=bearer(team.admin)).json()
    mine = next(key for key in listed if key["id"] == created["id"])
    assert "key" not in mine and mine["prefix"] == created["prefix"] and mine["last_used_at"] is not None


def test_the_role_decides_what_a_key_may_do(team_client):
    client = team_client
    team = make_team()
    admin = client.post(KEYS, json={"name": "second admin", "role": "admin"}, headers=bearer(team.admin)).json()["key"]
    member = client.post(KEYS, json={"name": "default role"}, headers=bearer(admin)).json()
    assert member["role"] == "member"
    created = client.post(COMPARISONS, json=function_spec(), headers=bearer(member["key"]))
    assert created.status_code == 202 and created.json()["submitted_by"] == "default role"
    assert client.get(KEYS, headers=bearer(member["key"])).status_code == 403
    assert client.delete(f"{COMPARISONS}/{created.json()['id']}", headers=bearer(member["key"])).status_code == 403
    assert client.delete(f"{COMPARISONS}/{created.json()['id']}", headers=bearer(admin)).status_code == 204


def test_revoking_keeps_the_key_listed_and_is_idempotent(team_client):
    client = team_client
    team = make_team()
    created = client.post(KEYS, json={"name": "leaver"}, headers=bearer(team.admin)).json()
    assert client.delete(f"{KEYS}/{created['id']}", headers=bearer(team.admin)).status_code == 204

    def listed() -> dict:
        return next(k for k in client.get(KEYS, headers=bearer(team.admin)).json() if k["id"] == created["id"])

    revoked_at = listed()["revoked_at"]
    assert revoked_at is not None
    assert client.delete(f"{KEYS}/{created['id']}", headers=bearer(team.admin)).status_code == 204
    assert listed()["revoked_at"] == revoked_at
    assert client.delete(f"{KEYS}/no-such-key", headers=bearer(team.admin)).status_code == 404


def test_a_revoked_keys_comparisons_keep_their_submitter(team_client):
    client = team_client
    team = make_team()
    created = client.post(KEYS, json={"name": "former member"}, headers=bearer(team.admin)).json()
    comparison = client.post(COMPARISONS, json=function_spec(), headers=bearer(created["key"])).json()
    client.delete(f"{KEYS}/{created['id']}", headers=bearer(team.admin))
    again = client.get(f"{COMPARISONS}/{comparison['id']}", headers=bearer(team.member)).json()
    assert again["submitted_by"] == "former member"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"name": "x" * 101}, ["body", "name"]),
        ({"name": "k", "role": "owner"}, ["body", "role"]),
        ({"role": "member"}, ["body", "name"]),
        ({"name": "k", "team_id": "another"}, ["body", "team_id"]),
    ],
)
def test_a_bad_key_request_is_422_naming_the_field(team_client, body, loc):
    team = make_team()
    response = team_client.post(KEYS, json=body, headers=bearer(team.admin))
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]


def test_me_shows_the_limits_in_force(team_client):
    from optibench.settings import get_settings

    settings = get_settings()
    team = make_team(max_running_comparisons=3)
    limits = team_client.get("/api/v1/me", headers=bearer(team.member)).json()["limits"]
    assert limits == {
        "max_runs_per_comparison": settings.max_runs_per_comparison,
        "max_steps_per_comparison": settings.max_steps_per_comparison,
        "max_running_comparisons": 3,
    }


# --- auth off: the embedded single-user default ---------------------------------------------------


@pytest.fixture
def local_client(use_database):
    from api.main import create_app
    from optibench.settings import get_settings

    assert get_settings().auth == "off"
    return TestClient(create_app())


def test_with_auth_off_everyone_is_the_local_admin(local_client):
    me = local_client.get("/api/v1/me").json()
    assert (me["team_id"], me["team_name"], me["role"], me["key_name"]) == ("local", "local", "admin", "local")
    assert me["key_prefix"] is None
    created = local_client.post(COMPARISONS, json=function_spec(), headers=bearer("ob_ignored"))
    assert created.status_code == 202 and created.json()["submitted_by"] == "local"
    assert local_client.delete(f"{COMPARISONS}/{created.json()['id']}").status_code == 204
    key = local_client.post(KEYS, json={"name": "for later"}).json()
    assert key["role"] == "member"
    with transaction() as session:
        assert session.get(ApiKey, key["id"]).team_id == "local"
