"""The FastAPI application."""

import logging
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.routes import catalog, comparisons, health, runs
from optibench import __version__


def create_app() -> FastAPI:
    app = FastAPI(
        title="optibench",
        version=__version__,
        description="Paired, reproducible optimizer comparisons: submit a comparison, read every step back.",
    )
    for module in (comparisons, runs, catalog, health):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


def _json_safe(value):
    """The rejected input goes back in the error; JSON cannot carry NaN or infinity as numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
