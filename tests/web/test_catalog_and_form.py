"""The catalogue page and the form that builds a comparison from it, in Chromium against a real
`optibench serve`: searching and filtering the catalogue (what stays visible is what the JSON
catalogue says should), building a comparison field by field through to its page, a bad value's
error at its field, the form and the JSON editor following each other, and parameter groups.
(tests/api/test_pages.py checks the catalogue's HTML entry by entry.)"""

from __future__ import annotations

import json
import re
import uuid

import pytest

pytestmark = pytest.mark.e2e


def _catalog(web_service) -> dict[str, list[dict]]:
    with web_service.client as client:
        return client.get("/api/v1/catalog").json()


def _has(entry: dict, token: str) -> bool:
    """Whether an entry of GET /api/v1/catalog declares a capability filter's value."""
    name, _, wanted = token.partition("=")
    declared = {**entry, **(entry.get("capabilities") or {})}
    if name not in declared:
        return False
    value = declared[name]
    if not wanted:
        return value is True
    return wanted in map(str, value) if isinstance(value, (list, tuple)) else str(value) == wanted


def _visible(p) -> list[str]:
    return p.evaluate("[...document.querySelectorAll('tr.entry')].filter((row) => !row.hidden).map((row) => row.id)")


def _options(p, select: str) -> list[str]:
    return p.evaluate(f"[...document.querySelectorAll('{select} option')].map((o) => o.value).filter(Boolean)")


def test_the_catalog_searches_and_filters(page, web_service):
    catalog = _catalog(web_service)
    entries = [(f"{kind}-{entry['name']}", entry) for kind, listed in catalog.items() for entry in listed]
    p = page.page
    p.goto("/catalog")
    assert p.inner_text("#catalog-count") == f"{len(entries)} of {len(entries)} shown"
    assert _visible(p) == [anchor for anchor, _ in entries]

    def expect(**wanted) -> list[str]:
        words = wanted.get("q", "").lower().split()
        return [
            anchor
            for anchor, entry in entries
            if all(w in f"{entry['name']} {entry.get('description') or ''}".lower() for w in words)
            and anchor.startswith(f"{wanted.get('kind', '')}")
            and all(str(entry.get(key)) == wanted[key] for key in ("family", "source") if key in wanted)
            and ("capability" not in wanted or _has(entry, wanted["capability"]))
        ]

    p.fill("#filter-q", "Adam")
    assert _visible(p) == expect(q="adam") and "optimizers-adam" in _visible(p)
    p.fill("#filter-q", "rate learning")  # every word, anywhere, any case
    assert _visible(p) == expect(q="rate learning")
    p.fill("#filter-q", "")
    p.select_option("#filter-kind", "functions")
    assert _visible(p) == expect(kind="functions") and p.locator("#optimizers").is_hidden()
    p.select_option("#filter-kind", "")

    # each family, source and capability the select offers is one the catalogue declares, and filters to it
    for key in ("family", "source"):
        declared = sorted({str(entry[key]) for _, entry in entries if entry.get(key)})
        assert _options(p, f"#filter-{key}") == declared
        for value in declared[:3]:
            p.select_option(f"#filter-{key}", value)
            assert _visible(p) == expect(**{key: value}) != []
        p.select_option(f"#filter-{key}", "")
    capabilities = _options(p, "#filter-capability")
    assert "full_batch_only" in capabilities
    for token in capabilities:
        p.select_option("#filter-capability", token)
        assert _visible(p) == expect(capability=token) != [], token
    p.select_option("#filter-capability", "full_batch_only")
    p.fill("#filter-q", "lbfgs")
    both = expect(q="lbfgs", capability="full_batch_only")
    assert _visible(p) == both and "optimizers-lbfgs" in both
    assert p.inner_text("#catalog-count") == f"{len(both)} of {len(entries)} shown"
    assert p.locator("#optimizers-lbfgs table.params code", has_text="history_size").is_visible()  # a short list opens

    # the filters are in the URL: a reload shows the same rows
    assert re.search(r"\?q=lbfgs&capability=full_batch_only$", p.url)
    p.reload()
    assert _visible(p) == both and p.input_value("#filter-q") == "lbfgs"
    p.fill("#filter-q", "no such optimizer anywhere")
    assert _visible(p) == [] and p.locator("#catalog-empty").is_visible()
    assert page.problems() == []


def _editor(p) -> dict:
    return json.loads(p.input_value("#spec-editor"))


