"""The dashboards in a real headless Chromium against a real `optibench serve`: each page loads with
no console error and no request leaving the server, the charts hold the expected traces (one mean
per optimizer setting plus its band, a contour plus one path per run), the form creates a
comparison and puts errors at their field, a running comparison updates in place, and with
authentication on the browser logs in first. Screenshots: artifacts/screenshots/."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.web.browser import ROSENBROCK, screenshot, submit, traces, wait_drawn, watch

pytestmark = pytest.mark.e2e


def _kinds(chart: list[dict]) -> list[tuple[str, str | None]]:
    return [(trace["kind"], trace["label"]) for trace in chart]


def _seed_traces(labels: list[str]) -> list[tuple[str, str]]:
    """What a curves chart must hold: per setting, its band's two edges, then its mean."""
    return [(kind, label) for label in labels for kind in ("band", "band", "mean")]


def test_history_lists_and_filters(page, finished):
    page.page.goto("/")
    names = page.page.locator("#history tbody tr td:first-child a").all_inner_texts()
    assert {c["name"] for c in finished.values()} <= set(names)
    row = page.page.locator("#history tbody tr", has_text=ROSENBROCK["name"])
    assert row.locator("td").nth(2).inner_text() == "rosenbrock"
    assert row.locator("td").nth(4).inner_text() in ("adam", "sgd momentum")  # the winner

    page.page.select_option("#filter-function", "rosenbrock")
    page.page.click("form.filters button[type=submit]")
    page.page.wait_for_url(re.compile(r"function=rosenbrock"))
    assert page.page.locator("#history tbody tr td:first-child a").all_inner_texts() == [ROSENBROCK["name"]]
    assert page.problems() == []


def test_a_function_comparison_draws_every_figure(page, finished):
    comparison = finished["rosenbrock"]
    runs = comparison["runs"]
    p = page.page
    p.goto(f"/comparisons/{comparison['id']}")
    for chart in ("loss-chart", "trajectory-chart", "step-time-chart"):
        wait_drawn(p, chart)
    p.wait_for_selector("#leaderboard-table")

    assert _kinds(traces(p, "loss-chart")) == _seed_traces(["adam", "sgd momentum"])
    trajectory = traces(p, "trajectory-chart")
    assert [(t["type"], t["kind"]) for t in trajectory] == [("contour", "surface")] + [("scatter", "path")] * 4
    assert [t["run_id"] for t in trajectory[1:]] == [run["id"] for run in runs]
    assert _kinds(traces(p, "step-time-chart")) == [("histogram", "adam"), ("histogram", "sgd momentum")]
    assert p.locator("#leaderboard-table tbody tr").count() == 2 and p.locator("#paired-table tbody tr").count() == 1
    assert p.locator("#validation-section").is_hidden() and p.locator("#sensitivity-section").is_hidden()
    assert p.locator("#status").inner_text() == "succeeded" and p.locator("#cancel").is_hidden()

    # a single run on and off
    drawn = int(p.get_attribute("#loss-chart", "data-drawn"))
    p.locator(f'#runs tr[data-run="{runs[3]["id"]}"] input[type=checkbox]').check()
    wait_drawn(p, "loss-chart", drawn + 1)
    assert [t["run_id"] for t in traces(p, "loss-chart") if t["kind"] == "run"] == [runs[3]["id"]]
    p.locator(f'#runs tr[data-run="{runs[3]["id"]}"] input[type=checkbox]').uncheck()
    wait_drawn(p, "loss-chart", drawn + 2)
    assert _kinds(traces(p, "loss-chart")) == _seed_traces(["adam", "sgd momentum"])

    # log y, and wall time on x
    log_y = p.is_checked("#log-y")
    p.click("#log-y")
    wait_drawn(p, "loss-chart", drawn + 3)
    assert p.evaluate("document.getElementById('loss-chart').layout.yaxis.type") == ("linear" if log_y else "log")
    p.check('input[name="x-axis"][value="time"]')
    wait_drawn(p, "loss-chart", drawn + 4)
    assert p.evaluate("document.getElementById('loss-chart').layout.xaxis.title.text") == "wall time (s)"
    screenshot(p.locator("#trajectory-chart"), "trajectory_rosenbrock")
    assert page.problems() == []


