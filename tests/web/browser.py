"""Driving the dashboards in Debian's Chromium with Playwright (no browser download), shared by the
web tests and docs/screenshots.py: the comparisons they show, launching, watching a page for console
errors and requests that leave the server, waiting for a chart to be drawn, and reading its traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, Playwright

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
