"""Driving the dashboards in Debian's Chromium with Playwright (no browser download), shared by the
web tests and docs/screenshots.py: the comparisons they show, launching, watching a page for console
errors and requests that leave the server, waiting for a chart to be drawn, and reading its traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from playwright.sync_api import Browser, Locator, Page, Playwright
from sqlalchemy import update

from tests.e2e.conftest import Service

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"

#: a function problem in 2-D: the contour plot with each run's path
ROSENBROCK = {
    "name": "Adam vs SGD with momentum on Rosenbrock",
    "problem": {"function": {"name": "rosenbrock"}, "x0": [-1.2, 1.0]},
    "training": {"steps": 1500},
    "optimizers": [
        {"name": "adam", "params": {"lr": 0.05}},
        {"name": "sgd", "params": {"lr": 0.0005, "momentum": 0.9}, "label": "sgd momentum"},
    ],
    "seeds": [0, 1],
    "tags": ["web", "trajectory"],
}
#: a dataset problem with evaluations and a learning-rate sweep
IRIS_SWEEP = {
    "name": "MLP on iris: an Adam learning-rate sweep against SGD",
    "problem": {
        "model": {"name": "mlp", "params": {"hidden": [16]}},
        "dataset": {"name": "iris"},
        "loss": "cross_entropy",
        "validation_fraction": 0.2,
    },
    "training": {"epochs": 150, "batch_size": "full", "eval_every": 10},
    "optimizers": [
        {"name": "adam", "sweep": {"lr": [0.003, 0.03]}},
        {"name": "sgd", "params": {"lr": 0.1, "momentum": 0.9}},
    ],
    "seeds": [0, 1, 2],
    "tags": ["web", "sweep"],
}


#: 1,000 runs on one page: two optimizers, each a sweep of 50 learning rates, 10 seeds (100 settings)
THOUSAND_RUNS = {
    "name": "1,000 runs",
    "problem": {"model": {"name": "linear"}, "dataset": {"name": "iris"}, "loss": "cross_entropy"},
    "training": {"steps": 40, "batch_size": "full"},
    "optimizers": [
        {"name": "sgd", "sweep": {"lr": {"log_uniform": [1e-3, 0.4], "n": 50}}},
        {"name": "adam", "sweep": {"lr": {"log_uniform": [1e-3, 0.4], "n": 50}}},
    ],
    "seeds": list(range(10)),
    "tags": ["web", "thousand"],
}


def store_finished(database_url: str, spec: dict, steps: int) -> str:
    """A comparison whose runs are stored as trained, without training them: every run's step rows
    written as a worker writes them (db.bulk.ingest_steps: rows and rollups), then marked succeeded.
    The losses are gradient descent's on a quadratic, c (1 - 2 lr)^(2t), times a seed's noise: a page
    test reads their shape, not what an optimizer did. Returns the comparison's id."""
    from db import comparisons
    from db.bulk import ingest_steps
    from db.models import Run
    from db.session import transaction
    from engine.spec import ComparisonSpec

    valid = ComparisonSpec.model_validate(spec).model_dump(mode="json")
    t = np.arange(steps)
    with transaction(database_url) as session:
        comparison = comparisons.create_comparison(session, valid, steps)
        for run in comparison.runs:
            noise = np.random.default_rng(run.seed).lognormal(0, 0.1, steps)
            start = 36.0 if run.optimizer_name == "sgd" else 12.0  # the two optimizers' lines apart
            loss = start * (1 - 2 * run.optimizer_params["lr"]) ** (2 * t) * noise + 1e-12
            ingest_steps(
                session, run.id, {"step": t, "loss": loss, "time_s": (t + 1) * 1e-3, "step_time_ms": np.ones(steps)}
            )
        session.execute(
            update(Run)
            .where(Run.comparison_id == comparison.id)
            .values(status="succeeded", steps_done=steps, wall_time_s=steps * 1e-3)
        )
        comparisons.refresh_comparison(session, comparison.id)
        return comparison.id


def submit(service: Service, spec: dict) -> dict:
    with service.client as client:
        response = client.post("/api/v1/comparisons", json=spec)
    assert response.status_code == 202, response.text
    return response.json()


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


@dataclass
class Watched:
    """A page and what went wrong on it: console errors, uncaught exceptions, requests elsewhere."""

    page: Page
    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def problems(self, allowed: tuple[str, ...] = ()) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)] + [f"request to {u}" for u in self.foreign]


def watch(page: Page, origin: str) -> Watched:
    watched = Watched(page, origin)
    page.on(
        "console",
        lambda message: watched.errors.append(f"console: {message.text}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    page.on(
        "request",
        lambda request: None if request.url.startswith((origin, "data:")) else watched.foreign.append(request.url),
    )
    return watched


def wait_drawn(page: Page, element_id: str, draws: int = 1, timeout_ms: float = 30_000) -> None:
    """Until the chart has been drawn ``draws`` times (charts.js counts them in data-drawn)."""
    page.wait_for_function(
        "([id, n]) => Number(document.getElementById(id)?.dataset.drawn || 0) >= n",
        arg=[element_id, draws],
        timeout=timeout_ms,
    )


def traces(page: Page, element_id: str) -> list[dict]:
    """What Plotly holds for the chart: each trace's type, name and the meta the page gave it."""
    return page.evaluate(
        """(id) => document.getElementById(id).data.map((t) => ({
        type: t.type || "scatter", name: t.name, kind: (t.meta || {}).kind, label: (t.meta || {}).label,
        run_id: (t.meta || {}).run_id, points: (t.x || []).length}))""",
        element_id,
    )


def screenshot(page: Page | Locator, name: str, **options) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), **options)
    return path
