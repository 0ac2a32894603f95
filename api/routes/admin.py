"""A team's own account: who am I, and (admins) the team's API keys. Teams themselves are created by
the operator with `optibench admin create-team`."""

from fastapi import APIRouter, HTTPException, Response

from api.deps import AdminDep, PrincipalDep, SessionDep, SettingsDep
from api.schemas import NOT_FOUND, KeyCreate, KeyCreated, KeyOut, Limits, Me
from db import teams
from db.models import Team
from services import keys

router = APIRouter(prefix="/api/v1", tags=["teams"])


@router.get("/me", response_model=Me)
def me(principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> Me:
    """The caller's team, role and key, and the limits the team's submits are held to."""
    team = session.get_one(Team, principal.team_id)
    key = teams.key_by_id(session, principal.key_id) if principal.key_id else None
    limits = teams.limits_of(team, settings)
    return Me(
        team_id=team.id,
        team_name=team.name,
        role=principal.role,
        key_name=principal.name,
        key_id=principal.key_id,
        key_prefix=key.prefix if key else None,
        limits=Limits(**{name: limit.value for name, limit in limits.items()}),
    )


@router.post("/admin/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, principal: AdminDep, session: SessionDep) -> KeyCreated:
    """A new key of the caller's team. The answer is the only time the key is shown."""
    key, secret = keys.issue_key(session, principal.team_id, body.name, body.role)
    session.commit()
    return KeyCreated(**KeyOut.of(key).model_dump(), key=secret)


@router.get("/admin/keys", response_model=list[KeyOut])
def list_keys(principal: AdminDep, session: SessionDep) -> list[KeyOut]:
    """Every key of the team, revoked ones included, oldest first; prefixes only, never the keys."""
    return [KeyOut.of(key) for key in teams.list_keys(session, principal.team_id)]


@router.delete("/admin/keys/{key_id}", status_code=204, responses=NOT_FOUND)
def revoke_key(key_id: str, principal: AdminDep, session: SessionDep) -> Response:
    """Revoke a key of the team: its next request is 401, and so is any dashboard session it opened."""
    key = teams.key_by_id(session, key_id, principal.team_id)
    if key is None:
        raise HTTPException(404, f"key {key_id!r} not found")
    teams.revoke_key(key)
    session.commit()
    return Response(status_code=204)
