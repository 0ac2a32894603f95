"""The README's screenshots, made by the project's own code: a real `optibench serve` (embedded
default, in a temporary folder), comparisons trained by its worker, and the pages in Debian's
Chromium through the web tests' machinery (tests/web/browser.py).

    python docs/screenshots.py    # writes docs/img/comparison.png and docs/img/trajectory.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.conftest import Service, start_service, stop_service  # noqa: E402
from tests.web.browser import IRIS_SWEEP, ROSENBROCK, launch, submit, wait_drawn  # noqa: E402

IMG = REPO / "docs" / "img"


def _trained(service: Service, spec: dict) -> str:
    finished = service.wait_for(submit(service, spec)["id"], timeout_s=600)
    if finished["status"] != "succeeded":
        raise RuntimeError(f"{spec['name']}: {finished['status']}")
    return finished["id"]


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optibench-screenshots-") as data_dir:
        service = start_service("embedded", {"OPTIBENCH_WORKER_CONCURRENCY": "2"}, Path(data_dir))
        try:
            sweep, trajectory = _trained(service, IRIS_SWEEP), _trained(service, ROSENBROCK)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 1450}, base_url=service.url)
                page.goto(f"/comparisons/{sweep}")
                for chart in ("loss-chart", "val-chart", "sensitivity-chart"):
                    wait_drawn(page, chart)
                page.wait_for_selector("#leaderboard-table")
                page.screenshot(path=str(IMG / "comparison.png"))
                page.goto(f"/comparisons/{trajectory}")
                wait_drawn(page, "trajectory-chart")
                page.locator("#trajectory-section").screenshot(path=str(IMG / "trajectory.png"))
                browser.close()
        finally:
            stop_service(service)
    print(f"wrote {IMG / 'comparison.png'} and {IMG / 'trajectory.png'}")


if __name__ == "__main__":
    main()
