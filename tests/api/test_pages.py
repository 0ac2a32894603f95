"""The dashboards' HTML in-process, on both databases: the history's filters and pages (and the same
filters on the JSON list), what each page embeds for its script, no external URL anywhere, the
compare page's unknown runs, clone and templates, the catalogue, and with OPTIBENCH_AUTH=required:
the login redirect, sessions, CSRF and the share page. The pages' scripts run in tests/web."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import plotly
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from api.schemas import json_safe
from db import comparisons
from db.models import Team
from db.session import transaction
from engine import registry
from engine.spec import ComparisonSpec
from services.catalog import PLURAL
from tests.api.teams import COMPARISONS, bearer, function_spec, make_team, record_steps, submit, team_client

__all__ = ["team_client"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def client(use_database):
    from api.main import create_app

    return TestClient(create_app())


def _submit(client: TestClient, **overrides) -> dict:
    response = client.post(COMPARISONS, json=function_spec(**overrides))
    assert response.status_code == 202, response.text
    return response.json()


def _history_names(html: str) -> list[str]:
    return re.findall(r'<a href="/comparisons/[0-9a-f]+">([^<]*)</a>', html)


def _page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S).group(1))


# --- the history -------------------------------------------------------------------------------


def test_history_filters_combine_and_the_pager_keeps_them(client):
    token = uuid.uuid4().hex[:8]
    first = _submit(client, name=f"{token} one", tags=["nightly"])
    _submit(client, name=f"{token} two", optimizers=[{"name": "rmsprop"}])
    third = _submit(
        client,
        name=f"{token} three",
        tags=["nightly"],
        problem={"model": {"name": "linear"}, "dataset": {"name": "iris"}, "loss": "cross_entropy"},
    )
    record_steps(first["runs"][0]["id"], [3.0, 1.0])

    page = client.get("/", params={"q": token})
    assert page.status_code == 200
    assert _history_names(page.text) == [f"{token} three", f"{token} two", f"{token} one"]
    assert "linear · iris" in page.text and "adam, sgd" in page.text and "quadratic" in page.text
    assert _history_names(client.get("/", params={"q": token, "optimizer": "adam", "tag": "nightly"}).text) == [
        f"{token} three",
        f"{token} one",
    ]
    assert _history_names(client.get("/", params={"q": token, "model": "linear"}).text) == [f"{token} three"]
    assert _history_names(client.get("/", params={"q": token, "function": "quadratic", "status": "queued"}).text) == [
        f"{token} two",
        f"{token} one",
    ]
    # an unset form field is no filter
    assert len(_history_names(client.get("/", params={"q": token, "status": "", "model": ""}).text)) == 3
    assert "No comparison matches" in client.get("/", params={"q": token, "optimizer": "lbfgs"}).text

    older = re.search(
        r'id="older" href="([^"]+)"', client.get("/", params={"q": token, "tag": "nightly", "limit": 1}).text
    )
    next_page = client.get(older.group(1).replace("&amp;", "&"))
    assert _history_names(next_page.text) == [f"{token} one"] and 'id="older"' not in next_page.text
    assert client.get("/", params={"cursor": "not-a-cursor"}).status_code == 400
    assert third["id"] in client.get("/", params={"q": token.upper()}).text


def test_the_json_list_takes_the_same_filters_and_names_a_bad_one(client):
    token = uuid.uuid4().hex[:8]
    made = _submit(client, name=f"{token} adam", optimizers=[{"name": "adam"}], tags=["x y"])
    _submit(client, name=f"{token} sgd", optimizers=[{"name": "sgd"}])

    def listed(**params) -> list[str]:
        response = client.get(COMPARISONS, params={"q": token, **params})
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert listed() == [f"{token} sgd", f"{token} adam"]
    assert (
        listed(optimizer="adam")
        == listed(tag="x y")
        == listed(function="quadratic", optimizer="adam")
        == [made["name"]]
    )
    assert listed(status="failed") == [] and listed(status="") == listed()
    for params, field in (
        ({"status": "done"}, "status"),
        ({"optimizer": "a" * 101}, "optimizer"),
        ({"q": "q" * 201}, "q"),
    ):
        response = client.get(COMPARISONS, params=params)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", field]


# --- what the pages hold -----------------------------------------------------------------------


def _local_urls_only(html: str) -> None:
    # a paper's link in the catalogue is the one way out, and only when clicked
    html = re.sub(r'<a class="reference" href="https?://[^"]+"', '<a class="reference"', html)
    assert "http://" not in html and "https://" not in html and "cdn" not in html.lower()
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("/", "#", "data:", "?")) and not url.startswith("//"), url


def test_every_page_is_served_without_an_external_url(client):
    made = _submit(client, name="</script><script>alert(1)</script>")
    run_id = made["runs"][0]["id"]
    record_steps(run_id, [2.0, 1.0, 0.5])
    link = client.post(f"{COMPARISONS}/{made['id']}/share", json={}).json()
    for path in (
        "/",
        f"/comparisons/{made['id']}",
        f"/compare?runs={run_id}",
        "/compare",
        "/new",
        f"/new?clone={made['id']}",
        "/catalog",
        f"/shared/{link['token']}",
        "/login",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        _local_urls_only(response.text)
        assert "<script>alert(1)" not in response.text, path
    plotly_js = client.get(f"/static/vendor/plotly.min.js?v={plotly.__version__}")
    assert plotly_js.content == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert plotly_js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert f'src="/static/vendor/plotly.min.js?v={plotly.__version__}"' in client.get(f"/comparisons/{made['id']}").text
    assert client.get("/static/charts.js").status_code == 200


def test_the_comparison_page_embeds_what_its_script_reads(client):
    made = _submit(client, training={"steps": 20, "eval_every": 5})
    page = client.get(f"/comparisons/{made['id']}").text
    data = _page_data(page)
    assert data["api"] == f"/api/v1/comparisons/{made['id']}" and data["run_curve"] == "/api/v1/runs/{run_id}/curve"
    assert data["readonly"] is False and data["comparison"]["runs"] == made["runs"]
    # the spec is shown in the order it was written, with a clone button
    assert (
        json.loads(re.search(r'<pre id="spec">(.*?)</pre>', page, re.S).group(1).replace("&#34;", '"')) == made["spec"]
    )
    assert f'href="/new?clone={made["id"]}"' in page
    assert client.get("/comparisons/not-an-id").status_code == 404


def test_compare_lists_the_runs_it_cannot_find(client):
    mine = _submit(client)["runs"]
    with transaction() as session:
        team = Team(name=f"elsewhere-{uuid.uuid4().hex[:6]}")
        session.add(team)
        session.flush()
        spec = ComparisonSpec.model_validate(function_spec()).model_dump(mode="json")
        theirs = comparisons.create_comparison(session, spec, 20, team_id=team.id).runs[0].id
    ids = [mine[0]["id"], mine[2]["id"]]
    page = client.get("/compare", params={"runs": ",".join(ids)})
    assert page.status_code == 200 and [run["id"] for run in _page_data(page.text)] == ids
    missing = client.get("/compare", params={"runs": f"{ids[0]},nope,{theirs}"})
    assert missing.status_code == 404
    listed = re.search(r'id="unknown-runs">(.*?)</p>', missing.text, re.S).group(1)
    assert "nope" in listed and theirs in listed and ids[0] not in listed
    assert client.get("/compare", params={"runs": ",".join(f"r{i}" for i in range(51))}).status_code == 422


def test_new_starts_from_an_example_or_a_clone_that_submits_again(client):
    starts = _page_data(client.get("/new").text)
    assert {key for key in starts} == {f"example:{path.stem}" for path in EXAMPLES.glob("*.json")}
    assert starts["example:adam_vs_sgd_quadratic"]["spec"] == json.loads(
        (EXAMPLES / "adam_vs_sgd_quadratic.json").read_text()
    )
    chosen = client.get("/new", params={"template": "update_rules"}).text
    assert re.search(r'<option value="example:update_rules" selected>', chosen)
    assert client.get("/new", params={"template": "nope"}).status_code == 404

    made = _submit(client, name="to clone", tags=["cloned"])
    clone = _page_data(client.get("/new", params={"clone": made["id"]}).text)[f"clone:{made['id']}"]
    assert clone["spec"] == made["spec"] | {"name": "to clone (copy)"}
    again = client.post(COMPARISONS, json=clone["spec"])
    assert again.status_code == 202 and again.json()["spec"] == clone["spec"]
    assert client.get("/new", params={"clone": "nope"}).status_code == 404


def test_the_catalog_lists_every_component_with_its_parameters(client):
    page = client.get("/catalog").text
    for kind in registry.KINDS:
        for name, component in registry.all_of(kind).items():
            anchor = f'<tr id="{PLURAL[kind]}-{name}"'
            assert anchor in page, (kind, name)
            row = page.split(anchor, 1)[1].split('<tr id="', 1)[0]  # up to the next component's row
            for param in component.Params.model_fields:
                assert f"<code>{param}</code>" in row, (kind, name, param)
    assert 'id="schedules-warmup_cosine"' in page and "one of" in page


def _rows(page: str) -> dict[str, str]:
    """Each catalogue row's HTML (its opening tag and cells) by its id."""
    return {
        row_id: row
        for row_id, row in re.findall(r'<tr id="([^"]+)"(.*?)(?=<tr id="|</tbody>\s*</table>\s*</section>)', page, re.S)
    }


