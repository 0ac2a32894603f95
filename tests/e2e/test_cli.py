"""The installed `optibench` command against a running `optibench serve`, on both deployments, as a
user types it: submit and wait, ls, show, export, cancel, Ctrl-C, invalid specs, and keys."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from engine.suites import discover
from tests import suite_scores
from tests.e2e.conftest import EXAMPLES, REPO, start_service, stop_service

pytestmark = pytest.mark.e2e
OPTIBENCH = shutil.which("optibench", path=str(Path(sys.executable).parent)) or "optibench"
EXAMPLE = EXAMPLES / "adam_vs_sgd_quadratic.json"
#: long enough to be still training when the test interrupts or cancels it
LONG_SPEC = {
    "name": "long quadratic",
    "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
    "training": {"steps": 5_000_000},
    "optimizers": [{"name": "sgd", "params": {"lr": 0.01}, "label": "sgd [/slow]"}],  # not rich markup
    "seeds": [0],
    "reuse": False,
}


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTIBENCH_API_KEY"}
    return {**env, "OPTIBENCH_URL": url, "COLUMNS": "80", **extra}


def optibench(service, *args: str, code: int | None = 0, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [OPTIBENCH, *args], env=_env(service.url, **env), capture_output=True, text=True, timeout=120, cwd=REPO
    )
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def _waiting_submit(service, spec_path: Path) -> tuple[subprocess.Popen, str]:
    """`optibench submit SPEC --wait` in the background, and the comparison id it printed."""
    process = subprocess.Popen(
        [OPTIBENCH, "submit", str(spec_path), "--wait"],
        env=_env(service.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    return process, process.stdout.readline().strip()


def _row(output: str, label: str, column: int) -> list[str]:
    """The cells of the first table row with ``label`` in ``column``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) > column and cells[column] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{output}")


@pytest.fixture(scope="module")
def finished(service):
    """The example, submitted and waited for by the CLI."""
    result = optibench(service, "submit", str(EXAMPLE), "--wait")
    comparison_id = result.stdout.splitlines()[0]
    with service.client as client:
        comparison = client.get(f"/api/v1/comparisons/{comparison_id}").json()
        summary = client.get(f"/api/v1/comparisons/{comparison_id}/summary").json()
    return result, comparison, summary


def test_submit_wait_prints_the_leaderboard(finished):
    result, comparison, summary = finished
    assert re.fullmatch(r"[0-9a-f]{32}", comparison["id"]) and comparison["status"] == "succeeded"
    assert "steps" in result.stderr and "2/2 runs done" in result.stderr  # the progress bar's last state
    for row in summary["rows"]:
        loss = row["final_loss"]
        cells = _row(result.stdout, row["label"], column=1)
        assert cells[0] == str(row["rank"]) and cells[2] == f"{row['n_seeds']} ({row['n_diverged']})"
        # one seed: a mean without an interval
        assert cells[3] == f"{loss['mean']:.4g}" and cells[4] == f"{loss['best']:.4g}"
        assert cells[5].startswith(f"{row['time_to_target']['steps']:.4g} steps")
    # the baseline is the first entry, adam; one seed: one pair, too few for an interval or a test
    assert "paired on seeds, final loss minus adam's" in result.stdout
    mean_diff = f"{summary['paired'][0]['mean_diff']:.4g}"
    assert _row(result.stdout, "sgd", column=0)[:5] == ["sgd", "1", mean_diff, "-", "-"]
    # the ranking at 25, 50, 75 and 100 % of the budget, after the paired table
    budgets = result.stdout.split("rank (mean loss) at each budget", 1)[1]
    final = {row["label"]: row for row in summary["budgets"][-1]["rows"]}
    for label, row in final.items():
        assert _row(budgets, label, column=0)[4].startswith(f"{row['rank']} ({row['mean_loss']:.4g})")


