"""Shared by the team tests: the API in-process with OPTIBENCH_AUTH=required on both databases, and
teams with keys made directly in the database (the CLI and the admin routes are tested on their own)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from db import teams as team_rows
from db.models import ADMIN, MEMBER, Run, Step, utcnow
from db.session import transaction

COMPARISONS = "/api/v1/comparisons"
SECRET_KEY = "a-test-secret-key-that-signs-sessions-and-share-links"


def function_spec(**overrides) -> dict:
    spec = {
        "name": "team quadratic",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": 20},
        "optimizers": [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.05}}],
        "seeds": [0, 1],
    }
    return spec | overrides


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Team:
    id: str
    name: str
    member: str
    admin: str
    #: a member key of the team, revoked
    revoked: str


def make_team(**limits: int | None) -> Team:
    from services.keys import issue_key

    name = f"team-{uuid.uuid4().hex[:8]}"
    with transaction() as session:
        team = team_rows.create_team(session, name, **limits)
        keys = {role: issue_key(session, team.id, f"{role} of {name}", role)[1] for role in (MEMBER, ADMIN)}
        revoked, secret = issue_key(session, team.id, f"revoked of {name}", MEMBER)
        team_rows.revoke_key(revoked)
    return Team(team.id, name, keys[MEMBER], keys[ADMIN], secret)


def submit(client: TestClient, key: str, **overrides) -> dict:
    response = client.post(COMPARISONS, json=function_spec(**overrides), headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()


def record_steps(run_id: str, losses: list[float]) -> None:
    """What a worker would have written: the rows and the run's outcome."""
    with transaction() as session:
        session.add_all(
            Step(run_id=run_id, step=i, loss=loss, time_s=0.01 * i, step_time_ms=10.0, lr=0.1, x=[loss])
            for i, loss in enumerate(losses)
        )
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                status="succeeded",
                steps_done=len(losses),
                final_loss=losses[-1],
                best_loss=min(losses),
                wall_time_s=0.01 * len(losses),
                started_at=utcnow(),
                finished_at=utcnow(),
            )
        )


@pytest.fixture
def team_client(use_database, monkeypatch):
    """The API with OPTIBENCH_AUTH=required. No lifespan (no sweeper thread): published tasks wait in
    the embedded broker, and nothing consumes them."""
    from api.main import create_app
    from optibench.settings import get_settings

    monkeypatch.setenv("OPTIBENCH_AUTH", "required")
    monkeypatch.setenv("OPTIBENCH_SECRET_KEY", SECRET_KEY)
    get_settings.cache_clear()
    yield TestClient(create_app())
    get_settings.cache_clear()