def test_a_one_dimensional_trajectory_is_the_function_curve_with_each_path(page, finished):
    comparison = finished["quadratic"]
    page.page.goto(f"/comparisons/{comparison['id']}")
    wait_drawn(page.page, "trajectory-chart")
    trajectory = traces(page.page, "trajectory-chart")
    assert [(t["name"], t["kind"]) for t in trajectory] == [
        ("f(x)", "surface"),
        ("adam seed 0", "path"),
        ("sgd seed 0", "path"),
    ]
    assert [t["points"] for t in trajectory[1:]] == [50, 50]
    assert page.problems() == []


def test_a_dataset_comparison_shows_evaluations_and_the_sensitivity(page, finished):
    comparison = finished["iris"]
    p = page.page
    p.goto(f"/comparisons/{comparison['id']}")
    for chart in ("loss-chart", "val-chart", "sensitivity-chart", "step-time-chart"):
        wait_drawn(p, chart)
    settings = ["adam(lr=0.003)", "adam(lr=0.03)", "sgd"]
    assert _kinds(traces(p, "loss-chart")) == _seed_traces(settings)
    assert _kinds(traces(p, "val-chart")) == _seed_traces(settings)
    [series] = traces(p, "sensitivity-chart")
    assert (series["kind"], series["label"], series["points"]) == ("series", "adam", 2)
    assert p.locator("#trajectory-section").is_hidden()
    assert p.locator("#leaderboard-table tbody tr").count() == 3

    p.select_option("#eval-metric", "val_accuracy")
    wait_drawn(p, "val-chart", 2)
    assert p.evaluate("document.getElementById('val-chart').layout.yaxis.title.text") == "val accuracy"
    assert page.problems() == []


def test_compare_overlays_runs_of_two_comparisons(page, finished):
    first, second = finished["rosenbrock"]["runs"][0], finished["quadratic"]["runs"][1]
    p = page.page
    p.goto(f"/compare?runs={first['id']},{second['id']}")
    wait_drawn(p, "compare-chart")
    compared = traces(p, "compare-chart")
    assert [t["run_id"] for t in compared] == [first["id"], second["id"]]
    assert compared[0]["name"].startswith(ROSENBROCK["name"])
    assert page.problems() == []

    p.goto(f"/compare?runs={first['id']},no-such-run")
    assert "no-such-run" in p.inner_text("#unknown-runs") and first["id"] not in p.inner_text("#unknown-runs")


def test_the_form_creates_a_comparison(page, web_service):
    name = f"from the form {uuid.uuid4().hex[:6]}"
    p = page.page
    p.goto("/new?template=adam_vs_sgd_quadratic")
    assert '"quadratic"' in p.input_value("#spec-editor")
    p.fill("#field-name", name)
    p.fill("#field-tags", "web, form")
    p.click("#submit")
    p.wait_for_url(re.compile(r"/comparisons/[0-9a-f]{32}$"))
    assert p.inner_text("#comparison-name") == name
    created = web_service.wait_for(p.url.rsplit("/", 1)[1])
    assert (created["name"], created["spec"]["tags"], created["status"]) == (name, ["web", "form"], "succeeded")
    wait_drawn(p, "loss-chart", 1)
    assert page.problems() == []


def test_the_form_shows_each_error_at_its_field(page):
    p = page.page
    p.goto("/new?template=adam_vs_sgd_quadratic")
    p.fill("#field-name", "")
    p.fill("#field-seeds", "0, x")
    spec = p.input_value("#spec-editor")
    p.fill("#spec-editor", spec.replace('"lr": 0.1', '"lr": -1', 1))
    p.click("#submit")
    p.wait_for_selector("#editor-errors li")

    assert "at least 1 character" in p.inner_text("#error-name")
    assert p.inner_text("#error-seeds").startswith("1: ")
    error = p.locator('#editor-errors li[data-path="optimizers.0.params.lr"]')
    assert "greater than 0" in error.inner_text()
    line = int(error.get_attribute("data-line"))
    assert p.input_value("#spec-editor").splitlines()[line - 1].strip() == '"lr": -1'
    assert p.evaluate("document.activeElement.id") == "spec-editor"  # the bad line is selected
    screenshot(p, "form_errors", full_page=True)
    assert p.url.endswith("/new?template=adam_vs_sgd_quadratic")
    # the 422 itself is the only thing the console reports
    assert page.problems(allowed=("status of 422",)) == []

    p.fill("#spec-editor", "{not json")
    p.fill("#field-name", "fixed")
    p.click("#submit")
    assert "not valid JSON" in p.inner_text("#editor-errors")