def test_ls_lists_and_filters(service, finished):
    comparison = finished[1]
    listed = optibench(service, "ls").stdout
    line = next(line for line in listed.splitlines() if comparison["id"] in line)
    assert "succeeded" in line and "100% (2/2 runs)" in line and comparison["name"] in line and "local" in line
    # filters from both of the example's tags, its optimizers, its function and its name
    for filters in (
        ("--status", "succeeded", "--tag", "trajectory"),
        ("--tag", "example", "--optimizer", "sgd"),
        ("--function", "quadratic", "--name", "ADAM VS sgd"),
    ):
        assert comparison["id"] in optibench(service, "ls", *filters).stdout, filters
    for filters in (("--tag", "no-such-tag"), ("--status", "failed"), ("--optimizer", "rmsprop"), ("--model", "mlp")):
        assert comparison["id"] not in optibench(service, "ls", *filters).stdout, filters
    assert (
        len(
            [
                line
                for line in optibench(service, "ls", "--limit", "1").stdout.splitlines()
                if re.search(r"[0-9a-f]{32}", line)
            ]
        )
        == 1
    )
    bad = optibench(service, "ls", "--status", "done", code=2)
    assert "--status" in bad.stderr


def test_show_has_the_header_runs_and_leaderboard(service, finished):
    comparison = finished[1]
    shown = optibench(service, "show", comparison["id"]).stdout
    assert comparison["name"] in shown and "succeeded" in shown and "example, trajectory" in shown
    for run in comparison["runs"]:
        assert run["id"] in shown and f"{run['steps_done']}/{run['steps_total']}" in shown
    assert "leaderboard" in shown
    missing = optibench(service, "show", "no-such-id", code=1)
    assert "HTTP 404: comparison 'no-such-id' not found" in missing.stderr


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_export_writes_every_step(service, finished, tmp_path, format):
    comparison = finished[1]
    path = tmp_path / f"steps.{format}"
    result = optibench(service, "export", comparison["id"], "--format", format, "-o", str(path))
    assert f"wrote {path}" in result.stdout
    if format == "csv":
        rows = list(csv.DictReader(path.open()))
        columns, labels = list(rows[0]), [row["label"] for row in rows]
    else:
        table = pq.read_table(path)
        columns, labels = table.column_names, table.column("label").to_pylist()
    assert len(labels) == sum(run["steps_done"] for run in comparison["runs"]) == 100
    assert sorted(set(labels)) == ["adam", "sgd"]
    assert (
        columns[:10]
        == ["comparison_id", "run_id", "label", "optimizer", "params", "seed", "phase", "status", "step", "epoch"]
        and "loss" in columns
        and columns[-1] == "x0"
    )


def _newest_comparison_id(service) -> str | None:
    with service.client as client:
        items = client.get("/api/v1/comparisons", params={"limit": 1}).json()["items"]
    return items[0]["id"] if items else None


def test_an_invalid_spec_prints_each_field_and_exits_2(service, tmp_path):
    spec = json.loads(EXAMPLE.read_text())
    spec["optimizers"][0]["params"]["lr"] = -1
    spec["optimizers"][1]["name"] = "adamm"
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(spec))
    before = _newest_comparison_id(service)
    result = optibench(service, "submit", str(path), code=2)
    assert "optimizers.0.params.lr: " in result.stderr and "optimizers.1.name: " in result.stderr
    # nothing created (the newest comparison's row may still change: the worker trains it)
    assert result.stdout == "" and _newest_comparison_id(service) == before
    path.write_text("{not json")
    assert "not a JSON spec" in optibench(service, "submit", str(path), code=2).stderr


def test_ctrl_c_stops_waiting_and_leaves_the_comparison_running(service, tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps(LONG_SPEC))
    process, comparison_id = _waiting_submit(service, path)
    try:
        time.sleep(1.0)  # in the polling loop
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert f"stopped waiting; comparison {comparison_id} goes on" in stderr and "Traceback" not in stderr
        with service.client as client:
            assert client.get(f"/api/v1/comparisons/{comparison_id}").json()["status"] in ("queued", "running")
    finally:
        process.kill()
        cancelled = optibench(service, "cancel", comparison_id).stdout
    assert cancelled.startswith(f"comparison {comparison_id} ")
    assert service.wait_for(comparison_id, timeout_s=60)["status"] == "cancelled"


def test_submit_wait_exits_1_when_the_comparison_is_cancelled(service, tmp_path):
    path = tmp_path / "long.json"
    path.write_text(json.dumps(LONG_SPEC))
    process, comparison_id = _waiting_submit(service, path)
    try:
        optibench(service, "cancel", comparison_id)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1 and f"comparison {comparison_id} cancelled" in stderr
    assert _row(stdout, "sgd [/slow]", column=1)[:3] == ["-", "sgd [/slow]", "1 (0)"]  # no finished run: unranked


