"""Who may call what, with OPTIBENCH_AUTH=required, on both databases.

The matrix: every route of the app must have an entry in ROUTES (a new route without an access
decision fails here), and every route is called by seven callers: no key, a wrong key, a revoked key,
team B's member and admin keys, and team A's member and admin keys, with team A's ids in the path.
The exact status is asserted for each. Then: dashboard sessions, CSRF, and keys never leaking."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from starlette.routing import Mount

from api import auth
from api.deps import PageDep
from db.models import ApiKey, DashboardSession, utcnow
from db.session import transaction
from optibench.settings import get_settings
from services.keys import DISPLAY_CHARS, KEY_PREFIX, hash_key
from tests.api.teams import COMPARISONS, Team, bearer, function_spec, make_team, record_steps, submit, team_client

__all__ = ["team_client"]

PUBLIC, MEMBER, ADMIN, SHARE_TOKEN, PAGE = "public", "member", "admin", "share-token", "page"
#: (method, path) -> (who may call it, the status for a caller who may, the request's arguments).
#: Paths are filled with team A's ids; unsafe calls get fresh ones, so no cell depends on another.
ROUTES: dict[tuple[str, str], tuple[str, int, dict]] = {
    ("GET", "/healthz"): (PUBLIC, 200, {}),
    ("GET", "/readyz"): (PUBLIC, 200, {}),
    ("GET", "/openapi.json"): (PUBLIC, 200, {}),
    ("GET", "/docs"): (PUBLIC, 200, {}),
    ("GET", "/docs/oauth2-redirect"): (PUBLIC, 200, {}),
    ("GET", "/redoc"): (PUBLIC, 200, {}),
    ("GET", "/login"): (PUBLIC, 200, {}),
    # a form post without the session's CSRF token (none of these callers has a session)
    ("POST", "/login"): (PUBLIC, 403, {"data": {"key": "ob_whatever"}}),
    ("POST", "/logout"): (PUBLIC, 303, {}),
    ("GET", "/api/v1/shared/{token}"): (SHARE_TOKEN, 200, {}),
    ("GET", "/api/v1/shared/{token}/curves"): (SHARE_TOKEN, 200, {}),
    ("GET", "/api/v1/shared/{token}/runs/{run_id}/curve"): (SHARE_TOKEN, 200, {}),
    ("GET", "/api/v1/shared/{token}/summary"): (SHARE_TOKEN, 200, {}),
    ("GET", "/api/v1/shared/{token}/sensitivity"): (SHARE_TOKEN, 422, {}),
    ("GET", "/api/v1/shared/{token}/surface"): (SHARE_TOKEN, 200, {}),
    ("GET", "/api/v1/shared/{token}/step-times"): (SHARE_TOKEN, 200, {}),
    ("GET", "/shared/{token}"): (SHARE_TOKEN, 200, {}),
    ("GET", "/static/vendor/plotly.min.js"): (PUBLIC, 200, {}),
    ("GET", "/static/{file}"): (PUBLIC, 200, {}),
    # pages: without a valid session or key the browser is sent to /login (303)
    ("GET", "/"): (PAGE, 200, {}),
    ("GET", "/comparisons/{comparison_id}"): (PAGE, 200, {}),
    ("GET", "/compare"): (PAGE, 200, {}),
    ("GET", "/new"): (PAGE, 200, {}),
    ("GET", "/catalog"): (PAGE, 200, {}),
    ("GET", "/suites/{name}/{version}"): (PAGE, 200, {}),
    ("GET", "/api/v1/catalog"): (MEMBER, 200, {}),
    ("GET", "/api/v1/me"): (MEMBER, 200, {}),
    ("POST", "/api/v1/comparisons"): (MEMBER, 202, {"json": function_spec(seeds=[7])}),
    ("GET", "/api/v1/comparisons"): (MEMBER, 200, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}"): (MEMBER, 200, {}),
    ("PATCH", "/api/v1/comparisons/{comparison_id}"): (MEMBER, 200, {"json": {"note": "seen"}}),
    ("DELETE", "/api/v1/comparisons/{comparison_id}"): (ADMIN, 204, {}),
    ("POST", "/api/v1/comparisons/{comparison_id}/cancel"): (MEMBER, 200, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}/curves"): (MEMBER, 200, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}/export"): (MEMBER, 200, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}/summary"): (MEMBER, 200, {}),
    # nothing was swept in this comparison
    ("GET", "/api/v1/comparisons/{comparison_id}/sensitivity"): (MEMBER, 422, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}/surface"): (MEMBER, 200, {}),
    ("GET", "/api/v1/comparisons/{comparison_id}/step-times"): (MEMBER, 200, {}),
    ("POST", "/api/v1/comparisons/{comparison_id}/share"): (MEMBER, 201, {"json": {}}),
    ("GET", "/api/v1/comparisons/{comparison_id}/share"): (MEMBER, 200, {}),
    ("DELETE", "/api/v1/share-links/{link_id}"): (MEMBER, 204, {}),
    ("GET", "/api/v1/runs/{run_id}"): (MEMBER, 200, {}),
    ("POST", "/api/v1/runs/{run_id}/cancel"): (MEMBER, 200, {}),
    ("GET", "/api/v1/runs/{run_id}/steps"): (MEMBER, 200, {}),
    ("GET", "/api/v1/runs/{run_id}/evals"): (MEMBER, 200, {}),
    ("GET", "/api/v1/runs/{run_id}/curve"): (MEMBER, 200, {}),
    # external runs: created in the comparison; the run here is a finished catalogue run, which takes no rows
    ("POST", "/api/v1/comparisons/{comparison_id}/runs"): (
        MEMBER,
        201,
        {"json": {"seed": 0, "label": "external", "optimizer": {"name": "mine"}}},
    ),
    ("POST", "/api/v1/runs/{run_id}/steps"): (MEMBER, 415, {"content": b"not declared an Arrow stream"}),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"): (MEMBER, 409, {}),
    ("POST", "/api/v1/runs/{run_id}/evals"): (MEMBER, 409, {"json": {"evals": [{"step": 0, "train_loss": 1.0}]}}),
    ("POST", "/api/v1/runs/{run_id}/finish"): (MEMBER, 409, {"json": {"status": "failed"}}),
    # free-form tracking: team A's running tracked run and its project
    ("POST", "/api/v1/tracking/runs"): (MEMBER, 201, {"json": {"project": "matrix", "config": {"lr": 0.1}}}),
    ("GET", "/api/v1/tracking/runs/{tracked_run_id}"): (MEMBER, 200, {}),
    ("POST", "/api/v1/tracking/runs/{tracked_run_id}/metrics"): (MEMBER, 415, {"content": b"not an Arrow stream"}),
    ("GET", "/api/v1/tracking/runs/{tracked_run_id}/metrics"): (MEMBER, 200, {}),
    ("POST", "/api/v1/tracking/runs/{tracked_run_id}/heartbeat"): (MEMBER, 200, {}),
    ("POST", "/api/v1/tracking/runs/{tracked_run_id}/finish"): (MEMBER, 200, {"json": {"status": "failed"}}),
    ("GET", "/api/v1/tracking/projects/{project}"): (MEMBER, 200, {}),
    # a suite is the deployment's, not a team's: another team reads its own runs on it
    ("GET", "/api/v1/suites"): (MEMBER, 200, {}),
    ("GET", "/api/v1/suites/{name}/{version}"): (MEMBER, 200, {}),
    ("GET", "/api/v1/suites/{name}/{version}/leaderboard"): (MEMBER, 200, {}),
    ("POST", "/api/v1/suites/{name}/{version}/submissions"): (
        MEMBER,
        202,
        {"json": {"optimizers": [{"name": "adam"}], "budget": "reduced", "workloads": ["logreg-breast-cancer"]}},
    ),
    ("POST", "/api/v1/admin/keys"): (ADMIN, 201, {"json": {"name": "made in the matrix"}}),
    ("GET", "/api/v1/admin/keys"): (ADMIN, 200, {}),
    ("DELETE", "/api/v1/admin/keys/{key_id}"): (ADMIN, 204, {}),
}
#: a suite's path: no team's id
SUITE = {"name": "lite", "version": "v1"}
SUITE_PATH = set(SUITE)
CALLERS = ("no key", "wrong key", "revoked key", "other team's member", "other team's admin", "member", "admin")
UNSAFE = {"POST", "PATCH", "DELETE"}


def expected_status(access: str, owner_status: int, path: str, caller: str) -> int:
    if access in (PUBLIC, SHARE_TOKEN):
        return owner_status
    if caller in ("no key", "wrong key", "revoked key"):
        return 303 if access == PAGE else 401
    if access == ADMIN and caller in ("member", "other team's member"):
        return 403
    if caller.startswith("other team's") and set(re.findall(r"\{(\w+)\}", path)) - SUITE_PATH:
        return 404  # exactly as for an id that does not exist
    return owner_status


def _headers(caller: str, team_a: Team, team_b: Team) -> dict[str, str]:
    keys = {
        "wrong key": KEY_PREFIX + "x" * 43,
        "revoked key": team_a.revoked,
        "other team's member": team_b.member,
        "other team's admin": team_b.admin,
        "member": team_a.member,
        "admin": team_a.admin,
    }
    return bearer(keys[caller]) if caller in keys else {}


def _targets(client, team_a: Team) -> dict[str, str]:
    """A comparison of team A with recorded steps, a share link of it, and a spare key of the team."""
    comparison = submit(client, team_a.member, seeds=[0], optimizers=[{"name": "adam", "params": {"lr": 0.1}}])
    run_id = comparison["runs"][0]["id"]
    record_steps(run_id, [4.0, 2.0, 1.0])
    link = client.post(f"{COMPARISONS}/{comparison['id']}/share", json={}, headers=bearer(team_a.member)).json()
    spare = client.post("/api/v1/admin/keys", json={"name": "spare"}, headers=bearer(team_a.admin)).json()
    project = f"project-{link['id'][:8]}"
    tracked = client.post(
        "/api/v1/tracking/runs", json={"project": project, "config": {"lr": 0.1}}, headers=bearer(team_a.member)
    ).json()
    return {
        "tracked_run_id": tracked["id"],
        "project": project,
        "comparison_id": comparison["id"],
        "run_id": run_id,
        "link_id": link["id"],
        "token": link["token"],
        "key_id": spare["id"],
    }


def _served_path(route) -> str:
    """A mounted app (the static files) serves every path below its own."""
    return route.path + "/{file}" if isinstance(route.original_route, Mount) else route.path


def test_every_route_has_an_access_decision(team_client):
    served = {
        (method, _served_path(route))
        for route in iter_route_contexts(team_client.app.routes)
        for method in (route.methods or {"GET"}) - {"HEAD"}
    }
    assert not served - ROUTES.keys(), f"routes without an entry in ROUTES: {sorted(served - ROUTES.keys())}"
    assert not ROUTES.keys() - served, f"entries of ROUTES the app does not serve: {sorted(ROUTES.keys() - served)}"


@pytest.mark.parametrize("caller", CALLERS)
def test_route_matrix(team_client, caller):
    client = team_client
    team_a, team_b = make_team(), make_team()
    shared = _targets(client, team_a)
    headers = _headers(caller, team_a, team_b)
    wrong: list[str] = []
    for (method, path), (access, owner_status, kwargs) in ROUTES.items():
        want = expected_status(access, owner_status, path, caller)
        # a call that is to change something gets its own targets; a refused one must change nothing
        ids = _targets(client, team_a) if method in UNSAFE and want < 400 and "{" in path else shared
        client.cookies.clear()
        response = client.request(
            method, path.format(file="dashboard.css", **SUITE, **ids), headers=headers, follow_redirects=False, **kwargs
        )
        if response.status_code != want:
            wrong.append(f"{method} {path}: {response.status_code}, expected {want}: {response.text[:200]}")
        elif want == 401 and response.headers.get("www-authenticate") != "Bearer":
            wrong.append(f"{method} {path}: 401 without 'WWW-Authenticate: Bearer'")
        elif caller.startswith("other team's") and response.status_code < 300 and access != SHARE_TOKEN:
            leaked = [name for name, value in (shared | ids).items() if value in response.text]
            if leaked:
                wrong.append(f"{method} {path}: team A's {leaked} in team B's answer")
    assert not wrong, f"{caller}:\n" + "\n".join(wrong)


def test_other_teams_lists_are_their_own(team_client):
    client = team_client
    team_a, team_b = make_team(), make_team()
    mine = submit(client, team_a.member)["id"]
    theirs = submit(client, team_b.member)["id"]
    for team, own, other in ((team_a, mine, theirs), (team_b, theirs, mine)):
        listed = {
            item["id"]
            for item in client.get(COMPARISONS, params={"limit": 500}, headers=bearer(team.member)).json()["items"]
        }
        assert own in listed and other not in listed
        names = [key["name"] for key in client.get("/api/v1/admin/keys", headers=bearer(team.admin)).json()]
        assert names and all(name.endswith(f"of {team.name}") for name in names)
        assert client.get("/api/v1/me", headers=bearer(team.member)).json()["team_id"] == team.id


def test_a_malformed_authorization_header_is_401(team_client):
    team = make_team()
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", team.member):
        response = team_client.get("/api/v1/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"
        assert team.member not in response.text


def test_a_key_revoked_over_http_stops_working_at_once(team_client):
    client = team_client
    team = make_team()
    created = client.post("/api/v1/admin/keys", json={"name": "short-lived"}, headers=bearer(team.admin)).json()
    assert client.get("/api/v1/me", headers=bearer(created["key"])).status_code == 200
    assert client.delete(f"/api/v1/admin/keys/{created['id']}", headers=bearer(team.admin)).status_code == 204
    response = client.get("/api/v1/me", headers=bearer(created["key"]))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_last_used_is_written_at_most_once_a_minute(team_client):
    client = team_client
    team = make_team()
    me = client.get("/api/v1/me", headers=bearer(team.member)).json()

    def last_used():
        with transaction() as session:
            return session.get(ApiKey, me["key_id"]).last_used_at

    first = last_used()
    assert first is not None
    for _ in range(3):
        client.get("/api/v1/me", headers=bearer(team.member))
    assert last_used() == first
    with transaction() as session:
        session.execute(
            update(ApiKey).where(ApiKey.id == me["key_id"]).values(last_used_at=first - timedelta(minutes=2))
        )
    client.get("/api/v1/me", headers=bearer(team.member))
    assert last_used() > first - timedelta(minutes=1)


# --- dashboard sessions ------------------------------------------------------------------------


def _csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _log_in(client, key: str, next_path: str = "/api/v1/me"):
    form = client.get("/login", params={"next": next_path})
    assert form.status_code == 200 and 'type="password"' in form.text
    return client.post(
        "/login", data={"key": key, "next": next_path, "csrf_token": _csrf_of(form.text)}, follow_redirects=False
    )


def test_login_sets_an_httponly_samesite_session_that_authenticates_reads(team_client):
    client = team_client
    team = make_team()
    response = _log_in(client, team.member)
    assert response.status_code == 303 and response.headers["location"] == "/api/v1/me"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=") and "httponly" in cookie and "samesite=lax" in cookie
    assert team.member not in response.headers["set-cookie"]
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["team_id"] == team.id and me.json()["role"] == "member"


def test_login_with_a_wrong_or_revoked_key_shows_the_form_again(team_client):
    client = team_client
    team = make_team()
    for key in (team.revoked, "ob_not-a-key", ""):
        response = _log_in(client, key)
        assert response.status_code == 401 and "unknown or was revoked" in response.text
        assert client.get("/api/v1/me").status_code == 401


def test_login_goes_back_to_a_local_path_only(team_client):
    team = make_team()
    for target in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "///evil.example/x",
        "////evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "https:evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example",
        "evil.example",
        "",
    ):
        response = _log_in(team_client, team.member, target)
        assert response.status_code == 303 and response.headers["location"] == "/", target
        # where the browser lands: this site's dashboard
        assert team_client.get(response.headers["location"], follow_redirects=False).url.host == "testserver"
    for target in ("/comparisons/abc?x=1#runs", "/?tag=a%2Bb"):
        assert _log_in(team_client, team.member, target).headers["location"] == target


def test_unsafe_session_requests_need_the_csrf_token(team_client):
    client = team_client
    team = make_team()
    _log_in(client, team.admin)
    token = _csrf_of(client.get("/login").text)
    assert client.post(COMPARISONS, json=function_spec()).status_code == 403
    assert client.post(COMPARISONS, json=function_spec(), headers={"X-CSRF-Token": "forged"}).status_code == 403
    created = client.post(COMPARISONS, json=function_spec(), headers={"X-CSRF-Token": token})
    assert created.status_code == 202 and created.json()["submitted_by"] == f"admin of {team.name}"
    path = f"{COMPARISONS}/{created.json()['id']}"
    assert client.delete(path).status_code == 403
    assert client.delete(path, headers={"X-CSRF-Token": token}).status_code == 204
    # a Bearer key needs no token: browsers never attach one on their own
    assert client.post(COMPARISONS, json=function_spec(), headers=bearer(team.member)).status_code == 202


def test_logout_needs_the_token_and_ends_the_session(team_client):
    client = team_client
    _log_in(client, make_team().member)
    token = _csrf_of(client.get("/login").text)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.get("/api/v1/me").status_code == 200
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/api/v1/me").status_code == 401


def test_a_saved_cookie_stops_working_after_logout(team_client):
    """Logout revokes the session on the server: replaying the cookie saved before it is 401 on reads,
    on share links and on the pages."""
    client = team_client
    team = make_team()
    _log_in(client, team.member)
    saved = client.cookies.get(auth.SESSION_COOKIE)
    token = _csrf_of(client.get("/login").text)
    comparison_id = submit(client, team.member)["id"]
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303

    client.cookies.clear()
    replayed = {"cookie": f"{auth.SESSION_COOKIE}={saved}", "X-CSRF-Token": token}
    response = client.get("/api/v1/me", headers=replayed)
    assert response.status_code == 401 and "log in again" in response.json()["detail"]
    assert client.post(f"{COMPARISONS}/{comparison_id}/share", json={}, headers=replayed).status_code == 401
    assert client.get("/", headers=replayed, follow_redirects=False).status_code == 303
    # a new login is a new session, and works
    _log_in(client, team.member)
    assert client.get("/api/v1/me").status_code == 200


def test_a_session_ends_when_it_expires_on_the_server(team_client):
    client = team_client
    _log_in(client, make_team().member)
    assert client.get("/api/v1/me").status_code == 200
    secret_hash = hash_key(_session_secret(client))
    with transaction() as session:
        session.execute(
            update(DashboardSession)
            .where(DashboardSession.id == secret_hash)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert client.get("/api/v1/me").status_code == 401


def test_the_cookie_holds_a_secret_stored_only_as_its_hash(team_client):
    client = team_client
    team = make_team()
    _log_in(client, team.member)
    secret = _session_secret(client)
    with transaction() as session:
        rows = session.scalars(select(DashboardSession).join(ApiKey).where(ApiKey.team_id == team.id)).all()
    assert [row.id for row in rows] == [hash_key(secret)] and len(secret) >= 43
    assert rows[0].expires_at - rows[0].created_at == timedelta(seconds=auth.SESSION_MAX_AGE_S)


def _session_secret(client) -> str:
    """The secret inside the signed cookie (its payload is base64 JSON, readable, not forgeable)."""
    payload = client.cookies.get(auth.SESSION_COOKIE).split(".")[0]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))[auth.SESSION_FIELD]


def test_a_session_ends_when_its_key_is_revoked(team_client):
    client = team_client
    team = make_team()
    _log_in(client, team.member)
    assert client.get("/api/v1/me").status_code == 200
    me = client.get("/api/v1/me").json()
    assert client.delete(f"/api/v1/admin/keys/{me['key_id']}", headers=bearer(team.admin)).status_code == 204
    assert client.get("/api/v1/me").status_code == 401


def test_pages_send_the_browser_to_the_login_page(team_client):
    app = FastAPI()
    auth.install(app, get_settings())

    @app.get("/history")
    def history(principal: PageDep) -> dict:
        return {"team": principal.team_id}

    client = TestClient(app)
    response = client.get("/history", params={"tag": "a b"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/history%3Ftag%3Da%2Bb"
    team = make_team()
    assert client.get("/history", headers=bearer(team.member)).json() == {"team": team.id}


# --- keys never leak ---------------------------------------------------------------------------


def test_keys_appear_in_no_log_and_no_answer_after_creation(team_client, caplog):
    client = team_client
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "celery", "httpx", "sqlalchemy.engine", "optibench"):
        caplog.set_level(logging.DEBUG, logger=name)
    team = make_team()
    created = client.post(
        "/api/v1/admin/keys", json={"name": "leak check", "role": "admin"}, headers=bearer(team.admin)
    )
    assert created.status_code == 201
    new_key = created.json()["key"]
    keys = [team.member, team.admin, team.revoked, new_key]
    assert new_key.startswith(KEY_PREFIX) and created.json()["prefix"] == new_key[:DISPLAY_CHARS]

    answers = []
    for key in keys:
        headers = bearer(key)
        comparison = client.post(COMPARISONS, json=function_spec(), headers=headers)
        answers += [
            comparison,
            client.get("/api/v1/me", headers=headers),
            client.get("/api/v1/admin/keys", headers=headers),
            client.get(COMPARISONS, headers=headers),
            client.get("/api/v1/me", headers={"Authorization": key}),
        ]
        if comparison.status_code == 202:
            answers.append(client.get(f"{COMPARISONS}/{comparison.json()['id']}", headers=headers))
    answers.append(_log_in(client, new_key))
    answers.append(client.delete(f"/api/v1/admin/keys/{created.json()['id']}", headers=bearer(team.admin)))
    answers.append(client.get("/api/v1/me", headers=bearer(new_key)))

    assert {401, 200, 202, 204, 303} <= {answer.status_code for answer in answers}
    assert "/api/v1/me" in caplog.text  # the request log was captured
    for key in keys:
        assert key not in caplog.text
        for answer in answers:
            assert key not in answer.text and key not in str(answer.headers), answer.request.url
