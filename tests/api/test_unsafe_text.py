"""NUL characters and lone surrogates, on both databases: refused with a 422 naming where they were,
wherever text enters (path, query, header, JSON and form bodies), and nothing is stored."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from sqlalchemy import JSON, column, func, insert, select, table

from api.main import _validation_error
from db.migrate import upgrade
from db.models import Comparison, UTCDateTime
from db.session import transaction
from tests.api.teams import COMPARISONS, bearer, function_spec, make_team, submit, team_client
from tests.conftest import empty_postgres_database

__all__ = ["team_client"]

#: how each bad character travels: JSON escapes (json.dumps writes both as \u0000 and \ud800)
BAD = {"NUL": "a\x00b", "lone surrogate": "x\ud800", "lone low surrogate": "\udfffy"}
PERCENT = {"NUL": "a%00b", "surrogate as UTF-8": "%ED%A0%80", "broken UTF-8": "%FF"}


def _stored(team_id: str) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Comparison).where(Comparison.team_id == team_id))


def _locs(response) -> list[list]:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert all(error["type"] == "invalid_text" and error["msg"] for error in detail)
    return [error["loc"] for error in detail]


def _post_json(client, path: str, document, key: str, **headers):
    # ensure_ascii: the bad characters travel as JSON escapes, which is how a client can send them
    return client.post(
        path, content=json.dumps(document), headers={"content-type": "application/json", **bearer(key), **headers}
    )


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_a_submit_with_bad_text_anywhere_is_422_naming_the_field_and_stores_nothing(team_client, bad):
    team = make_team()
    positions = {
        ("body", "name"): function_spec(name=bad),
        ("body", "tags", 1): function_spec(tags=["fine", bad]),
        ("body", "optimizers", 0, "label"): function_spec(
            optimizers=[{"name": "adam", "params": {"lr": 0.1}, "label": bad}]
        ),
        ("body", "problem", "function", "name"): function_spec(problem={"function": {"name": bad}, "x0": [1.0]}),
        (
            "body",
            "optimizers",
            0,
            "params",
            bad.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode(),
        ): function_spec(optimizers=[{"name": "adam", "params": {bad: 0.1}}]),
    }
    for loc, spec in positions.items():
        response = _post_json(team_client, COMPARISONS, spec, team.member)
        assert _locs(response) == [list(loc)], loc
    assert _stored(team.id) == 0


def test_valid_unicode_and_escaped_backslashes_are_stored_as_sent(team_client):
    team = make_team()
    # an astral character as its surrogate pair, and the six characters \u0000 written as text
    for name in ("emoji \U0001f642 and é", "a literal \\u0000 and \\ud800"):
        response = _post_json(team_client, COMPARISONS, function_spec(name=name), team.member)
        assert response.status_code == 202 and response.json()["name"] == name, response.text[:300]
    assert _stored(team.id) == 2


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_an_edit_with_bad_text_is_422_and_changes_nothing(team_client, bad):
    team = make_team()
    created = submit(team_client, team.member, tags=["kept"])
    path = f"{COMPARISONS}/{created['id']}"
    response = team_client.patch(
        path,
        content=json.dumps({"tags": ["ok", bad], "note": bad}),
        headers={"content-type": "application/json", **bearer(team.member)},
    )
    assert _locs(response) == [["body", "tags", 1], ["body", "note"]]
    assert team_client.get(path, headers=bearer(team.member)).json()["tags"] == ["kept"]


@pytest.mark.parametrize("bad", PERCENT.values(), ids=PERCENT.keys())
def test_bad_text_in_the_query_string_is_422_naming_the_parameter(team_client, bad):
    team = make_team()
    submit(team_client, team.member, tags=["t"])
    for name in ("q", "tag", "optimizer", "status", "cursor"):
        response = team_client.get(f"{COMPARISONS}?limit=5&{name}={bad}", headers=bearer(team.member))
        assert _locs(response) == [["query", name]], name
    # the team's history still reads, with and without a filter
    assert len(team_client.get(COMPARISONS, params={"tag": "t"}, headers=bearer(team.member)).json()["items"]) == 1


@pytest.mark.parametrize("bad", PERCENT.values(), ids=PERCENT.keys())
def test_bad_text_in_the_path_is_422_naming_the_parameter(team_client, bad):
    team = make_team()
    created = submit(team_client, team.member)
    cases = {
        f"{COMPARISONS}/{bad}": "comparison_id",
        f"/api/v1/runs/{bad}/steps": "run_id",
        f"/api/v1/shared/{bad}": "token",
        f"/api/v1/share-links/{bad}": "link_id",
        f"/comparisons/{bad}": "comparison_id",
        f"/static/{bad}.css": "path",
    }
    for path, name in cases.items():
        for method in ("GET", "DELETE"):
            response = team_client.request(method, path, headers=bearer(team.admin))
            if response.status_code == 405:
                continue
            assert _locs(response) == [["path", name]], (method, path)
    assert _locs(team_client.get(f"/no-such-page/{bad}")) == [["path"]]
    assert team_client.get(f"{COMPARISONS}/{created['id']}", headers=bearer(team.member)).status_code == 200


def test_a_nul_in_a_header_is_422_naming_it(team_client):
    team = make_team()
    response = _post_json(team_client, COMPARISONS, function_spec(), team.member, **{"Idempotency-Key": "a\x00b"})
    assert _locs(response) == [["header", "idempotency-key"]]
    assert _stored(team.id) == 0


@pytest.mark.parametrize("bad", PERCENT.values(), ids=PERCENT.keys())
def test_bad_text_in_a_form_is_422_naming_the_field(team_client, bad):
    response = team_client.post(
        "/login", content=f"key={bad}&next=/".encode(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert _locs(response) == [["body", "key"]]


def test_the_validation_handler_writes_any_input_it_quotes():
    """Whatever reaches a 422 (here a surrogate, a NUL and NaN) comes back as valid UTF-8 JSON."""
    error = RequestValidationError(
        [
            {
                "type": "string_type",
                "loc": ("body", "name\ud800"),
                "msg": "bad",
                "input": {"a\x00": ["\udfff", float("nan")]},
            }
        ]
    )
    response = asyncio.run(_validation_error(None, error))
    body = json.loads(response.body.decode("utf-8"))
    assert body["detail"][0]["loc"] == ["body", "name\\ud800"]
    assert body["detail"][0]["input"] == {"a\\u0000": ["\\udfff", "NaN"]}


@pytest.fixture(params=["sqlite", "postgres"])
def database_before_the_guard(request, tmp_path, monkeypatch):
    """A database at revision 0006, that the app and the test's sessions use."""
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    def use(url: str):
        upgrade(url, "0006")
        monkeypatch.setenv("OPTIBENCH_DATABASE_URL", url)
        for cached in (get_settings, get_engine, _factory):
            cached.cache_clear()
        return url

    if request.param == "sqlite":
        yield use(f"sqlite:///{tmp_path / 'before.db'}")
    else:
        with empty_postgres_database("optibench_unsafe_text") as url:
            yield use(url)
            get_engine().dispose()
    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


