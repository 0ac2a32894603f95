"""examples/signsgd.py run as a user runs it, against `optibench serve`: a new optimizer trained here through the
SDK on the MLP example's comparison and on two lite-v1 workloads, ranked beside the catalogue's Adam."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.e2e.conftest import EXAMPLES, REPO


def test_the_signsgd_example_prints_its_leaderboard_rows_and_suite_scores(service, tmp_path):
    env = {
        **os.environ,
        "OPTIBENCH_URL": service.url,
        "OPTIBENCH_SPOOL_DIR": str(tmp_path),
        "OPTIBENCH_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "signsgd.py"), "--quick"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:] + service.log_tail()
    board, suite = result.stdout.split("\nlite-v1 (reduced budget)\n")
    number = r"-?\d[\d.e+-]*"
    rows = {line.split()[0]: line for line in board.splitlines()[2:]}
    assert set(rows) == {"adam", "plain", "signsgd"}, board
    # signsgd's row: a final loss, its interval, a paired difference from Adam and a p-value, all numbers
    assert re.fullmatch(rf"signsgd\s+{number}\s+\[{number}, {number}\]\s+{number}\s+{number}", rows["signsgd"]), board
    scores = {line.rsplit(maxsplit=2)[0].strip(): line.split()[-2:] for line in suite.splitlines()[1:]}
    assert {"adam", "signsgd", "adamw (baseline)", "sgd-momentum (baseline)"} == set(scores), suite
    assert all(0.0 <= float(value) <= 1.0 for pair in scores.values() for value in pair)
    assert list(tmp_path.iterdir()) == []  # every local run was sent