def test_the_catalog_page_shows_what_each_entry_declares(client):
    listed = client.get("/api/v1/catalog").json()
    page = client.get("/catalog").text
    rows = _rows(page)
    entries = [(f"{kind}-{entry['name']}", entry) for kind, found in listed.items() for entry in found]
    assert list(rows) == [escape(anchor) for anchor, _ in entries]
    assert re.search(rf'id="catalog-count"[^>]*>{len(entries)} of {len(entries)} shown<', page)
    for anchor, entry in entries:
        row = rows[escape(anchor)]
        for attribute, value in (("family", entry.get("family")), ("source", entry.get("source"))):
            assert f'data-{attribute}="{escape(value or "")}"' in row, (anchor, attribute)
        search = re.search(r'data-search="([^"]*)"', row).group(1)
        assert search == escape(f"{entry['name']} {entry.get('description') or ''}".lower()), anchor
        capabilities = re.search(r'data-capabilities="([^"]*)"', row).group(1).split()
        traits = {t: entry[t] for t in ("full_batch_only", "task") if t in entry} | (entry.get("capabilities") or {})
        for name, value in traits.items():
            assert (name in capabilities) == (value is True), (anchor, name)
            if isinstance(value, str):
                assert f"{name}={value}" in capabilities and f"{name.replace('_', ' ')}: {escape(value)}" in row
        if entry.get("version"):
            assert f"{escape(entry['source'])} {escape(entry['version'])}</span>" in row, anchor
        reference = entry.get("reference")
        if isinstance(reference, dict):
            if reference.get("url"):
                assert f'<a class="reference" href="{escape(reference["url"])}"' in row, anchor
            assert escape(reference.get("title") or reference["url"]) in row, anchor
        if entry.get("supported") is False:
            assert 'class="entry unsupported"' in row and escape(entry["unsupported_reason"]) in row, anchor
        else:
            assert 'class="entry unsupported"' not in row, anchor
    # the filters offer what the entries declare, nothing else
    optimizers = listed["optimizers"]
    for attribute in ("family", "source"):
        offered = re.search(rf'<select id="filter-{attribute}".*?</select>', page, re.S).group(0)
        values = re.findall(r'<option value="([^"]+)">', offered)
        assert values == sorted({escape(str(e[attribute])) for e in optimizers if e.get(attribute)}), attribute
    assert len(optimizers) >= 140 and any(e.get("supported") is False for e in optimizers)
    assert any(isinstance(e.get("reference"), dict) for e in optimizers)