def test_text_stored_before_the_guard_is_replaced_by_the_migration_and_history_reads(database_before_the_guard):
    """A NUL tag written before the guard made every ?tag= filter of its team fail on PostgreSQL;
    migration 0007 replaces it (and any lone surrogate) by U+FFFD."""
    from api.main import create_app

    # written as revision 0006 stored it (the models of today have columns added since)
    stored_spec = {"name": "before", "tags": ["ok", "bad\x00tag"], "note": "x\ud800"}
    comparisons = table(
        "comparisons",
        column("id"),
        column("name"),
        column("status"),
        column("tags", JSON),
        column("spec", JSON),
        column("created_at", UTCDateTime()),
    )
    made = SimpleNamespace(id=uuid.uuid4().hex)
    with transaction() as session:
        session.execute(
            insert(comparisons).values(
                id=made.id,
                name="before",
                status="succeeded",
                tags=["ok", "bad\x00tag"],
                spec=stored_spec,
                created_at=datetime.now(UTC),
            )
        )
    upgrade(database_before_the_guard)

    client = TestClient(create_app())
    for params in ({}, {"tag": "ok"}, {"tag": "bad\ufffdtag"}):
        listed = client.get(COMPARISONS, params=params)
        assert listed.status_code == 200 and [item["id"] for item in listed.json()["items"]] == [made.id], params
    assert listed.json()["items"][0]["tags"] == ["ok", "bad\ufffdtag"]
    read = client.get(f"{COMPARISONS}/{made.id}").json()
    assert read["spec"]["tags"] == ["ok", "bad\ufffdtag"] and read["spec"]["note"] == "x\ufffd"
    assert _locs(client.get(f"{COMPARISONS}?tag=bad%00tag")) == [["query", "tag"]]
