"""A team's history over HTTP, on both databases: who submitted what and when, editable tags and
note, soft delete, idempotent submits (concurrent ones too) and the per-team limits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select, update

from api.schemas import ComparisonOut, ComparisonPage, ComparisonSummary
from db import history
from db.models import Comparison, Run, Step, utcnow
from db.session import transaction
from tests.api.teams import COMPARISONS, bearer, function_spec, make_team, record_steps, submit, team_client

__all__ = ["team_client"]


def _listed(client, key: str) -> dict[str, dict]:
    page = client.get(COMPARISONS, params={"limit": 500}, headers=bearer(key))
    assert page.status_code == 200
    return {item["id"]: item for item in page.json()["items"]}


# --- who and when; tags and note --------------------------------------------------------------


def test_a_submit_answers_what_the_stored_comparison_encodes(team_client):
    team = make_team()
    response = team_client.post(COMPARISONS, json=function_spec(tags=["é"]), headers=bearer(team.member))
    with transaction() as session:
        expected = ComparisonOut.full(history.get_comparison(session, response.json()["id"], team.id))
    assert response.status_code == 202 and response.headers["content-type"] == "application/json"
    assert response.content == expected.model_dump_json().encode()


def test_the_list_is_what_the_page_model_encodes(team_client):
    """The list is encoded from its rows without a model per item: byte for byte what ComparisonPage
    gives, a comparison with progress, a note, a finish time and non-ASCII text included."""
    client, team = team_client, make_team()
    first = submit(client, team.member, name="naïve Adam — ünïcode", tags=["a", "b"])
    second = submit(client, team.member, seeds=[0])
    client.patch(f"{COMPARISONS}/{first['id']}", json={"note": "lr ≈ 0.1"}, headers=bearer(team.member))
    record_steps(second["runs"][0]["id"], [3.0, 2.0, 1.0])
    with transaction() as session:
        session.execute(update(Comparison).where(Comparison.id == first["id"]).values(finished_at=utcnow()))
    cursor, pages = None, 0
    while True:
        response = client.get(
            COMPARISONS, params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=bearer(team.member)
        )
        with transaction() as session:
            page, cursor = history.list_comparisons(session, team.id, 1, cursor)
            progress = history.progress_of(session, [c.id for c in page])
            expected = ComparisonPage(items=[ComparisonSummary.of(c, progress[c.id]) for c in page], next_cursor=cursor)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.content == expected.model_dump_json().encode()
        pages += 1
        if cursor is None:
            break
    assert pages == 2


def test_history_records_the_submitter_and_shows_the_note(team_client):
    client = team_client
    team = make_team()
    created = submit(client, team.admin, tags=["baseline"])
    assert created["submitted_by"] == f"admin of {team.name}" and created["note"] is None
    assert created["created_at"]
    item = _listed(client, team.member)[created["id"]]
    assert item["submitted_by"] == f"admin of {team.name}" and item["tags"] == ["baseline"]
    assert item["created_at"] == created["created_at"]


def test_patch_edits_tags_and_note_only(team_client):
    client = team_client
    team = make_team()
    created = submit(client, team.member, tags=["first"])
    path = f"{COMPARISONS}/{created['id']}"

    edited = client.patch(
        path, json={"note": "lr too high for sgd", "tags": ["tuned", "sgd"]}, headers=bearer(team.member)
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["note"] == "lr too high for sgd" and edited.json()["tags"] == ["tuned", "sgd"]
    assert edited.json()["spec"] == created["spec"]  # what was submitted stays on record

    only_tags = client.patch(path, json={"tags": []}, headers=bearer(team.member)).json()
    assert only_tags["tags"] == [] and only_tags["note"] == "lr too high for sgd"
    cleared = client.patch(path, json={"note": None}, headers=bearer(team.member)).json()
    assert cleared["note"] is None and cleared["tags"] == []
    assert client.patch(path, json={}, headers=bearer(team.member)).json() == cleared
    assert _listed(client, team.member)[created["id"]]["note"] is None


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tags": ["ok", ""]}, ["body", "tags", 1]),
        ({"tags": ["x"] * 33}, ["body", "tags"]),
        ({"tags": None}, ["body", "tags"]),
        ({"note": "n" * 10_001}, ["body", "note"]),
        ({"name": "renamed"}, ["body", "name"]),
    ],
)
def test_patch_rejects_bad_edits_naming_the_field(team_client, body, loc):
    team = make_team()
    created = submit(team_client, team.member)
    response = team_client.patch(f"{COMPARISONS}/{created['id']}", json=body, headers=bearer(team.member))
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]


# --- soft delete -------------------------------------------------------------------------------


def test_delete_hides_the_comparison_cancels_its_runs_and_keeps_its_rows(team_client):
    client = team_client
    team = make_team()
    created = submit(client, team.member)
    kept = submit(client, team.member)["id"]
    finished, *unfinished = [run["id"] for run in created["runs"]]
    record_steps(finished, [3.0, 2.0])
    path = f"{COMPARISONS}/{created['id']}"

    assert client.delete(path, headers=bearer(team.member)).status_code == 403
    assert client.delete(path, headers=bearer(team.admin)).status_code == 204

    assert client.get(path, headers=bearer(team.admin)).status_code == 404
    assert client.get(f"/api/v1/runs/{finished}/steps", headers=bearer(team.admin)).status_code == 404
    assert client.patch(path, json={"note": "x"}, headers=bearer(team.admin)).status_code == 404
    assert client.delete(path, headers=bearer(team.admin)).status_code == 404
    listed = _listed(client, team.member)
    assert created["id"] not in listed and kept in listed
    with transaction() as session:
        assert session.get(Comparison, created["id"]).deleted_at is not None
        statuses = dict(session.execute(select(Run.id, Run.status).where(Run.comparison_id == created["id"])).all())
        assert statuses == {finished: "succeeded"} | dict.fromkeys(unfinished, "cancelled")
        assert session.scalar(select(func.count()).select_from(Step).where(Step.run_id == finished)) == 2


# --- idempotent submit -------------------------------------------------------------------------


def _count_with_key(team_id: str, key: str) -> int:
    with transaction() as session:
        return session.scalar(
            select(func.count())
            .select_from(Comparison)
            .where(Comparison.team_id == team_id, Comparison.idempotency_key == key)
        )


def test_the_same_idempotency_key_and_body_answer_the_same_comparison(team_client):
    client = team_client
    team, other = make_team(), make_team()
    headers = bearer(team.member) | {"Idempotency-Key": "nightly-2026-11-21"}
    first = client.post(COMPARISONS, json=function_spec(), headers=headers)
    assert first.status_code == 202
    again = client.post(COMPARISONS, json=function_spec(), headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["runs"] == first.json()["runs"]
    # the same body written differently is the same comparison: the validated spec is compared
    spelled_out = function_spec(seeds=[0, 1], tags=[], device="auto")
    assert client.post(COMPARISONS, json=spelled_out, headers=headers).json()["id"] == first.json()["id"]
    assert _count_with_key(team.id, "nightly-2026-11-21") == 1

    different = client.post(COMPARISONS, json=function_spec(seeds=[5]), headers=headers)
    assert different.status_code == 409 and "Idempotency-Key" in different.json()["detail"]
    # keys are per team
    theirs = client.post(
        COMPARISONS, json=function_spec(), headers=bearer(other.member) | {"Idempotency-Key": "nightly-2026-11-21"}
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    # without a key, every submit is a new comparison
    assert submit(client, team.member)["id"] != first.json()["id"]


def test_a_deleted_comparisons_idempotency_key_stays_spent(team_client):
    client = team_client
    team = make_team()
    headers = bearer(team.admin) | {"Idempotency-Key": "once"}
    created = client.post(COMPARISONS, json=function_spec(), headers=headers).json()
    assert client.delete(f"{COMPARISONS}/{created['id']}", headers=bearer(team.admin)).status_code == 204
    response = client.post(COMPARISONS, json=function_spec(), headers=headers)
    assert response.status_code == 409 and "deleted" in response.json()["detail"]


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_a_bad_idempotency_key_is_422_naming_the_header(team_client, key):
    team = make_team()
    response = team_client.post(
        COMPARISONS, json=function_spec(), headers=bearer(team.member) | {"Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert ["header", "idempotency-key"] in [error["loc"] for error in response.json()["detail"]]


def test_concurrent_identical_submits_create_one_comparison(team_client):
    client = team_client
    team = make_team()
    headers = bearer(team.member) | {"Idempotency-Key": "retry-storm"}
    n = 6
    start = threading.Barrier(n)

    def post(_):
        start.wait()
        return client.post(COMPARISONS, json=function_spec(), headers=headers)

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(post, range(n)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * (n - 1) + [202], [answer.text[:200] for answer in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert _count_with_key(team.id, "retry-storm") == 1


# --- limits ------------------------------------------------------------------------------------


def _error(response) -> tuple[list, str]:
    detail = response.json()["detail"]
    return detail[0]["loc"], detail[0]["msg"]


def test_runs_per_comparison_over_the_teams_limit_is_422(team_client):
    team = make_team(max_runs_per_comparison=3)
    response = team_client.post(COMPARISONS, json=function_spec(), headers=bearer(team.member))  # 2 × 2 runs
    assert response.status_code == 422
    loc, message = _error(response)
    assert loc == ["body", "seeds"] and "4 runs" in message and "limit of 3" in message
    assert f"optibench admin set-limits {team.name} --max-runs N" in message and "this team's own limit" in message
    assert team_client.post(COMPARISONS, json=function_spec(seeds=[0]), headers=bearer(team.member)).status_code == 202


def test_steps_per_comparison_over_the_setting_is_422(team_client, settings_env):
    settings_env("OPTIBENCH_MAX_STEPS_PER_COMPARISON", "79")
    team = make_team()
    response = team_client.post(COMPARISONS, json=function_spec(), headers=bearer(team.member))  # 4 runs × 20 steps
    assert response.status_code == 422
    loc, message = _error(response)
    assert loc == ["body", "training"] and "80 steps" in message and "limit of 79" in message
    assert "OPTIBENCH_MAX_STEPS_PER_COMPARISON" in message and f"set-limits {team.name} --max-steps N" in message
    # a team's own limit overrides the setting
    roomy = make_team(max_steps_per_comparison=80)
    assert team_client.post(COMPARISONS, json=function_spec(), headers=bearer(roomy.member)).status_code == 202


def test_running_comparisons_over_the_limit_is_429_until_one_ends(team_client):
    client = team_client
    team, other = make_team(max_running_comparisons=2), make_team(max_running_comparisons=2)
    first = submit(client, team.member, seeds=[0])
    submit(client, team.member, seeds=[1])
    over = client.post(COMPARISONS, json=function_spec(seeds=[2]), headers=bearer(team.member))
    assert over.status_code == 429 and over.headers["retry-after"].isdigit()
    message = over.json()["detail"]
    assert "2 comparisons queued or running" in message and f"set-limits {team.name} --max-running N" in message
    assert submit(client, other.member)  # another team's limit is its own

    assert client.post(f"{COMPARISONS}/{first['id']}/cancel", headers=bearer(team.member)).status_code == 200
    assert client.post(COMPARISONS, json=function_spec(seeds=[2]), headers=bearer(team.member)).status_code == 202


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_concurrent_submits_never_pass_the_running_limit(team_client, limit):
    team = make_team(max_running_comparisons=limit)
    n = 16
    start = threading.Barrier(n)

    def post(seed: int):
        start.wait()
        return team_client.post(COMPARISONS, json=function_spec(seeds=[seed]), headers=bearer(team.member))

    with ThreadPoolExecutor(n) as pool:
        codes = sorted(answer.status_code for answer in pool.map(post, range(n)))
    assert codes == [202] * limit + [429] * (n - limit)
    with transaction() as session:
        assert (
            session.scalar(select(func.count()).select_from(Comparison).where(Comparison.team_id == team.id)) == limit
        )


def test_a_retry_answers_even_at_the_limit(team_client):
    client = team_client
    team = make_team(max_running_comparisons=1)
    headers = bearer(team.member) | {"Idempotency-Key": "at-the-limit"}
    first = client.post(COMPARISONS, json=function_spec(), headers=headers)
    assert first.status_code == 202
    retry = client.post(COMPARISONS, json=function_spec(), headers=headers)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    assert client.post(COMPARISONS, json=function_spec(), headers=bearer(team.member)).status_code == 429
