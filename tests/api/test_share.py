"""Read-only share links over HTTP, on both databases: signed, expiring, revocable, one comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from itsdangerous import URLSafeSerializer
from sqlalchemy import update

from api import auth
from db.models import ShareLink
from db.session import transaction
from optibench.settings import get_settings
from tests.api.teams import COMPARISONS, SECRET_KEY, bearer, function_spec, make_team, submit, team_client

__all__ = ["team_client"]


def _share(client, key: str, comparison_id: str, **body) -> dict:
    response = client.post(f"{COMPARISONS}/{comparison_id}/share", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


def test_a_share_link_shows_one_comparison_to_anyone(team_client):
    client = team_client
    team = make_team()
    created = submit(client, team.member)
    link = _share(client, team.member, created["id"])
    expires_at = datetime.fromisoformat(link["expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(hours=168))) < timedelta(minutes=1)
    # no OPTIBENCH_PUBLIC_URL with auth required: the path, never an address taken from the request
    assert link["url"] == f"/api/v1/shared/{link['token']}"
    assert link["created_by"] == f"member of {team.name}" and link["revoked_at"] is None

    client.cookies.clear()
    shared = client.get(link["url"])  # no key
    assert shared.status_code == 200
    assert shared.json() == client.get(f"{COMPARISONS}/{created['id']}", headers=bearer(team.member)).json()
    # the token opens this comparison only: none of the team's other reads
    assert client.get(f"{COMPARISONS}/{created['id']}", params={"token": link["token"]}).status_code == 401
    assert client.get(f"/api/v1/runs/{created['runs'][0]['id']}").status_code == 401


def test_links_are_listed_and_revoked(team_client):
    client = team_client
    team = make_team()
    comparison_id = submit(client, team.member)["id"]
    week, hour = (
        _share(client, team.member, comparison_id),
        _share(client, team.admin, comparison_id, expires_in_hours=1),
    )
    listed = client.get(f"{COMPARISONS}/{comparison_id}/share", headers=bearer(team.member)).json()
    assert [link["id"] for link in listed] == [week["id"], hour["id"]]
    assert listed[1]["token"] == hour["token"] and listed[1]["url"] == hour["url"]

    assert client.delete(f"/api/v1/share-links/{week['id']}", headers=bearer(team.member)).status_code == 204
    assert client.get(week["url"]).status_code == 404
    assert client.get(hour["url"]).status_code == 200
    revoked = client.get(f"{COMPARISONS}/{comparison_id}/share", headers=bearer(team.member)).json()[0]
    assert revoked["revoked_at"] is not None
    assert client.delete(f"/api/v1/share-links/{week['id']}", headers=bearer(team.member)).status_code == 204
    assert client.get(f"{COMPARISONS}/{comparison_id}/share", headers=bearer(team.member)).json()[0] == revoked


def test_an_expired_link_is_404(team_client):
    client = team_client
    team = make_team()
    link = _share(client, team.member, submit(client, team.member)["id"], expires_in_hours=1)
    with transaction() as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.id == link["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = client.get(link["url"])
    assert response.status_code == 404 and "expired" in response.json()["detail"]


def test_a_deleted_comparisons_links_stop_working(team_client):
    client = team_client
    team = make_team()
    comparison_id = submit(client, team.member)["id"]
    link = _share(client, team.member, comparison_id)
    assert client.delete(f"{COMPARISONS}/{comparison_id}", headers=bearer(team.admin)).status_code == 204
    assert client.get(link["url"]).status_code == 404
    assert client.delete(f"/api/v1/share-links/{link['id']}", headers=bearer(team.member)).status_code == 404


def test_forged_tokens_are_404(team_client):
    client = team_client
    team = make_team()
    link = _share(client, team.member, submit(client, team.member)["id"])
    payload, signature = link["token"].rsplit(".", 1)
    forged = [
        f"{payload}.{signature[::-1]}",
        URLSafeSerializer("another secret", salt="share").dumps(link["id"]),  # signed with another key
        URLSafeSerializer(SECRET_KEY, salt="itsdangerous").dumps(link["id"]),  # signed for another purpose
        auth.share_token(get_settings(), "0" * 32),  # well signed, no such link
        auth.share_token(get_settings(), link["id"]) + "x",
        "not-a-token",
    ]
    for token in forged:
        assert client.get(f"/api/v1/shared/{token}").status_code == 404, token
    assert client.get(link["url"]).status_code == 200


def test_another_teams_link_cannot_be_revoked(team_client):
    client = team_client
    team, other = make_team(), make_team()
    link = _share(client, team.member, submit(client, team.member)["id"])
    assert client.delete(f"/api/v1/share-links/{link['id']}", headers=bearer(other.admin)).status_code == 404
    assert client.get(link["url"]).status_code == 200


@pytest.mark.parametrize("hours", [0, -1, 8761, "a week"])
def test_expiry_out_of_range_is_422(team_client, hours):
    team = make_team()
    comparison_id = submit(team_client, team.member)["id"]
    response = team_client.post(
        f"{COMPARISONS}/{comparison_id}/share", json={"expires_in_hours": hours}, headers=bearer(team.member)
    )
    assert response.status_code == 422
    assert ["body", "expires_in_hours"] in [error["loc"] for error in response.json()["detail"]]


def test_the_longest_expiry_is_a_year(team_client):
    team = make_team()
    link = _share(team_client, team.member, submit(team_client, team.member)["id"], expires_in_hours=8760)
    expires_at = datetime.fromisoformat(link["expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=365))) < timedelta(minutes=1)


@pytest.mark.parametrize("public_url", [None, "https://optibench.example.com", "https://example.org/optibench/"])
def test_share_urls_never_come_from_the_host_header(team_client, settings_env, public_url):
    if public_url:
        settings_env("OPTIBENCH_PUBLIC_URL", public_url)
    team = make_team()
    comparison_id = submit(team_client, team.member)["id"]
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", **bearer(team.member)}
    created = team_client.post(f"{COMPARISONS}/{comparison_id}/share", json={}, headers=forged)
    listed = team_client.get(f"{COMPARISONS}/{comparison_id}/share", headers=forged)
    assert created.status_code == 201 and listed.status_code == 200
    link = created.json()
    expected = (public_url or "").rstrip("/") + f"/api/v1/shared/{link['token']}"
    assert link["url"] == expected and listed.json()[0]["url"] == expected
    assert "evil" not in created.text + listed.text


def test_with_auth_off_share_urls_fall_back_to_the_address_of_the_request(use_database, settings_env):
    from api.main import create_app

    settings_env("OPTIBENCH_AUTH", "off")
    client = TestClient(create_app(), base_url="http://127.0.0.1:8000")
    comparison_id = client.post(COMPARISONS, json=function_spec()).json()["id"]
    link = client.post(f"{COMPARISONS}/{comparison_id}/share", json={}).json()
    assert link["url"] == f"http://127.0.0.1:8000/api/v1/shared/{link['token']}"
    assert client.get(link["url"]).status_code == 200


@pytest.mark.parametrize("value", ["optibench.example.com", "ftp://x.example", "https://x.example/?a=1", "https://"])
def test_a_public_url_that_is_no_http_address_is_refused(value):
    from optibench.settings import Settings

    with pytest.raises(ValueError, match="OPTIBENCH_PUBLIC_URL must be an http"):
        Settings(public_url=value)
    assert Settings(public_url="").public_url is None  # an empty variable, e.g. compose's ${VAR:-}
