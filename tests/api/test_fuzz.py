"""Schemathesis fuzzing of the HTTP API, in-process over ASGI, on both databases: the embedded default's
SQLite file under OPTIBENCH_DATA_DIR, and the machine's PostgreSQL (the SQLite broker for both; published
tasks land in it and nothing consumes them). Generated strings include NUL characters, and every string
position of every operation is also sent a NUL and a lone surrogate, which must be a 422 naming it.

Every operation of ``/openapi.json`` gets schema-valid (positive) and, where the schema allows any,
schema-invalid (negative) requests. Each response must not be a server error and must conform to the
schema: a documented status code, a documented content type and a body that validates against the
documented response schema. Deterministic: Hypothesis runs derandomized, without its example database.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.schemas import printable

# an upload's body is bytes (docs/ingest.md): fuzzed as any other binary body
schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")

BASE = "/api/v1/comparisons"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: generated requests per operation and generation mode (operations without inputs have one possible request)
MAX_EXAMPLES = 15
MIN_TOTAL_REQUESTS = 1000
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    # shrinking gives a minimal curl for each failure; observed to cost a few seconds per failing run
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    print_blob=False,
)
VALID_SPEC = {
    "name": "fuzz seed",
    "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
    "training": {"steps": 30},
    "optimizers": [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.05}}],
    "seeds": [0, 3],
}


class CountingApp:
    """ASGI wrapper that counts the HTTP requests the application actually receives."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


def _clear_caches() -> None:
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request):
    # other modules' fixtures may have left the cached engine pointing elsewhere: start clean
    assert "OPTIBENCH_DATABASE_URL" not in os.environ
    environment = pytest.MonkeyPatch()
    if request.param == "postgres":
        environment.setenv("OPTIBENCH_DATABASE_URL", request.getfixturevalue("postgres_url"))
    _clear_caches()
    from api.main import create_app
    from db.migrate import upgrade
    from optibench.settings import get_settings

    settings_ = get_settings()
    assert settings_.database_url.startswith("sqlite:///" if request.param == "sqlite" else "postgresql")
    assert settings_.embedded_broker
    upgrade(settings_.database_url)
    yield create_app()
    # schemathesis keeps the application's lifespan (and so its sweeper thread) running until exit
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()
    environment.undo()
    _clear_caches()


def _describe(case, exc: BaseException) -> str:
    if isinstance(exc, AssertionError | BaseExceptionGroup):  # a failed check: the message has a curl command
        return str(exc)
    # anything else escaped the application (a server error the ASGI transport re-raises) or the client
    body = "" if isinstance(case.body, NotSet) else json.dumps(case.body, default=repr)[:1000]
    return (
        f"{type(exc).__name__}: {exc}\n  request: {case.method} {case.formatted_path} query={case.query!r} body={body}"
    )


#: schema keywords that do not constrain a value
_ANNOTATIONS = {"title", "description", "example", "examples", "deprecated"}


def _has_invalid_inputs(operation) -> bool:
    """Whether any request to ``operation`` violates its schema. Not where the only inputs are path parameters
    typed as plain strings: every path segment is one, so negative generation could never produce a case."""
    if (
        operation.body
        or any(True for _ in operation.query)
        or any(True for _ in operation.headers)
        or any(True for _ in operation.cookies)
    ):
        return True
    for parameter in operation.path_parameters:
        schema = parameter.definition.get("schema", {})
        if schema.get("type") != "string" or set(schema) - _ANNOTATIONS - {"type"}:
            return True
    return False


