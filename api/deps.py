from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api import auth
from api.auth import Principal
from db import history, teams
from db.models import ADMIN, Comparison
from db.session import new_session
from optibench.settings import Settings, get_settings
from services import keys

__all__ = [
    "AdminDep",
    "PageDep",
    "Principal",
    "PrincipalDep",
    "SessionDep",
    "SettingsDep",
    "SharedComparisonDep",
    "comparison_or_404",
]


# Sync dependencies cost a worker-thread hop each per request, and under load every hop queues for
# the GIL behind the threads running endpoints: what needs no I/O runs on the event loop.


async def _session(request: Request) -> AsyncIterator[Session]:
    """The request's session, in autocommit for safe methods (see ``new_session``). Opening one does no
    I/O, nor does closing one in autocommit, which has nothing to roll back; closing any other that
    still holds a connection does (its rollback), so that happens in a worker thread."""
    autocommit = request.method in auth.SAFE_METHODS
    session = new_session(autocommit=autocommit)
    try:
        yield session
    finally:
        if session.in_transaction() and not autocommit:
            await run_in_threadpool(session.close)
        else:
            session.close()


async def _settings() -> Settings:
    return get_settings()


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def _submitted_csrf_token(request: Request) -> str | None:
    """The CSRF token an unsafe request carries: the header, else the form field of a form post."""
    if request.method in auth.SAFE_METHODS:
        return None
    if token := request.headers.get(auth.CSRF_HEADER):
        return token
    if request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get(auth.CSRF_FIELD)
        return field if isinstance(field, str) else None
    return None


#: parses the header, and puts the scheme in the OpenAPI document (the "Authorize" button of /docs)
_bearer = HTTPBearer(
    auto_error=False, description="an API key: `optibench admin create-key`, or POST /api/v1/admin/keys"
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def current_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    bearer: BearerDep,
    submitted_csrf: Annotated[str | None, Depends(_submitted_csrf_token)],
) -> Principal:
    """The one authentication of the API: a Bearer key, else the dashboard session (whose unsafe
    requests need the CSRF token). 401 without either, with a wrong or with a revoked key."""
    if settings.auth == "off":
        return auth.LOCAL_PRINCIPAL
    return await run_in_threadpool(_authenticate, request, session, bearer, submitted_csrf)


def _authenticate(
    request: Request, session: Session, bearer: HTTPAuthorizationCredentials | None, submitted_csrf: str | None
) -> Principal:
    if bearer is not None:
        key = auth.live_key(teams.key_by_hash(session, keys.hash_key(bearer.credentials)))
    elif "authorization" in request.headers:
        raise auth.unauthenticated("the Authorization header must be 'Bearer <API key>'")
    elif secret := request.session.get(auth.SESSION_FIELD):
        try:
            key = auth.session_key(session, secret)
        except HTTPException:
            request.session.clear()
            raise
        if request.method not in auth.SAFE_METHODS:
            auth.check_csrf(request, submitted_csrf)
    else:
        raise auth.unauthenticated("an API key is required: send 'Authorization: Bearer <key>', or log in at /login")
    return auth.principal_of(session, key)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    if principal.role != ADMIN:
        raise HTTPException(403, "this needs an admin key of the team")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def page_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    bearer: BearerDep,
    submitted_csrf: Annotated[str | None, Depends(_submitted_csrf_token)],
) -> Principal:
    """For HTML pages: like the API, but without a valid session the browser goes to the login page."""
    try:
        return await current_principal(request, session, settings, bearer, submitted_csrf)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, "log in first", headers={"Location": f"/login?next={quote(target)}"}) from None


PageDep = Annotated[Principal, Depends(page_principal)]


def shared_comparison(
    token: Annotated[str, Path(max_length=200)], session: SessionDep, settings: SettingsDep
) -> Comparison:
    """The comparison a share link shows, for anyone holding the link. A forged, expired or revoked
    token, or a deleted comparison, is 404 like a missing one."""
    link_id = auth.share_link_id(settings, token)
    comparison = teams.shared_comparison(session, link_id) if link_id else None
    if comparison is None:
        raise HTTPException(404, "this share link does not exist, has expired or was revoked")
    return comparison


SharedComparisonDep = Annotated[Comparison, Depends(shared_comparison)]


def comparison_or_404(session: Session, comparison_id: str, principal: Principal) -> Comparison:
    """The caller's team's comparison; another team's, a deleted and a missing one are all 404."""
    comparison = history.get_comparison(session, comparison_id, principal.team_id)
    if comparison is None:
        raise HTTPException(404, f"comparison {comparison_id!r} not found")
    return comparison
