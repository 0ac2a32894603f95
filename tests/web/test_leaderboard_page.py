"""The comparison page's leaderboard in Chromium: what the summary says (docs/statistics.md) is what
the page shows: positive loss intervals, raw and Holm-adjusted p-values side by side, the ranking at
four budgets, and ensemble members' times marked as shared."""

from __future__ import annotations

import re

import pytest

from tests.web.browser import wait_drawn

pytestmark = pytest.mark.e2e

NUMBER = r"-?\d[\d.]*(?:e[-+]?\d+)?"


def test_the_leaderboard_shows_intervals_holm_and_the_rankings_at_each_budget(page, finished, web_service):
    comparison = finished["iris"]
    with web_service.client as client:
        summary = client.get(f"/api/v1/comparisons/{comparison['id']}/summary").json()
    p = page.page
    p.goto(f"/comparisons/{comparison['id']}")
    wait_drawn(p, "loss-chart")
    p.wait_for_selector("#budget-table")

    for row in summary["rows"]:
        cells = p.locator(f'#leaderboard-table tr[data-label="{row["label"]}"] td')
        center, low, high = map(
            float, re.fullmatch(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]", cells.nth(3).inner_text()).groups()
        )
        assert 0 < low <= center <= high  # cross-entropy losses: the geometric mean's interval
        assert row["final_loss"]["ci_method"] == "log_t"
        time_cell = p.locator(f'#leaderboard-table tr[data-label="{row["label"]}"] td.time-to-target').inner_text()
        assert ("shared ensemble time" in time_cell) == row["timed_together"]

    assert "(Holm)" in p.locator("#paired-table thead").inner_text()
    for pair in summary["paired"]:
        t_cell = p.locator(f'#paired-table tr[data-label="{pair["label"]}"] td').nth(3).inner_text()
        raw, adjusted = map(float, re.fullmatch(rf"({NUMBER}) \(({NUMBER})\)", t_cell).groups())
        assert raw <= adjusted
        assert (raw, adjusted) == pytest.approx((pair["t_pvalue"], pair["t_pvalue_holm"]), rel=1e-2)

    headers = p.locator("#budget-table thead th").all_inner_texts()
    assert headers == ["Label", "25 %", "50 %", "75 %", "100 %"]
    assert p.locator("#budget-table tbody tr").count() == len(summary["rows"])
    marked = p.locator("#budget-table td.rank-changed").count()
    assert (marked > 0) == summary["ranking_changes"]
    assert page.problems() == []
