"""Read-only share links: a signed, expiring, revocable URL that shows one comparison to anyone
holding it, without an API key."""

from datetime import timedelta

from fastapi import APIRouter, Body, HTTPException, Request, Response

from api import auth
from api.deps import PrincipalDep, SessionDep, SettingsDep, SharedComparisonDep
from api.schemas import NOT_FOUND, ComparisonOut, ShareLinkCreate, ShareLinkOut
from db import teams
from db.models import ShareLink, utcnow
from optibench.settings import Settings
from services import access

router = APIRouter(prefix="/api/v1", tags=["share links"])
#: no API key: the token is the permission
public_router = APIRouter(prefix="/api/v1", tags=["share links"])


def share_url(request: Request, settings: Settings, token: str) -> str:
    """OPTIBENCH_PUBLIC_URL and the link's path, never the request's Host header, which the client
    chooses. Unset: with auth off (one person on a loopback address) the address the request came to;
    with auth required the path alone, relative to wherever the team reaches the server."""
    path = request.app.url_path_for("read_shared_comparison", token=token)
    if settings.public_url:
        return settings.public_url + path
    if settings.auth == "off":
        return str(request.url_for("read_shared_comparison", token=token))
    return str(path)


def _out(link: ShareLink, request: Request, settings: Settings) -> ShareLinkOut:
    token = auth.share_token(settings, link.id)
    return ShareLinkOut(
        id=link.id,
        comparison_id=link.comparison_id,
        token=token,
        url=share_url(request, settings, token),
        created_by=link.created_by,
        created_at=link.created_at,
        expires_at=link.expires_at,
        revoked_at=link.revoked_at,
    )


@router.post("/comparisons/{comparison_id}/share", status_code=201, response_model=ShareLinkOut, responses=NOT_FOUND)
def create_share_link(
    comparison_id: str,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    body: ShareLinkCreate = Body(default_factory=ShareLinkCreate),
) -> ShareLinkOut:
    """A link that lets anyone read this comparison until it expires (default 7 days) or is revoked."""
    access.comparison(session, comparison_id, principal.team_id)
    link = teams.create_share_link(session, comparison_id, principal.name, timedelta(hours=body.expires_in_hours))
    session.commit()
    return _out(link, request, settings)


@router.get("/comparisons/{comparison_id}/share", response_model=list[ShareLinkOut], responses=NOT_FOUND)
def list_share_links(
    comparison_id: str, request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> list[ShareLinkOut]:
    """Every link of the comparison, expired and revoked ones included, oldest first."""
    access.comparison(session, comparison_id, principal.team_id)
    return [_out(link, request, settings) for link in teams.share_links(session, comparison_id)]


@router.delete("/share-links/{link_id}", status_code=204, responses=NOT_FOUND)
def revoke_share_link(link_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """The link stops working at once; revoking it again changes nothing."""
    link = teams.team_share_link(session, link_id, principal.team_id)
    if link is None:
        raise HTTPException(404, f"share link {link_id!r} not found")
    link.revoked_at = link.revoked_at or utcnow()
    session.commit()
    return Response(status_code=204)


@public_router.get("/shared/{token}", response_model=ComparisonOut, responses=NOT_FOUND)
def read_shared_comparison(comparison: SharedComparisonDep) -> ComparisonOut:
    """The shared comparison, for anyone holding the link: no API key needed."""
    return ComparisonOut.full(comparison)
