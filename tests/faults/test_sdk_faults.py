"""The SDK's uploads under faults, with real processes (the test's own PostgreSQL and Redis, the real API): a
client process SIGKILLed mid-upload and started again, the API restarted while a client uploads, and a batch
whose answer was lost sent again. Every time the stored run has each step once, none missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from optibench import sdk
from optibench.client import Client
from tests.faults.harness import REPO, injected, step_problems, verified, wait_until
from tests.faults.sdk_client import LABEL

STEPS = 1500
SPEC = {
    "name": "faults: sdk uploads",
    "problem": {
        "model": {"name": "mlp", "params": {"hidden": [8]}},
        "dataset": {"name": "iris"},
        "loss": "cross_entropy",
    },
    "training": {"steps": STEPS, "batch_size": 16},
    "optimizers": [{"name": "sgd", "params": {"lr": 0.05}}],
    "seeds": [0],
    "device": "cpu",
    "reuse": False,
}


class ClientProcess:
    """``tests.faults.sdk_client`` in a process of its own, logging to a file."""

    def __init__(self, url: str, comparison_id: str, spool_dir: Path, log: Path, step_delay_s: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIBENCH_")}
        command = [sys.executable, "-m", "tests.faults.sdk_client", url, comparison_id, str(spool_dir)]
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, str(step_delay_s)], env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT
            )

    def sigkill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def finished_run(self, timeout_s: float = 60) -> dict:
        """The run the process printed once it ended (it must end with 0)."""
        code = self.process.wait(timeout_s)
        output = self.log.read_text()
        assert code == 0, output[-3000:]
        return json.loads(output.strip().splitlines()[-1])

    def close(self) -> None:
        if self.process.poll() is None:
            self.sigkill()


def external_run_id(fault_env, comparison_id: str) -> str | None:
    return next((run["id"] for run in fault_env.comparison(comparison_id)["runs"] if run["external"]), None)


def wait_for_rows(fault_env, comparison_id: str, at_least: int) -> tuple[str, int]:
    """Until the client's run has ``at_least`` rows stored (read from SQL): its id and its row count."""

    def stored() -> tuple[str, int] | None:
        run_id = external_run_id(fault_env, comparison_id)
        count = len(fault_env.step_rows(run_id)) if run_id else 0
        return (run_id, count) if run_id and count >= at_least else None

    return wait_until(stored, 60, f"{at_least} rows of the SDK's run", interval=0.1)


def assert_every_step_once(fault_env, api_url: str, run_id: str) -> None:
    """Each step 0..STEPS-1 once, in SQL and through the steps route."""
    assert step_problems(fault_env.step_rows(run_id), expected=STEPS) == []
    steps = [row["step"] for row in httpx.get(f"{api_url}/api/v1/runs/{run_id}/steps", timeout=30).json()["steps"]]
    assert (len(steps), len(set(steps)), min(steps), max(steps)) == (STEPS, STEPS, 0, STEPS - 1)


def test_a_client_killed_mid_upload_and_started_again_stores_every_step_once(fault_env, tmp_path):
    api = fault_env.start_api()
    comparison_id = fault_env.submit(SPEC)
    spool_dir = tmp_path / "spool"
    first = ClientProcess(api.url, comparison_id, spool_dir, tmp_path / "client-1.log", step_delay_s=0.002)
    try:
        run_id, _ = wait_for_rows(fault_env, comparison_id, at_least=1)
        wait_until(lambda: any(spool_dir.glob("*/checkpoint.pt")), 30, "a checkpoint in the spool", interval=0.05)
        first.sigkill()
    finally:
        first.close()
    rows_at_kill = len(fault_env.step_rows(run_id))
    injected(f"SIGKILL to the client process after {rows_at_kill} of {STEPS} rows were stored")
    assert 0 < rows_at_kill < STEPS
    assert httpx.get(f"{api.url}/api/v1/runs/{run_id}", timeout=30).json()["status"] == "running"

    second = ClientProcess(api.url, comparison_id, spool_dir, tmp_path / "client-2.log", step_delay_s=0.0)
    try:
        run = second.finished_run()
    finally:
        second.close()
    assert (run["id"], run["status"], run["steps_done"]) == (run_id, "succeeded", STEPS)
    assert_every_step_once(fault_env, api.url, run_id)
    assert list(spool_dir.iterdir()) == []
    verified(f"the restarted client went on with run {run_id}: steps 0..{STEPS - 1} stored once each, succeeded")


def test_the_api_restarted_mid_upload_loses_no_step_and_duplicates_none(fault_env, tmp_path):
    api = fault_env.start_api()
    comparison_id = fault_env.submit(SPEC)
    client = ClientProcess(api.url, comparison_id, tmp_path / "spool", tmp_path / "client.log", step_delay_s=0.002)
    try:
        run_id, _ = wait_for_rows(fault_env, comparison_id, at_least=1)
        api.sigkill()
        rows_at_kill = len(fault_env.step_rows(run_id))
        injected(f"SIGKILL to the API after {rows_at_kill} of {STEPS} rows; started again on :{api.port} in 1 s")
        time.sleep(1.0)
        api.start()
        assert client.process.poll() is None  # the client trained on while the server was away
        run = client.finished_run()
    finally:
        client.close()
    assert rows_at_kill < STEPS
    assert (run["id"], run["status"], run["steps_done"]) == (run_id, "succeeded", STEPS)
    assert_every_step_once(fault_env, api.url, run_id)
    verified(f"the client's spool sent through the restart: steps 0..{STEPS - 1} stored once each")


class LoseFirstStepsAnswer(httpx.BaseTransport):
    """The network loses the answer to the first upload: the server stores the batch, the client hears nothing."""

    def __init__(self) -> None:
        self.forward = httpx.HTTPTransport()
        self.answers: list[dict] = []
        self.lost: dict | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.forward.handle_request(request)
        if not (request.method == "POST" and request.url.path.endswith("/steps")):
            return response
        response.read()
        answer = response.json()
        if self.lost is None:
            self.lost = answer
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        self.answers.append(answer)
        return response

    def close(self) -> None:
        self.forward.close()


def test_a_batch_retried_after_its_answer_was_lost_is_stored_once(fault_env, tmp_path):
    api = fault_env.start_api()
    comparison_id = fault_env.submit({**SPEC, "training": {"steps": 60, "batch_size": 16}})
    transport = LoseFirstStepsAnswer()
    with Client(api.url, retries=0, transport=transport) as client:  # the spool, not the client, sends it again
        problem = sdk.LocalProblem.from_comparison(client, comparison_id)
        with sdk.start_run(client, problem, seed=0, label=LABEL, spool_dir=tmp_path, flush_every=20) as run:
            for batch in run.batches():
                run.log(run.loss(batch).detach())
            spool = run._spool
        stored_run = client.run(run.id)
    injected(f"the answer to the first upload was lost (the server had stored {transport.lost})")
    assert transport.lost is not None and (transport.lost["rows"], transport.lost["stored"]) == (20, 20)
    assert [(a["rows"], a["stored"]) for a in transport.answers] == [(20, 0), (20, 20), (20, 20)]
    assert (spool.sent, spool.stored) == (3, 40)  # the lost batch's rows were stored by the first send
    rows = fault_env.step_rows(run.id)
    assert step_problems(rows, expected=60) == [] and len(rows) == 60
    assert (stored_run["status"], stored_run["steps_done"]) == ("succeeded", 60)
    verified("the batch sent again after its lost answer stored 0 new rows; the run has steps 0..59 once each")
