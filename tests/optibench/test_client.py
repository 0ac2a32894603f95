"""The Python client against the real app in-process (its ASGI app behind the client's httpx
transport) on the embedded default, and with OPTIBENCH_AUTH=required on both databases. Runs are
trained in-process by the Celery task itself, as a worker would."""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from collections.abc import Callable

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from optibench.client import Client, OptibenchError, as_float
from tests.api.teams import function_spec, make_team, team_client
from worker.tasks import train_run

__all__ = ["team_client"]
STEPS = 20


def _clear_caches() -> None:
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


def _transport(test_client: TestClient) -> httpx.BaseTransport:
    # the TestClient's transport calls the ASGI app in-process
    return test_client._transport


@pytest.fixture(scope="module")
def app_transport():
    assert "OPTIBENCH_DATABASE_URL" not in os.environ
    _clear_caches()
    from api.main import create_app
    from db.migrate import upgrade
    from optibench.settings import get_settings

    upgrade(get_settings().database_url)
    yield _transport(TestClient(create_app()))
    _clear_caches()


@pytest.fixture
def client(app_transport):
    with Client("http://testserver", transport=app_transport) as api:
        yield api


def _spec(**overrides) -> dict:
    return function_spec(**{"training": {"steps": STEPS}, "reuse": False, "device": "cpu", **overrides})


def _train_all(comparison: dict) -> None:
    for run in comparison["runs"]:
        train_run.apply(args=[run["id"]]).get()


Fault = Callable[[httpx.BaseTransport, httpx.Request], httpx.Response]


class Faulty(httpx.BaseTransport):
    """The app's transport, with the next requests answered by ``faults`` in turn."""

    def __init__(self, inner: httpx.BaseTransport, *faults: Fault) -> None:
        self.inner, self.faults, self.seen = inner, list(faults), 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.faults:
            return self.faults.pop(0)(self.inner, request)
        return self.inner.handle_request(request)


def answer_lost(inner: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    """The server handled the request, but the connection broke before its answer arrived."""
    inner.handle_request(request).read()
    raise httpx.ReadError("connection reset by peer", request=request)


def refused(_inner: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def unavailable(_inner: httpx.BaseTransport, _request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        503, headers={"Retry-After": "5"}, json={"detail": "the database is unavailable; retry shortly"}
    )


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr("optibench.client.time.sleep", waited.append)
    return waited


# --- submit, idempotency, retries ------------------------------------------------------------------


def test_submit_a_dict_or_a_file_and_read_it_back(client, tmp_path):
    accepted = client.submit(_spec(name="from a dict"))
    assert accepted["status"] == "queued" and accepted["progress"]["steps_total"] == 4 * STEPS
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec(name="from a file")))
    from_file = client.submit(str(path))
    assert from_file["id"] != accepted["id"]
    assert client.comparison(from_file["id"])["name"] == "from a file"


def test_each_submit_has_its_own_key_unless_one_is_given(client):
    key = uuid.uuid4().hex
    first, again = (client.submit(_spec(), idempotency_key=key) for _ in range(2))
    assert again["id"] == first["id"]
    assert client.submit(_spec())["id"] != client.submit(_spec())["id"]


def test_a_lost_answer_is_retried_without_submitting_twice(client, app_transport, sleeps):
    before = client.submit(_spec())["id"]
    faulty = Faulty(app_transport, answer_lost, refused)
    with Client("http://testserver", transport=faulty) as api:
        comparison = api.submit(_spec(name="retried"))
    # lost once, refused once, answered the third time: with the comparison the first attempt created
    assert faulty.seen == 3 and sleeps == [0.5, 1.0]
    assert [c["id"] for c in client.comparisons(limit=2)] == [comparison["id"], before]


def test_503_is_retried_after_retry_after_then_reported(app_transport, sleeps):
    with Client("http://testserver", transport=Faulty(app_transport, unavailable)) as api:
        assert api.submit(_spec())["status"] == "queued"
    assert sleeps == [5.0]
    with Client("http://testserver", retries=2, transport=Faulty(app_transport, *[unavailable] * 3)) as api:
        with pytest.raises(OptibenchError) as raised:
            next(api.comparisons(limit=1))
    assert raised.value.status == 503 and "database is unavailable" in str(raised.value)
    assert sleeps == [5.0] * 3


def test_an_unreachable_server_is_one_error(sleeps):
    with Client("http://127.0.0.1:9", retries=1) as api, pytest.raises(OptibenchError) as raised:
        api.comparison("x")
    assert raised.value.status is None and "no answer from http://127.0.0.1:9" in str(raised.value)
    assert sleeps == [0.5]


# --- errors ----------------------------------------------------------------------------------------


def test_validation_errors_name_each_field(client):
    spec = _spec()
    spec["optimizers"][0]["params"]["lr"] = -1
    spec["seeds"] = []
    with pytest.raises(OptibenchError) as raised:
        client.submit(spec)
    error = raised.value
    paths = [path for path, _ in error.fields]
    assert error.status == 422 and "optimizers.0.params.lr" in paths and "seeds" in paths
    assert str(error).startswith("HTTP 422: ") and "optimizers.0.params.lr: " in str(error)


def test_query_errors_keep_their_prefix_and_404_shows_the_detail(client):
    comparison = client.submit(_spec())
    with pytest.raises(OptibenchError) as raised:
        client.summary(comparison["id"], baseline="nobody")
    assert raised.value.fields[0][0] == "query.baseline" and "unknown baseline 'nobody'" in str(raised.value)
    with pytest.raises(OptibenchError) as missing:
        client.comparison("no-such-id")
    assert (missing.value.status, missing.value.detail) == (404, "comparison 'no-such-id' not found")
    assert missing.value.fields == []


