"""The dashboards' login: paste an API key once, then a signed session cookie (HttpOnly, SameSite=Lax)
holding the secret of a dashboard_sessions row stands for it, until logout revokes the row. The forms
carry the session's CSRF token."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import auth
from api.deps import SessionDep, SettingsDep
from db import teams
from services import keys

router = APIRouter(tags=["login"], include_in_schema=False)


def _form(request: Request, next_path: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    return auth.templates.TemplateResponse(
        request, "login.html", {"next": next_path, "error": error}, status_code=status_code
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return _form(request, auth.local_path(next))


@router.post("/login", response_class=HTMLResponse)
def log_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    auth.check_csrf(request, csrf_token)
    next_path = auth.local_path(next)
    if settings.auth == "off":
        return RedirectResponse(next_path, status_code=303)
    found = teams.key_by_hash(session, keys.hash_key(key.strip())) if key.strip() else None
    if found is None or found.revoked_at is not None:
        return _form(request, next_path, "This key is unknown or was revoked.", status_code=401)
    auth.log_in(request, session, found)
    teams.touch_key(session, found)
    session.commit()
    return RedirectResponse(next_path, status_code=303)


@router.post("/logout")
def log_out(
    request: Request, session: SessionDep, csrf_token: Annotated[str | None, Form(max_length=200)] = None
) -> Response:
    if request.session.get(auth.SESSION_FIELD):
        auth.check_csrf(request, request.headers.get(auth.CSRF_HEADER) or csrf_token)
    auth.log_out(request, session)
    session.commit()
    return RedirectResponse("/login", status_code=303)