def test_the_form_builds_a_comparison_from_the_catalogue(page, web_service):
    name = f"built in the form {uuid.uuid4().hex[:6]}"
    p = page.page
    p.goto("/new")
    p.select_option("#start", "blank")
    # the problem: a function, picked from the catalogue, with its parameters as fields
    p.check("#problem-kind-dataset")
    assert p.locator("#field-problem-model-name").is_visible() and "dataset" in _editor(p)["problem"]
    # a dataset of another task takes a loss of its task
    losses = {loss["name"]: loss.get("task") for loss in _catalog(web_service)["losses"]}
    p.select_option("#field-problem-dataset-name", "synthetic_regression")
    assert losses[_editor(p)["problem"]["loss"]] == "regression"
    p.check("#problem-kind-function")
    p.select_option("#field-problem-function-name", "quadratic")
    assert p.locator("#field-problem-function-params-center").is_visible()
    p.fill("#field-problem-x0", "8")
    # the optimizers: the template's are removed, two are added by search
    while p.locator("#remove-optimizer-0").count():
        p.click("#remove-optimizer-0")
    p.fill("#optimizer-search", "adam")
    p.press("#optimizer-search", "Enter")
    p.fill("#optimizer-search", "sgd")
    p.click("#add-optimizer")
    assert p.input_value("#field-optimizers-0-params-lr") == "0.001"  # the default, prefilled
    assert p.input_value("#field-optimizers-0-params-betas-1") == "0.999"  # a tuple: one input per item
    p.fill("#field-optimizers-0-params-lr", "0.1")
    p.check("#field-optimizers-0-params-amsgrad")
    p.fill("#field-optimizers-0-label", "adam amsgrad")
    p.fill("#field-optimizers-1-params-momentum", "0.5")
    p.select_option("#field-optimizers-1-schedule-name", "cosine")
    p.fill("#field-optimizers-1-schedule-min_factor", "0.1")
    p.click("#add-sweep-1")
    p.select_option("#field-optimizers-1-sweep-lr-mode", "log_uniform")
    p.fill("#field-optimizers-1-sweep-lr-lo", "0.01")
    p.fill("#field-optimizers-1-sweep-lr-hi", "0.1")
    p.fill("#field-optimizers-1-sweep-lr-n", "2")
    # the budget, seeds and precision
    p.fill("#field-training-steps", "30")
    p.fill("#field-seeds", "3")
    p.select_option("#field-dtype", '"float64"')
    p.fill("#field-name", name)
    sent = _editor(p)
    assert sent["optimizers"][1] == {
        "name": "sgd",
        "params": {"momentum": 0.5},
        "schedule": {"name": "cosine", "min_factor": 0.1},
        "sweep": {"lr": {"log_uniform": [0.01, 0.1], "n": 2}},
    }
    p.click("#submit")
    p.wait_for_url(re.compile(r"/comparisons/[0-9a-f]{32}$"))
    with web_service.client as client:  # what was stored is what the form built (training is tested elsewhere)
        created = client.get(f"/api/v1/comparisons/{p.url.rsplit('/', 1)[1]}").json()
    spec = created["spec"]
    assert (created["name"], spec["seeds"], spec["dtype"]) == (name, [3], "float64")
    assert spec["problem"]["function"]["name"] == "quadratic" and spec["problem"]["x0"] == [8.0]
    adam, sgd = spec["optimizers"]
    assert (adam["name"], adam["label"], adam["params"]["lr"], adam["params"]["amsgrad"]) == (
        "adam",
        "adam amsgrad",
        0.1,
        True,
    )
    assert (sgd["params"]["momentum"], sgd["schedule"], len(sgd["sweep"]["lr"])) == (
        0.5,
        {"name": "cosine", "min_factor": 0.1},
        2,
    )
    assert sorted(run["label"] for run in created["runs"]) == sorted(
        ["adam amsgrad", *(f"sgd(lr={lr:g})" for lr in sgd["sweep"]["lr"])]
    )
    assert p.inner_text("#comparison-name") == name
    assert page.problems() == []


