"""The FastAPI application."""

import logging

from fastapi import FastAPI

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
    return app


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
