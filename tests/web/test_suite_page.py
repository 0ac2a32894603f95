"""The suite page in Chromium: lite-v1 submitted at its reduced budget on three workloads to a real serve and
trained by its worker; the page draws one profile line per optimizer setting, ending at the share of workloads
the API says it reached, and its table ranks them as the API does."""

from __future__ import annotations

import pytest

from tests.web.browser import wait_drawn

pytestmark = pytest.mark.e2e

WORKLOADS = ["autoencoder-digits", "logreg-breast-cancer", "mlp-synthetic"]


def test_the_suite_page_draws_the_profile_and_ranks_as_the_api(page, web_service):
    with web_service.client as client:
        response = client.post(
            "/api/v1/suites/lite/v1/submissions",
            json={
                "optimizers": [{"name": "adam", "label": "adam", "params": {"lr": 0.01}}],
                "budget": "reduced",
                "workloads": WORKLOADS,
            },
        )
        assert response.status_code == 202, response.text
        for made in response.json()["comparisons"]:
            assert web_service.wait_for(made["comparison"]["id"])["status"] == "succeeded"
        scored = client.get("/api/v1/suites/lite/v1", params={"budget": "reduced"}).json()
    p = page.page
    p.goto("/suites/lite/v1?budget=reduced")
    wait_drawn(p, "profile-chart")
    traces = p.evaluate("document.getElementById('profile-chart').data.map(t => [t.name, t.y[t.y.length - 1]])")
    expected = [[f"{o['label']} ({o['score']:.3f})", o["profile"][-1][1]] for o in scored["optimizers"]]
    assert traces == expected and len(traces) == 3
    assert p.locator("#suite-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.label)") == [
        o["label"] for o in scored["optimizers"]
    ]
    assert page.problems() == []
