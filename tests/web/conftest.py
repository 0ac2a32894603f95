"""A real `optibench serve` (tests/e2e's fixtures, embedded default) with a few small comparisons
trained by its worker, and Debian's Chromium driven by Playwright. Each test's page is watched for
console errors and requests leaving the server, and screenshotted into artifacts/screenshots/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests.conftest import require
from tests.e2e.conftest import EXAMPLES, REPO, Service, start_service, stop_service
from tests.web.browser import CHROMIUM, IRIS_SWEEP, ROSENBROCK, Watched, launch, screenshot, submit, watch


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        require("Chromium", FileNotFoundError(f"{CHROMIUM}: apt-get install chromium"))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def web_service(tmp_path_factory):
    # two training processes: the pages' comparisons are many short runs
    service = start_service("embedded", {"OPTIBENCH_WORKER_CONCURRENCY": "2"}, tmp_path_factory.mktemp("web-serve"))
    yield service
    if service.process.poll() is None:
        stop_service(service)


@pytest.fixture(scope="session")
def finished(web_service) -> dict[str, dict]:
    """The comparisons every page test reads, submitted together and trained to the end."""
    specs = {
        "rosenbrock": ROSENBROCK,
        "iris": IRIS_SWEEP,
        "quadratic": json.loads((EXAMPLES / "adam_vs_sgd_quadratic.json").read_text()),
    }
    submitted = {key: submit(web_service, spec) for key, spec in specs.items()}
    done = {key: web_service.wait_for(made["id"]) for key, made in submitted.items()}
    assert all(c["status"] == "succeeded" for c in done.values()), {k: c["status"] for k, c in done.items()}
    return done


@pytest.fixture
def page(browser, web_service, request) -> Watched:
    """A fresh browser context on the service; screenshotted after the test, passed or not."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=web_service.url)
    watched = watch(context.new_page(), web_service.url)
    yield watched
    screenshot(watched.page, re.sub(r"\W+", "_", request.node.name), full_page=True)
    context.close()


SECRET_KEY = "a-web-test-secret-key-for-sessions"


@pytest.fixture(scope="session")
def auth_service(tmp_path_factory) -> tuple[Service, str]:
    """A second service with OPTIBENCH_AUTH=required, and an admin key of a team made by the CLI."""
    overrides = {"OPTIBENCH_AUTH": "required", "OPTIBENCH_SECRET_KEY": SECRET_KEY}
    data_dir = tmp_path_factory.mktemp("web-auth")
    service = start_service("embedded", overrides, data_dir)
    env = {**os.environ, "OPTIBENCH_DATA_DIR": str(data_dir), **overrides}
    env.pop("OPTIBENCH_DATABASE_URL", None)
    created = subprocess.run(
        [sys.executable, "-m", "optibench.cli", "admin", "create-team", "web"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    assert httpx.get(f"{service.url}/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    yield service, key
    if service.process.poll() is None:
        stop_service(service)