def test_unreachable_server():
    result = subprocess.run(
        [OPTIBENCH, "ls", "--url", "http://127.0.0.1:9"],
        env=_env("http://unused"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no answer from http://127.0.0.1:9" in result.stderr and "OPTIBENCH_URL" in result.stderr


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """The embedded deployment with OPTIBENCH_AUTH=required, and a team made by `optibench admin`."""
    data_dir = tmp_path_factory.mktemp("serve-auth")
    overrides = {"OPTIBENCH_AUTH": "required", "OPTIBENCH_SECRET_KEY": "cli-test-secret-of-the-e2e-suite-0123456789"}
    service = start_service("embedded", overrides, data_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("OPTIBENCH_DATABASE_URL", "OPTIBENCH_BROKER_URL")}
    created = subprocess.run(
        [OPTIBENCH, "admin", "create-team", "cli-team"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**env, **overrides, "OPTIBENCH_DATA_DIR": str(data_dir)},
    )
    yield service, created.stdout.strip().splitlines()[-1]
    stop_service(service)


def test_keys_from_the_environment_and_wrong_keys(secured):
    service, key = secured
    waited = optibench(service, "submit", str(EXAMPLE), "--wait", OPTIBENCH_API_KEY=key).stdout
    submitted = waited.splitlines()[0]
    assert _row(waited, "sgd", column=1)
    listed = optibench(service, "ls", OPTIBENCH_API_KEY=key).stdout
    assert submitted in listed and "admin" in listed  # submitted by the key's name
    assert submitted in optibench(service, "show", submitted, "--key", key).stdout
    for env, detail in (({"OPTIBENCH_API_KEY": "ob_wrong"}, "unknown API key"), ({}, "an API key is required")):
        result = optibench(service, "ls", code=1, **env)
        assert f"error: HTTP 401: {detail}" in result.stderr and "OPTIBENCH_API_KEY" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/api/v1/comparisons").status_code == 401


def _recomputed_over_http(client: httpx.Client, comparisons: dict[str, str]) -> tuple[dict, dict]:
    """lite-v1's reduced-budget scores by steps and seconds recomputed from each workload's runs as the API
    serves them (a reused run's evaluations and steps are its source's)."""
    per_workload = []
    for workload in discover()["lite-v1"].workloads:
        runs = client.get(f"/api/v1/comparisons/{comparisons[workload.name]}").json()["runs"]
        curves: dict[str, dict[int, suite_scores.Curve]] = {}
        for run in (run for run in runs if run["status"] in suite_scores.SCORED):
            evals = client.get(f"/api/v1/runs/{run['id']}/evals").json()["evals"]
            steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
            curves.setdefault(run["label"], {})[run["seed"]] = suite_scores.curve(
                [(e["step"], e[workload.metric]) for e in evals],
                {row["step"]: row["time_s"] for row in steps},
                workload.metric,
            )
        per_workload.append(suite_scores.first_hits(curves, workload.reduced.steps, workload.reduced.wall_s))
    return suite_scores.scores(per_workload, discover()["lite-v1"].tau_max)


def test_suite_submits_waits_for_every_workload_and_prints_the_api_ranking(service, tmp_path):
    """The whole lite-v1 at the reduced budget through real processes; the scores the API ranks by equal an
    independent numpy recomputation from the stored runs read over HTTP."""
    entries = tmp_path / "optimizers.json"
    entries.write_text(json.dumps([{"name": "adam", "label": "adam-cli", "params": {"lr": 0.01}}]))
    result = optibench(service, "suite", "lite", "v1", str(entries), "--budget", "reduced", COLUMNS="300")
    made = dict(line.split(": ") for line in result.stderr.splitlines())
    assert list(made) == [w.name for w in discover()["lite-v1"].workloads]
    with service.client as client:
        scored = client.get("/api/v1/suites/lite/v1", params={"budget": "reduced"}).json()
        by_steps, by_seconds = _recomputed_over_http(client, made)
    assert {o["label"] for o in scored["optimizers"]} == set(by_steps) >= {"adam-cli", "adamw (baseline)"}
    for rank, row in enumerate(scored["optimizers"], 1):
        assert _row(result.stdout, row["label"], 1)[:3] == [str(rank), row["label"], f"{row['score']:.3f}"]
        assert row["score_steps"] == pytest.approx(by_steps[row["label"]], abs=1e-3)
        assert row["score"] == pytest.approx(by_seconds[row["label"]], abs=1e-3)
    assert optibench(service, "suite", "lite", "v9", code=2).stderr.startswith("invalid request (HTTP 422)")