def test_auth_key_from_the_argument_or_the_environment(team_client, monkeypatch):
    team, transport = make_team(), _transport(team_client)
    with Client("http://testserver", api_key=team.member, transport=transport) as api:
        mine = api.submit(_spec())
    monkeypatch.setenv("OPTIBENCH_API_KEY", team.admin)
    monkeypatch.setenv("OPTIBENCH_URL", "http://testserver/")
    with Client(transport=transport) as api:
        assert api.url == "http://testserver"
        assert [c["id"] for c in api.comparisons()] == [mine["id"]]
    for key, detail in ((team.revoked, "this API key was revoked"), ("ob_wrong", "unknown API key")):
        with (
            Client("http://testserver", api_key=key, transport=transport) as api,
            pytest.raises(OptibenchError) as raised,
        ):
            api.comparison(mine["id"])
        assert (raised.value.status, raised.value.detail) == (401, detail)
    other = make_team()
    with (
        Client("http://testserver", api_key=other.member, transport=transport) as api,
        pytest.raises(OptibenchError) as raised,
    ):
        api.comparison(mine["id"])
    assert raised.value.status == 404


# --- reads -----------------------------------------------------------------------------------------


def test_comparisons_iterates_pages_newest_first(client):
    submitted = [client.submit(_spec(name=f"page {i}"))["id"] for i in range(5)]
    newest = [c["id"] for c in client.comparisons(limit=5, page_size=2)]
    assert newest == submitted[::-1]
    assert [c["id"] for c in client.comparisons(limit=3, page_size=2)] == newest[:3]
    everything = [c["id"] for c in client.comparisons(page_size=2)]
    assert everything[:5] == newest and len(everything) == len(set(everything)) > 5


def test_wait_reports_progress_until_the_comparison_finishes(client):
    comparison = client.submit(_spec())
    queued = [run["id"] for run in comparison["runs"]]
    seen: list[tuple[int, int, str]] = []

    def train_one(current: dict) -> None:
        # a worker finishing one run between polls
        seen.append((current["progress"]["runs_done"], current["progress"]["steps_done"], current["status"]))
        if queued:
            train_run.apply(args=[queued.pop(0)]).get()

    done = client.wait(comparison["id"], on_progress=train_one, poll_s=0)
    assert done["status"] == "succeeded"
    assert seen == [(i, i * STEPS, "queued" if i == 0 else ("succeeded" if i == 4 else "running")) for i in range(5)]


def test_wait_gives_up_after_its_timeout(client):
    comparison = client.submit(_spec())
    with pytest.raises(TimeoutError, match="still queued"):
        client.wait(comparison["id"], poll_s=0.01, timeout_s=0.05)


def test_summary_curves_and_export_of_a_finished_comparison(client, tmp_path):
    comparison = client.submit(_spec())
    _train_all(comparison)
    summary = client.summary(comparison["id"])
    # from 8 towards 2 in 20 steps: sgd (lr 0.05) contracts the distance by 0.9 a step, adam moves ~0.1 a step
    assert [(row["rank"], row["label"]) for row in summary["rows"]] == [(1, "sgd"), (2, "adam")]
    assert summary["paired"][0]["label"] == "sgd" and summary["paired"][0]["n_pairs"] == 2
    curves = client.curves(comparison["id"], points=5)
    assert [len(group["points"]) for group in curves["groups"]] == [5, 5]
    by_optimizer = client.curves(comparison["id"], points=5, scale="log", group_by="optimizer")
    assert [(g["label"], len(g["run_ids"])) for g in by_optimizer["groups"]] == [("adam", 2), ("sgd", 2)]
    assert all(0 < p["lo"] <= p["mean"] <= p["hi"] for g in by_optimizer["groups"] for p in g["points"])
    run = comparison["runs"][0]
    curve = client.run_curve(run["id"], points=STEPS)
    assert curve["raw"] and len(curve["buckets"]) == STEPS
    window = client.run_curve(run["id"], points=4, start=0, end=7)
    assert window["buckets"][-1]["x_end"] == 7

    as_csv = client.export(comparison["id"], "csv", tmp_path / "steps.csv")
    rows = list(csv.DictReader(as_csv.open()))
    assert len(rows) == 4 * STEPS and {r["run_id"] for r in rows} == {r["id"] for r in comparison["runs"]}
    table = pq.read_table(client.export(comparison["id"], "parquet", tmp_path / "steps.parquet"))
    assert table.num_rows == 4 * STEPS and table.column("loss").to_pylist() == [float(r["loss"]) for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.csv", "steps.parquet"]  # no partial file left


def test_a_failed_export_leaves_no_file(client, tmp_path):
    with pytest.raises(OptibenchError) as raised:
        client.export("no-such-id", "csv", tmp_path / "steps.csv")
    assert raised.value.status == 404 and list(tmp_path.iterdir()) == []


def test_cancel(client):
    comparison = client.submit(_spec())
    cancelled = client.cancel(comparison["id"])
    assert cancelled["status"] == "cancelled" and {r["status"] for r in cancelled["runs"]} == {"cancelled"}


def test_as_float_reads_the_api_numbers():
    assert as_float(None) is None and as_float(1.5) == 1.5 and as_float("Infinity") == math.inf
    assert as_float("-Infinity") == -math.inf and math.isnan(as_float("NaN"))
