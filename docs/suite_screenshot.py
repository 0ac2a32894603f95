"""The README's suite page screenshot, made by the project's own code: a real `optibench serve` (embedded default,
in a temporary folder), lite-v1 submitted at its reduced budget with Adam beside the baselines and trained by its
worker, and /suites/lite/v1 in Debian's Chromium through the web tests' machinery.

    python docs/suite_screenshot.py    # writes docs/img/suite.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.conftest import start_service, stop_service  # noqa: E402
from tests.web.browser import launch, wait_drawn  # noqa: E402

IMG = REPO / "docs" / "img"
SUBMISSION = {
    "optimizers": [
        {"name": "adam", "label": "adam", "params": {"lr": 0.01}},
        {"name": "rmsprop", "label": "rmsprop", "params": {"lr": 0.003}},
    ],
    "budget": "reduced",
}


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optibench-screenshots-") as data_dir:
        service = start_service("embedded", {"OPTIBENCH_WORKER_CONCURRENCY": "2"}, Path(data_dir))
        try:
            with service.client as client:
                response = client.post("/api/v1/suites/lite/v1/submissions", json=SUBMISSION)
            assert response.status_code == 202, response.text
            for made in response.json()["comparisons"]:
                finished = service.wait_for(made["comparison"]["id"], timeout_s=600)
                assert finished["status"] == "succeeded", finished["status"]
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport={"width": 1400, "height": 900}, base_url=service.url)
                page.goto("/suites/lite/v1?budget=reduced")
                wait_drawn(page, "profile-chart")
                page.screenshot(path=str(IMG / "suite.png"), full_page=True)
                browser.close()
        finally:
            stop_service(service)
    print(f"wrote {IMG / 'suite.png'}")


if __name__ == "__main__":
    main()
