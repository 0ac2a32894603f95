"""The dashboards: HTML pages rendered by the server. The history is a server-side table; the
comparison, compare and share pages draw their figures in the browser from the JSON API (Plotly,
served from the installed package, never a CDN). Every page is scoped to the team like the API;
without a session the browser is sent to /login. Documented in docs/dashboards.md."""

from __future__ import annotations

import functools
import json
import pathlib
import re
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from api import auth
from api.deps import PageDep, Principal, SessionDep, SettingsDep, shared_comparison
from api.reads import HistoryQuery
from api.schemas import ComparisonOut, ComparisonStatus, json_safe
from db import history as stored
from db.models import TERMINAL, Comparison
from engine import registry
from engine.spec import ComparisonSpec
from services.catalog import catalog

router = APIRouter(include_in_schema=False)
#: reachable without a key: the share page (the token is the permission) and the page's script
public_router = APIRouter(include_in_schema=False)

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
PLOTLY_JS = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
HISTORY_PAGE = 50
#: the most runs one compare page overlays
MAX_COMPARED_RUNS = 50

templates = auth.templates
# the version in the URL lets the browser cache the file for a year and still see an upgrade
templates.env.globals["plotly_src"] = f"/static/vendor/plotly.min.js?v={plotly.__version__}"
# specs keep the order they were written in (name, problem, training, optimizers), not the alphabet's
templates.env.policies["json.dumps_kwargs"] = {"sort_keys": False}


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _message(
    request: Request, status_code: int, title: str, message: str, principal: Principal | None = None
) -> HTMLResponse:
    return _page(request, "message.html", status_code, title=title, message=message, principal=principal)