def test_a_bad_value_shows_its_error_at_its_field(page):
    p = page.page
    p.goto("/new?template=adam_vs_sgd_quadratic")
    p.fill("#field-optimizers-0-params-lr", "-1")
    p.fill("#field-optimizers-1-params-momentum", "-2")
    p.fill("#field-seeds", "1, 1")
    p.click("#submit")
    p.wait_for_selector("#editor-errors li")
    assert "greater than 0" in p.inner_text("#error-optimizers-0-params-lr")
    assert "greater than or equal to 0" in p.inner_text("#error-optimizers-1-params-momentum")
    assert "distinct" in p.inner_text("#error-seeds")
    assert p.locator('[data-path="optimizers.0.params.lr"].has-error').count() == 1
    # the first bad field has the focus, and the page did not move on
    assert p.evaluate("document.activeElement.id") == "field-optimizers-0-params-lr"
    assert p.url.endswith("/new?template=adam_vs_sgd_quadratic")
    # correcting a field clears its error
    p.fill("#field-optimizers-0-params-lr", "0.1")
    assert p.inner_text("#error-optimizers-0-params-lr") == ""
    assert page.problems(allowed=("status of 422",)) == []


def test_the_json_and_the_form_follow_each_other(page):
    p = page.page
    p.goto("/new?template=adam_vs_sgd_quadratic")
    spec = _editor(p)
    # JSON -> form: another optimizer and its parameters, a budget
    spec["optimizers"][0] = {"name": "rmsprop", "params": {"lr": 0.02, "centered": True}}
    spec["training"] = {"steps": 77}
    p.fill("#spec-editor", json.dumps(spec))
    assert p.input_value("#field-optimizers-0-name") == "rmsprop"
    assert p.input_value("#field-optimizers-0-params-lr") == "0.02"
    assert p.is_checked("#field-optimizers-0-params-centered")
    assert p.input_value("#field-optimizers-0-params-alpha") == "0.99"  # its default
    assert p.input_value("#field-training-steps") == "77"
    # form -> JSON
    p.fill("#field-optimizers-0-params-alpha", "0.9")
    p.uncheck("#field-optimizers-0-params-centered")
    edited = _editor(p)
    assert edited["optimizers"][0]["params"] == {"lr": 0.02, "centered": False, "alpha": 0.9}
    assert {k: v for k, v in edited.items() if k != "optimizers"} == {
        k: v for k, v in spec.items() if k != "optimizers"
    }
    # JSON that does not parse is never overwritten by a form edit, and is what a submit refuses
    p.fill("#spec-editor", '{"name": ')
    assert "not valid JSON" in p.inner_text("#editor-status")
    p.fill("#field-optimizers-0-params-alpha", "0.8")
    assert p.input_value("#spec-editor") == '{"name": '
    p.click("#submit")
    assert "not valid JSON" in p.inner_text("#editor-errors")
    # JSON of the wrong shape still draws a form (the server names what is wrong), and a field fixes it
    p.fill("#spec-editor", '{"problem": 5, "optimizers": [5, null], "training": []}')
    p.fill("#field-optimizers-0-name", "sgd")
    p.dispatch_event("#field-optimizers-0-name", "change")
    assert _editor(p)["optimizers"][0] == {"name": "sgd", "params": {}}
    assert page.problems() == []


def test_parameter_groups_are_fields_and_a_bad_selector_is_shown_at_its_field(page):
    p = page.page
    p.goto("/new?template=muon_adamw_mlp")
    # the example's Muon on the hidden matrices: its own optimizer with its parameters as fields
    assert p.input_value("#field-optimizers-0-groups-0-select") == "hidden_matrices"
    assert p.input_value("#field-optimizers-0-groups-0-optimizer-name") == "muon"
    assert p.input_value("#field-optimizers-0-groups-0-optimizer-params-lr") == "0.02"
    p.fill("#field-optimizers-0-groups-0-optimizer-params-lr", "0.05")
    assert _editor(p)["optimizers"][0]["groups"][0]["optimizer"] == {
        "name": "muon",
        "params": {"lr": 0.05, "weight_decay": 0.01},
    }
    # a third group for the second entry, with a selector that does not exist
    p.click("#add-optimizers-1-groups")
    p.fill("#field-optimizers-1-groups-2-select", "norms, no_such_part")
    assert _editor(p)["optimizers"][1]["groups"][2] == {"select": ["norms", "no_such_part"]}
    p.click("#submit")
    p.wait_for_selector("#editor-errors li")
    assert "no_such_part" in p.inner_text("#error-optimizers-1-groups-2-select")
    assert p.evaluate("document.activeElement.id") == "field-optimizers-1-groups-2-select"
    assert page.problems(allowed=("status of 422",)) == []
