"""Who is calling. The API takes ``Authorization: Bearer <key>``; a dashboard login is a row of
``dashboard_sessions`` whose secret travels in a signed session cookie (HttpOnly, SameSite=Lax), and
whose unsafe requests must carry the session's CSRF token; logging out revokes the row. Share links
carry a signed token naming a ShareLink row. Keys and session secrets are stored as SHA-256 only."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import pass_context
from markupsafe import Markup, escape
from sqlalchemy import Row
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from db import teams
from db.models import ADMIN, LOCAL_TEAM_ID, ApiKey, utcnow
from optibench.settings import Settings
from services.keys import hash_key

SESSION_COOKIE = "optibench_session"
SESSION_MAX_AGE_S = 7 * 24 * 3600
#: the cookie's field holding the secret of the session's dashboard_sessions row
SESSION_FIELD = "session"
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: every read and write is scoped to ``team_id``."""

    team_id: str
    role: str
    #: recorded as the submitter of comparisons
    name: str
    key_id: str | None = None


#: everyone, when OPTIBENCH_AUTH=off (one person on a loopback address)
LOCAL_PRINCIPAL = Principal(team_id=LOCAL_TEAM_ID, role=ADMIN, name="local")


def unauthenticated(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


# --- keys --------------------------------------------------------------------------------------


def live_key(key: Row | None) -> Row:
    if key is None:
        raise unauthenticated("unknown API key")
    if key.revoked_at is not None:
        raise unauthenticated("this API key was revoked")
    return key


def principal_of(session: Session, key: ApiKey | Row) -> Principal:
    if teams.touch_key(session, key):
        session.commit()
    return Principal(team_id=key.team_id, role=key.role, name=key.name, key_id=key.id)


# --- dashboard sessions ------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use: a hidden ``csrf_token`` field in forms, or the
    ``X-CSRF-Token`` header in scripts."""
    return request.session.setdefault(CSRF_FIELD, secrets.token_urlsafe(32))


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get(CSRF_FIELD)
    if not (expected and submitted and secrets.compare_digest(expected, submitted)):
        raise HTTPException(
            403,
            f"missing or wrong CSRF token: send the {CSRF_FIELD} form field or the "
            f"{CSRF_HEADER} header of this session",
        )


def log_in(request: Request, session: Session, key: ApiKey | Row) -> None:
    """A fresh session: a new row, and nothing from before the login survives in the cookie, the CSRF
    token included. The caller commits."""
    secret = secrets.token_urlsafe(32)
    teams.add_dashboard_session(session, hash_key(secret), key.id, timedelta(seconds=SESSION_MAX_AGE_S))
    request.session.clear()
    request.session.update({SESSION_FIELD: secret, CSRF_FIELD: secrets.token_urlsafe(32)})


def session_key(session: Session, secret: str) -> Row:
    """The key of a live dashboard session; 401 when the session was logged out, has expired, or its
    key was revoked."""
    found = teams.key_by_session(session, hash_key(secret)) if isinstance(secret, str) else None
    if found is None or found.session_revoked_at is not None or found.expires_at <= utcnow():
        raise unauthenticated("this session has ended: log in again at /login")
    return live_key(found)


def log_out(request: Request, session: Session) -> None:
    """Revoke the session's row, so that a saved copy of the cookie stops working, and empty the cookie.
    The caller commits."""
    if isinstance(secret := request.session.get(SESSION_FIELD), str):
        teams.end_dashboard_session(session, hash_key(secret))
    request.session.clear()


def local_path(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another site, else "/". Browsers
    read a backslash as a slash and drop tabs and newlines, so "/\\evil", "/\t/evil" and "///evil" all
    lead to another host; the percent-decoded form is held to the same rules ("/%2F%2Fevil")."""
    if not target:
        return "/"
    for form in (target, unquote(target)):
        if (
            not form.startswith("/")
            or form.startswith("//")
            or "\\" in form
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in form)
        ):
            return "/"
        parts = urlsplit(form)
        if parts.scheme or parts.netloc:
            return "/"
    return target


@pass_context
def _csrf_field(context) -> Markup:
    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf_token(context["request"]))}">')


@pass_context
def _csrf_token(context) -> str:
    return csrf_token(context["request"])


#: pages: ``{{ csrf_field() }}`` inside every form, ``{{ csrf_token() }}`` for scripts (base.html puts
#: it in <meta name="csrf-token">)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals.update(csrf_field=_csrf_field, csrf_token=_csrf_token)


def install(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.signing_key(),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=settings.session_https_only,
    )


# --- share links -------------------------------------------------------------------------------


def _share_serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.signing_key(), salt="share")


def share_token(settings: Settings, link_id: str) -> str:
    return _share_serializer(settings).dumps(link_id)


def share_link_id(settings: Settings, token: str) -> str | None:
    try:
        link_id = _share_serializer(settings).loads(token)
    except BadSignature:
        return None
    return link_id if isinstance(link_id, str) else None