def test_new_embeds_the_catalogue_and_the_spec_schema_for_its_form(client):
    page = client.get("/new").text
    form = json.loads(re.search(r'<script type="application/json" id="form-data">(.*?)</script>', page, re.S).group(1))
    listed = client.get("/api/v1/catalog").json()
    unreferenced = {
        kind: [{k: v for k, v in e.items() if k != "reference"} for e in found] for kind, found in listed.items()
    }
    assert form["catalog"] == json_safe(unreferenced)
    assert form["schema"] == json_safe(ComparisonSpec.model_json_schema())
    searchable = re.findall(r'<option value="([^"]+)">', page.split('<datalist id="optimizer-names">', 1)[1])
    supported = [e["name"] for e in form["catalog"]["optimizers"] if e.get("supported") is not False]
    assert searchable[: len(supported)] == supported


# --- with authentication -----------------------------------------------------------------------


def _log_in(client: TestClient, key: str, next_path: str) -> None:
    form = client.get("/login", params={"next": next_path}).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    response = client.post("/login", data={"key": key, "next": next_path, "csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == next_path


def test_pages_need_a_session_and_show_only_the_team(team_client):
    client = team_client
    team, other = make_team(), make_team()
    ours, theirs = submit(client, team.member, name="ours"), submit(client, other.member, name="theirs")
    for path in ("/", f"/comparisons/{ours['id']}", "/new", "/catalog", f"/compare?runs={ours['runs'][0]['id']}"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/"), path

    _log_in(client, team.member, f"/comparisons/{ours['id']}")
    page = client.get(f"/comparisons/{ours['id']}")
    assert page.status_code == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)
    history = client.get("/").text
    assert "ours" in _history_names(history) and "theirs" not in _history_names(history)
    assert client.get(f"/comparisons/{theirs['id']}").status_code == 404
    assert client.get("/new", params={"clone": theirs["id"]}).status_code == 404
    # the page's script reads with the session cookie, and writes only with the page's CSRF token
    assert client.get(f"{COMPARISONS}/{ours['id']}/curves").status_code == 200
    assert client.post(f"{COMPARISONS}/{ours['id']}/cancel").status_code == 403
    assert client.post(f"{COMPARISONS}/{ours['id']}/cancel", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_the_share_page_is_read_only_for_anyone_with_the_link(team_client):
    client = team_client
    team = make_team()
    made = submit(client, team.member)
    link = client.post(f"{COMPARISONS}/{made['id']}/share", json={}, headers=bearer(team.member)).json()
    client.cookies.clear()
    page = client.get(f"/shared/{link['token']}")
    assert page.status_code == 200
    data = _page_data(page.text)
    assert data["readonly"] is True and data["api"] == f"/api/v1/shared/{link['token']}"
    assert data["run_curve"] == f"/api/v1/shared/{link['token']}/runs/{{run_id}}/curve"
    assert 'href="/new' not in page.text and 'href="/catalog"' not in page.text and 'id="cancel"' not in page.text
    assert client.get(f"{data['api']}/curves").status_code == 200
    assert client.delete(f"/api/v1/share-links/{link['id']}", headers=bearer(team.member)).status_code == 204
    revoked = client.get(f"/shared/{link['token']}")
    assert revoked.status_code == 404 and "revoked" in revoked.text
    assert client.get(f"/shared/{link['token']}x").status_code == 404
