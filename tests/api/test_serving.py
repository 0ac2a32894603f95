"""How an API process serves: the sync part of its requests (their database work) runs on
OPTIBENCH_API_THREADS threads, and what startup made is out of the garbage collector's way."""

from __future__ import annotations

import gc

import anyio.to_thread
from fastapi.testclient import TestClient


def test_requests_run_on_the_configured_number_of_threads(use_database, settings_env):
    from api.main import create_app

    settings_env("OPTIBENCH_API_THREADS", "3")
    with TestClient(create_app()) as client:
        assert client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens) == 3
        assert client.get("/api/v1/comparisons").status_code == 200


def test_startup_leaves_the_collector_only_what_requests_make(use_database):
    """A full collection walks every tracked object: after startup, those of torch and the components
    are frozen, and only what requests leave is walked."""
    from api.main import create_app

    gc.unfreeze()
    with TestClient(create_app()) as client:
        assert client.get("/api/v1/comparisons").status_code == 200
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())