def test_a_running_comparison_updates_in_place(page, web_service):
    made = submit(
        web_service,
        {
            "name": "long-running",
            "training": {"steps": 200_000},
            "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
            "optimizers": [{"name": "sgd", "params": {"lr": 1e-6}}],
            "seeds": [0],
        },
    )
    p = page.page
    p.goto(f"/comparisons/{made['id']}")
    p.evaluate("window.notReloaded = true")
    before = p.inner_text("#progress-text")
    # the worker takes the run and records steps; the page polls and redraws without a reload
    p.wait_for_function(
        "(before) => document.getElementById('progress-text').textContent !== before "
        "&& document.getElementById('status').textContent === 'running'",
        arg=before,
        timeout=120_000,
    )
    wait_drawn(p, "loss-chart", 2, timeout_ms=60_000)
    progressed = p.inner_text("#progress-text")
    screenshot(p, "running_comparison")
    p.wait_for_function(
        "(seen) => document.getElementById('progress-text').textContent !== seen", arg=progressed, timeout=60_000
    )
    assert not p.locator("#cancel").is_hidden()
    p.click("#cancel")
    p.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=60_000)
    assert p.evaluate("window.notReloaded") is True
    assert p.locator("#cancel").is_hidden()
    assert page.problems() == []


def test_a_share_link_shows_the_comparison_read_only(browser, web_service, finished):
    comparison = finished["rosenbrock"]
    with web_service.client as client:
        link = client.post(f"/api/v1/comparisons/{comparison['id']}/share", json={}).json()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    shared = watch(context.new_page(), web_service.url)
    shared.page.goto(f"{web_service.url}/shared/{link['token']}")
    for chart in ("loss-chart", "trajectory-chart"):
        wait_drawn(shared.page, chart)
    assert _kinds(traces(shared.page, "loss-chart")) == _seed_traces(["adam", "sgd momentum"])
    assert len(traces(shared.page, "trajectory-chart")) == 5
    assert shared.page.locator("#clone").count() == 0 and shared.page.locator("header nav").count() == 0
    screenshot(shared.page, "shared_comparison", full_page=True)
    assert shared.problems() == []
    context.close()


def test_with_authentication_the_browser_logs_in_first(browser, auth_service):
    service, key = auth_service
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=service.url)
    watched = watch(context.new_page(), service.url)
    p = watched.page
    p.goto("/new?template=adam_vs_sgd_quadratic")
    assert re.search(r"/login\?next=/new%3Ftemplate%3Dadam_vs_sgd_quadratic$", p.url)
    screenshot(p, "login")
    p.fill("#key", key)
    p.click("button[type=submit]")
    p.wait_for_url(re.compile(r"/new\?template=adam_vs_sgd_quadratic$"))
    # a submit and a cancel from the pages: the session cookie with the page's CSRF token
    p.fill("#field-name", "submitted with a session")
    p.click("#submit")
    p.wait_for_url(re.compile(r"/comparisons/[0-9a-f]{32}$"))
    wait_drawn(p, "loss-chart")
    assert p.inner_text("header .muted") == "admin"
    p.click("#cancel")
    p.wait_for_function("document.getElementById('status').textContent === 'cancelled'", timeout=60_000)
    p.click("header form button")
    p.wait_for_url(re.compile(r"/login$"))
    p.goto("/")
    assert "/login?next=/" in p.url
    assert watched.problems() == []
    context.close()
