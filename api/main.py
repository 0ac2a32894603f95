"""The FastAPI application."""

import gc
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import auth
from api.deps import current_principal
from api.routes import (
    admin,
    catalog,
    comparisons,
    curves,
    export,
    figures,
    health,
    ingest,
    login,
    pages,
    runs,
    share,
    suites,
    summary,
    tracking,
)
from api.schemas import HTTPError, printable_json
from api.text_guard import UnsafeTextGuard
from engine import config as engine_config
from optibench import __version__
from optibench.settings import get_settings
from services.access import InvalidQuery, NotFound

#: seconds a client should wait before retrying while the database is down
RETRY_AFTER_S = 5
#: every route of these needs a key (or a dashboard session); the routes also take the principal
#: themselves, to scope what they read to its team
AUTHENTICATED = (comparisons, runs, ingest, curves, summary, figures, export, catalog, admin, share, suites, tracking)
STATIC = Path(__file__).parent / "static"
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": HTTPError, "description": "no API key, a wrong or a revoked one"},
    403: {"model": HTTPError, "description": "an admin-only route, or a session without its CSRF token"},
}


@asynccontextmanager
async def _lifespan(_app: FastAPI):
    from engine import registry
    from worker.sweeper import start_sweeper

    anyio.to_thread.current_default_thread_limiter().total_tokens = get_settings().api_threads
    # The components are imported now rather than by the first submit, then everything that exists
    # is moved out of the garbage collector's reach: its full passes would otherwise walk the few
    # hundred thousand objects of torch and the components, 100-300 ms during which this process
    # answers nothing.
    registry.discover()
    gc.collect()
    gc.freeze()
    stop = threading.Event()
    start_sweeper(stop)
    yield
    stop.set()


def create_app() -> FastAPI:
    engine_config.configure(data_root=get_settings().idx_root)
    app = FastAPI(
        lifespan=_lifespan,
        max_body_size=get_settings().max_body_bytes,
        title="optibench",
        version=__version__,
        description="Paired, reproducible optimizer comparisons: submit a comparison, read every step back.",
        exception_handlers={
            RequestValidationError: _validation_error,
            StarletteHTTPException: _http_error,
            NotFound: _not_found,
            InvalidQuery: _invalid_query,
            OperationalError: _database_unavailable,
            DBAPIError: _database_unavailable,
        },
    )
    for module in AUTHENTICATED:
        app.include_router(module.router, dependencies=[Depends(current_principal)], responses=AUTH_ERRORS)
    # the share page and its reads: the token is the permission
    for public in (share.public_router, figures.shared_router, pages.public_router, login.router, health.router):
        app.include_router(public)
    # HTML pages send a browser without a session to /login instead of answering 401
    app.include_router(pages.router)
    app.include_router(suites.page_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    auth.install(app, get_settings())
    # outermost: bad text is refused before sessions, routes and the database see it
    app.add_middleware(UnsafeTextGuard, router=app.router, max_body_bytes=get_settings().max_body_bytes)
    return app


async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _invalid_query(request: Request, exc: InvalidQuery) -> JSONResponse:
    return await _validation_error(
        request,
        RequestValidationError(
            [{"type": "value_error", "loc": ("query", exc.field), "msg": str(exc), "input": exc.value}]
        ),
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A body that is not UTF-8 is malformed JSON too: 422 like any other, not FastAPI's bare 400."""
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return JSONResponse(
            status_code=422,
            content={
                "detail": [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error: the body is not UTF-8"}]
            },
        )
    return await http_exception_handler(request, exc)


async def _database_unavailable(_request: Request, exc: DBAPIError) -> JSONResponse:
    if isinstance(exc, DBAPIError) and not (isinstance(exc, OperationalError) or exc.connection_invalidated):
        raise exc
    logging.getLogger("optibench.api").warning("database unavailable: %s", type(exc.orig).__name__)
    return JSONResponse(
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        content={"detail": "the database is unavailable; retry shortly"},
    )


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # the rejected input goes back in the error, and it may be NaN, infinity or text no encoder takes
    return JSONResponse(status_code=422, content={"detail": printable_json(jsonable_encoder(exc.errors()))})


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