def _fuzz(strategy, counter: CountingApp) -> tuple[int, str | None]:
    """Run one Hypothesis test over ``strategy``: the requests it made, and the failure it found, if any
    (Hypothesis stops at the first failing case, shrinks it and replays it last)."""
    failing: list[str] = []
    before = counter.requests

    @FUZZ_SETTINGS
    @given(case=strategy)
    def test(case) -> None:
        try:
            case.call_and_validate(checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:
            failing.append(_describe(case, exc))
            raise

    try:
        test()
    except (Exception, BaseExceptionGroup) as exc:
        if not failing:  # raised outside the request, e.g. while generating
            failing.append(f"{type(exc).__name__}: {exc}")
    return counter.requests - before, (failing[-1] if failing else None)


def _seed(schema) -> tuple[tuple[int, str | None], dict[str, str]]:
    """Submit one valid comparison through schemathesis, so that the 202 answer is checked as well and
    reads are fuzzed past the 404 with stored ids."""
    case = schema[BASE]["POST"].Case(body=VALID_SPEC, media_type="application/json")
    try:
        response = case.call_and_validate(checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:
        return (1, _describe(case, exc)), {}
    if response.status_code != 202:
        return (1, f"a valid spec was answered {response.status_code}: {response.text[:300]}"), {}
    body = response.json()
    return (1, None), {"comparison_id": body["id"], "run_id": body["runs"][0]["id"]}


def test_fuzz_every_operation_conforms_to_the_schema(app):
    counter = CountingApp(app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", counter)
    schema.config.generation.update(allow_x00=True)  # NUL characters in generated strings
    counter.requests = 0  # the schema download is no generated request

    started = time.perf_counter()
    made: dict[str, tuple[int, float]] = {}
    failures: list[str] = []
    (count, failure), known = _seed(schema)
    made[f"POST {BASE} [valid spec]"] = (count, time.perf_counter() - started)
    failures += [f"POST {BASE} [valid spec]: {failure}"] * (failure is not None)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    for operation in operations:
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * _has_invalid_inputs(operation)
        runs = [(mode.value, operation.as_strategy(mode)) for mode in modes]
        path_params = {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}
        if path_params:
            runs.append(
                ("positive, stored ids", operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path_params))
            )
        for label, strategy in runs:
            run_started = time.perf_counter()
            count, failure = _fuzz(strategy, counter)
            made[f"{operation.label} [{label}]"] = (count, time.perf_counter() - run_started)
            failures += [f"{operation.label} [{label}]: {failure}"] * (failure is not None)
    elapsed = time.perf_counter() - started

    total = sum(count for count, _ in made.values())
    assert total == counter.requests
    summary = "\n".join(f"  {n:4d} {s:5.1f} s  {key}" for key, (n, s) in made.items())
    print(f"\nschemathesis {schemathesis.__version__}: {total} requests in {elapsed:.1f} s\n{summary}")
    assert not failures, f"{len(failures)} fuzz run(s) failed the checks:\n\n" + "\n\n".join(failures)
    assert total >= MIN_TOTAL_REQUESTS, f"only {total} requests were made:\n{summary}"


# --- body limits and malformed bodies ------------------------------------------------------------


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_body_is_413(client, chunked):
    from optibench.settings import get_settings

    raw = json.dumps(dict(VALID_SPEC, name="x" * (5 * 1024 * 1024))).encode()
    assert len(raw) > 5 * 1024 * 1024 > get_settings().max_body_bytes
    content = (raw[i : i + 65536] for i in range(0, len(raw), 65536)) if chunked else raw
    response = client.post(BASE, content=content, headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == ("chunked" if chunked else None)
    assert response.status_code == 413, (response.status_code, response.text[:300])


@pytest.mark.parametrize(
    "raw",
    ['{"name": "x", ', "not json", '{"name": "x"}}', b"\x80{}"],
    ids=["truncated", "not-json", "trailing-brace", "not-utf8"],
)
def test_malformed_json_is_422(client, raw):
    response = client.post(BASE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, (response.status_code, response.text[:300])
    assert any(error["type"] == "json_invalid" for error in response.json()["detail"])


# --- NUL and lone surrogates in every string position ----------------------------------------------

#: a valid body of each operation that takes one: each of its strings and keys in turn is made bad
BODIES = {
    ("POST", BASE): VALID_SPEC,
    ("PATCH", BASE + "/{comparison_id}"): {"tags": ["a"], "note": "n"},
    ("POST", BASE + "/{comparison_id}/share"): {"expires_in_hours": 1},
    ("POST", "/api/v1/admin/keys"): {"name": "k", "role": "member"},
    ("POST", BASE + "/{comparison_id}/runs"): {"seed": 0, "label": "l", "optimizer": {"name": "o", "params": {}}},
    ("POST", "/api/v1/runs/{run_id}/finish"): {"status": "failed", "error": "e"},
    ("POST", "/api/v1/runs/{run_id}/evals"): {"evals": [{"step": 0, "train_loss": 1.0}]},
    # an Arrow upload, but the guard refuses bad text in any JSON body before a route sees it
    ("POST", "/api/v1/runs/{run_id}/steps"): {"step": "s"},
    ("POST", "/api/v1/tracking/runs"): {"project": "p", "config": {"lr": 0.1, "model": "mlp"}, "name": "n"},
    ("POST", "/api/v1/tracking/runs/{tracked_run_id}/finish"): {"status": "failed", "error": "e"},
    ("POST", "/api/v1/tracking/runs/{tracked_run_id}/metrics"): {"step": "s"},
    ("POST", "/api/v1/suites/{name}/{version}/submissions"): {
        "optimizers": [{"name": "adam", "params": {"lr": 0.01}, "label": "l"}],
        "budget": "reduced",
    },
}
#: as JSON escapes in bodies (json.dumps writes them so), percent-encoded in paths and query strings
BAD_TEXT = {"NUL": ("a\x00b", "a%00b"), "lone surrogate": ("\ud800", "%ED%A0%80")}


def _poisoned(document, bad: str):
    """Every copy of ``document`` with one of its strings, or one of its keys, replaced by ``bad``, and
    the loc that names it."""
    if isinstance(document, str):
        yield bad, []
    elif isinstance(document, dict):
        for key, item in document.items():
            yield {**{k: v for k, v in document.items() if k != key}, bad: item}, [printable(bad)]
            for poisoned, loc in _poisoned(item, bad):
                yield {**document, key: poisoned}, [key, *loc]
    elif isinstance(document, list):
        for index, item in enumerate(document):
            for poisoned, loc in _poisoned(item, bad):
                yield [*document[:index], poisoned, *document[index + 1 :]], [index, *loc]


def _comparisons_stored() -> int:
    from sqlalchemy import func, select

    from db.models import Comparison
    from db.session import transaction

    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Comparison))


@pytest.mark.parametrize("kind", BAD_TEXT)
def test_bad_text_in_every_string_position_of_every_operation_is_422_naming_it(client, kind):
    text, percent = BAD_TEXT[kind]
    stored = _comparisons_stored()
    wrong, sent = [], 0
    for path, methods in client.app.openapi()["paths"].items():
        for method, operation in methods.items():
            method = method.upper()
            names = re.findall(r"{(\w+)}", path)
            parameters = operation.get("parameters", [])
            requests = [
                (path.format(**{n: percent if n == name else "x" for n in names}), {}, ["path", name]) for name in names
            ]
            requests += [
                (path.format(**dict.fromkeys(names, "x")) + f"?{p['name']}={percent}", {}, ["query", p["name"]])
                for p in parameters
                if p["in"] == "query"
            ]
            requests += [
                (
                    path.format(**dict.fromkeys(names, "x")),
                    {"headers": {p["name"]: "a\x00b"}},
                    ["header", p["name"].lower()],
                )
                for p in parameters
                if p["in"] == "header"
            ]
            if "requestBody" in operation:
                assert (method, path) in BODIES, f"{method} {path} takes a body: add a valid one to BODIES"
                requests += [
                    (
                        path.format(**dict.fromkeys(names, "x")),
                        {"content": json.dumps(body), "headers": {"content-type": "application/json"}},
                        ["body", *loc],
                    )
                    for body, loc in _poisoned(BODIES[method, path], text)
                ]
            for url, kwargs, loc in requests:
                response = client.request(method, url, **kwargs)
                sent += 1
                detail = response.json().get("detail") if response.status_code == 422 else None
                if (
                    not detail
                    or loc not in [error["loc"] for error in detail]
                    or any(error["type"] != "invalid_text" for error in detail)
                ):
                    wrong.append(
                        f"{method} {url} {kwargs}: {response.status_code} {response.text[:200]}, "
                        f"expected a 422 at {loc}"
                    )
    assert sent > 50 and not wrong, f"{len(wrong)} of {sent}:\n" + "\n".join(wrong)
    assert _comparisons_stored() == stored
