"""Who is calling. The API takes ``Authorization: Bearer <key>``; the dashboards keep the key's id in
a signed session cookie (HttpOnly, SameSite=Lax) whose unsafe requests must carry the session's CSRF
token; share links carry a signed token naming a ShareLink row. Keys are stored as SHA-256 only."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import pass_context
from markupsafe import Markup, escape
from sqlalchemy import Row
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from db import teams
from db.models import ADMIN, LOCAL_TEAM_ID, ApiKey
from optibench.settings import Settings

KEY_PREFIX = "ob_"
#: shown in listings to tell keys apart: "ob_" and 8 random characters (48 of the key's 256 bits)
DISPLAY_CHARS = 11
SESSION_COOKIE = "optibench_session"
SESSION_MAX_AGE_S = 7 * 24 * 3600
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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(session: Session, team_id: str, name: str, role: str) -> tuple[ApiKey, str]:
    """A new key: the secret is returned here once and never stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return teams.add_key(session, team_id, name, role, hash_key(secret), secret[:DISPLAY_CHARS]), secret


def live_key(key: ApiKey | Row | None) -> ApiKey | Row:
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
        raise HTTPException(403, f"missing or wrong CSRF token: send the {CSRF_FIELD} form field or the "
                                 f"{CSRF_HEADER} header of this session")


def log_in(request: Request, key: ApiKey | Row) -> None:
    """A fresh session: nothing from before the login survives, the CSRF token included."""
    request.session.clear()
    request.session.update({"key_id": key.id, CSRF_FIELD: secrets.token_urlsafe(32)})


def local_path(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another site."""
    parts = urlsplit(target or "/")
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or "\\" in target:
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
    app.add_middleware(SessionMiddleware, secret_key=settings.signing_key(), session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, same_site="lax", https_only=settings.session_https_only)


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


# --- where auth may be off ---------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