@public_router.get("/static/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    """The plotly.js bundled with the installed ``plotly`` package: charts work on a closed network."""
    return FileResponse(
        PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


# --- history -----------------------------------------------------------------------------------


def _problem(comparison: Comparison) -> str:
    if comparison.function_name:
        return comparison.function_name
    return " · ".join(name for name in (comparison.model_name, comparison.dataset_name) if name)


@router.get("/", response_class=HTMLResponse)
def history(
    request: Request,
    principal: PageDep,
    session: SessionDep,
    where: Annotated[HistoryQuery, Query()],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = HISTORY_PAGE,
) -> HTMLResponse:
    """The team's comparisons, newest first, filtered, keyset-paginated (db.history.list_comparisons)."""
    try:
        page, next_cursor = stored.list_comparisons(session, principal.team_id, limit, cursor, where.filter())
    except ValueError:
        return _message(
            request, 400, "Bad page link", "The cursor of this link is malformed: start from the first page.", principal
        )
    progress = stored.progress_of(session, [c.id for c in page])
    filters = where.model_dump(exclude_none=True)
    rows = [{"comparison": c, "problem": _problem(c), "progress": progress.get(c.id, stored.Progress())} for c in page]
    return _page(
        request,
        "history.html",
        principal=principal,
        rows=rows,
        filters=filters,
        next_query={**filters, "cursor": next_cursor} if next_cursor else None,
        first_page=cursor is not None,
        statuses=list(ComparisonStatus),
        choices={kind: registry.names(kind) for kind in ("optimizer", "model", "dataset", "function")},
    )


# --- one comparison ----------------------------------------------------------------------------


def _comparison_page(
    request: Request, comparison: Comparison, *, api: str, run_curve: str, principal: Principal | None = None
) -> HTMLResponse:
    """``api``: where the page's script reads the comparison and its figures; ``run_curve``: one run's
    curve, with {run_id} in it. Without a principal (a share link) the page is read-only."""
    shared = principal is None
    data = {
        "api": api,
        "run_curve": run_curve,
        "readonly": shared,
        "comparison": json_safe(ComparisonOut.full(comparison).model_dump(mode="json")),
    }
    return _page(
        request,
        "comparison.html",
        principal=principal,
        comparison=comparison,
        data=data,
        running=comparison.status not in TERMINAL,
        shared=shared,
    )


@router.get("/comparisons/{comparison_id}", response_class=HTMLResponse)
def comparison_page(comparison_id: str, request: Request, principal: PageDep, session: SessionDep) -> HTMLResponse:
    comparison = stored.get_comparison(session, comparison_id, principal.team_id)
    if comparison is None:
        return _message(
            request, 404, "Not found", f"There is no comparison {comparison_id!r} in your team's history.", principal
        )
    return _comparison_page(
        request,
        comparison,
        api=f"/api/v1/comparisons/{comparison.id}",
        run_curve="/api/v1/runs/{run_id}/curve",
        principal=principal,
    )


@public_router.get("/shared/{token}", response_class=HTMLResponse)
def shared_page(
    token: Annotated[str, Path(max_length=200)], request: Request, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """The comparison page, read-only, for anyone holding a share link: its data comes from the
    token's own routes (/api/v1/shared/{token}/...)."""
    try:
        comparison = shared_comparison(token, session, settings)
    except HTTPException as exc:
        return _message(request, exc.status_code, "Link not valid", exc.detail)
    return _comparison_page(
        request, comparison, api=f"/api/v1/shared/{token}", run_curve=f"/api/v1/shared/{token}/runs/{{run_id}}/curve"
    )


# --- runs of several comparisons ---------------------------------------------------------------


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    principal: PageDep,
    session: SessionDep,
    runs: Annotated[str, Query(max_length=4000, description="run ids, comma-separated")] = "",
) -> HTMLResponse:
    """Loss curves of runs from any of the team's comparisons, overlaid."""
    ids = list(dict.fromkeys(run_id.strip() for run_id in runs.split(",") if run_id.strip()))
    if len(ids) > MAX_COMPARED_RUNS:
        return _message(
            request,
            422,
            "Too many runs",
            f"Compare at most {MAX_COMPARED_RUNS} runs at once; this link names {len(ids)}.",
            principal,
        )
    found = {run_id: stored.get_run(session, run_id, principal.team_id) for run_id in ids}
    unknown = [run_id for run_id, run in found.items() if run is None]
    if unknown:
        return _page(request, "compare.html", 404, principal=principal, runs=[], ids=ids, unknown=unknown)
    shown = [
        {
            "id": run.id,
            "label": run.label,
            "seed": run.seed,
            "status": run.status,
            "comparison_id": run.comparison_id,
            "comparison_name": run.comparison.name,
        }
        for run in found.values()
        if run is not None
    ]
    return _page(request, "compare.html", principal=principal, runs=shown, ids=ids, unknown=[])


# --- submitting --------------------------------------------------------------------------------


def _examples() -> dict[str, dict]:
    """The spec files of examples/, by file name without .json; none where the folder is not shipped."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.json"))}


@router.get("/new", response_class=HTMLResponse)
def new_page(
    request: Request,
    principal: PageDep,
    session: SessionDep,
    clone: Annotated[str | None, Query(max_length=64, description="a comparison to start from")] = None,
    template: Annotated[str | None, Query(max_length=100, description="an example's file name")] = None,
) -> HTMLResponse:
    """A form that submits a spec through POST /api/v1/comparisons; errors show at their field."""
    starts = {f"example:{name}": {"title": spec["name"], "spec": spec} for name, spec in _examples().items()}
    chosen = f"example:{template}" if template else next(iter(starts), None)
    if clone:
        source = stored.get_comparison(session, clone, principal.team_id)
        if source is None:
            return _message(
                request,
                404,
                "Not found",
                f"There is no comparison {clone!r} to clone in your team's history.",
                principal,
            )
        chosen = f"clone:{source.id}"
        starts = {
            chosen: {"title": f"Clone of {source.name}", "spec": source.spec | {"name": f"{source.name} (copy)"}}
        } | starts
    if chosen is not None and chosen not in starts:
        return _message(
            request,
            404,
            "No such template",
            f"There is no example {template!r}; examples: {', '.join(sorted(_examples()))}.",
            principal,
        )
    return _page(
        request,
        "new.html",
        principal=principal,
        starts=starts,
        chosen=chosen,
        form=json_safe({"catalog": _form_catalog(), "schema": _spec_schema()}),
    )


def _form_catalog() -> dict[str, list[dict[str, Any]]]:
    """The catalogue as the form reads it: a component's references are on /catalog, which it links to."""
    return {
        kind: [{k: v for k, v in e.items() if k != "reference"} for e in entries] for kind, entries in catalog().items()
    }


@functools.cache
def _spec_schema() -> dict[str, Any]:
    """The ComparisonSpec's JSON schema: the form builds its fields (training, an entry's label, batch size,
    groups, ...) from it, and each component's parameters from the catalogue."""
    return ComparisonSpec.model_json_schema()


# --- the catalogue -----------------------------------------------------------------------------


def _range(prop: dict[str, Any]) -> str:
    bounds = [
        f"{symbol} {prop[key]}"
        for key, symbol in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
        if key in prop
    ]
    if "enum" in prop:
        bounds.append("one of " + ", ".join(map(json.dumps, prop["enum"])))
    return ", ".join(bounds)


def _type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type(option) for option in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    return prop.get("type") or ("const " + json.dumps(prop["const"]) if "const" in prop else "any")


def _param_row(prop: dict[str, Any]) -> dict[str, Any]:
    """A catalogue parameter (its JSON schema) as the page's table shows it."""
    return {
        "name": prop["name"],
        "type": _type(prop),
        "required": prop["required"],
        "default": json.dumps(prop["default"]) if "default" in prop else "",
        "range": _range(prop) or " ".join(filter(None, map(_range, prop.get("anyOf", [])))),
        "description": prop.get("description", ""),
    }


#: an entry's traits shown outside ``capabilities`` (older entries, and the data components' own)
TOP_LEVEL_TRAITS = ("task", "full_batch_only", "standardize_by_default")
ARXIV = re.compile(r"^(?:arxiv:\s*)?(\d{4}\.\d{4,5})(?:v\d+)?$", re.I)


def _traits(entry: dict[str, Any]) -> dict[str, Any]:
    """What an entry declares beyond its parameters: its ``capabilities`` and the older top-level traits."""
    capabilities = entry.get("capabilities")
    traits = {name: entry[name] for name in TOP_LEVEL_TRAITS if name in entry}
    return traits | (capabilities if isinstance(capabilities, dict) else {})


def _filter_tokens(traits: dict[str, Any]) -> list[str]:
    """The capability filter's values an entry matches: a true flag by its name, a text by name=value."""
    tokens = []
    for name, value in traits.items():
        if value is True:
            tokens.append(name)
        elif isinstance(value, (list, tuple)):
            tokens += [f"{name}={item}" for item in value]
        elif value and not isinstance(value, (dict, bool)):
            tokens.append(f"{name}={value}")
    return tokens


def _reference(value: Any) -> dict[str, str] | None:
    """A reference as a link where it is one (a URL, an arXiv id), else as text."""
    if not value:
        return None
    if isinstance(value, dict):
        url, text = value.get("url"), value.get("title") or value.get("text") or value.get("url")
        return {"text": str(text), "url": str(url)} if url else {"text": str(text)}
    text = str(value).strip()
    if text.startswith(("https://", "http://")):
        return {"text": text, "url": text}
    arxiv = ARXIV.match(text)
    return {"text": text, "url": f"https://arxiv.org/abs/{arxiv.group(1)}"} if arxiv else {"text": text}


def _catalog_entry(kind: str, entry: dict[str, Any]) -> dict[str, Any]:
    traits = _traits(entry)
    return {
        **entry,
        "kind": kind,
        "params": [_param_row(prop) for prop in entry.get("params", [])],
        "traits": traits,
        "tokens": _filter_tokens(traits),
        "reference": _reference(entry.get("reference")),
        "supported": entry.get("supported", True) is not False,
        "search": f"{entry['name']} {entry.get('description') or ''}".lower(),
    }


@router.get("/catalog", response_class=HTMLResponse)
def catalog_page(request: Request, principal: PageDep) -> HTMLResponse:
    """Every registered component and schedule with its parameters: what a spec may name. The page's
    script filters the rows in place (search, kind, family, source, capability)."""
    sections = {kind: [_catalog_entry(kind, entry) for entry in entries] for kind, entries in catalog().items()}
    entries = [entry for listed in sections.values() for entry in listed]
    choices = {
        "family": sorted({str(e["family"]) for e in entries if e.get("family")}),
        "source": sorted({str(e["source"]) for e in entries if e.get("source")}),
        "capability": sorted({token for e in entries for token in e["tokens"]}),
    }
    return _page(request, "catalog.html", principal=principal, sections=sections, choices=choices, total=len(entries))
