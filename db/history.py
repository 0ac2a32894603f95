"""Reading what was stored: a team's comparisons and runs (another team's and deleted ones look missing),
the history's keyset pages and filters, progress, and a run's step and evaluation rows."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import (
    CTE,
    BindParameter,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    Subquery,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, selectinload

from db.models import TERMINAL, Comparison, Eval, Run, Step, UTCDateTime


def get_comparison(session: Session, comparison_id: str, team_id: str) -> Comparison | None:
    """The team's comparison, or None: another team's and deleted ones look exactly like missing ones."""
    return session.scalar(
        select(Comparison)
        .where(Comparison.id == comparison_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
        .options(selectinload(Comparison.runs))
    )


def get_run(session: Session, run_id: str, team_id: str) -> Run | None:
    """The team's run, or None, as for get_comparison."""
    return session.scalar(
        select(Run)
        .join(Comparison)
        .where(Run.id == run_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
    )


def _encode_cursor(comparison: Comparison) -> str:
    raw = json.dumps([comparison.created_at.isoformat(), comparison.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor we issued."""
    try:
        created_at, comparison_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(comparison_id)
    except Exception as exc:
        raise ValueError("malformed cursor") from exc


@dataclass(frozen=True)
class HistoryFilter:
    """What the history shows: every condition given must hold. ``q`` is a case-insensitive
    substring of the name; ``optimizer`` a registered optimizer name of any entry."""

    status: str | None = None
    optimizer: str | None = None
    model: str | None = None
    dataset: str | None = None
    function: str | None = None
    tag: str | None = None
    q: str | None = None

    def params(self) -> dict[str, str]:
        """The filters given, by name: the values of their conditions' bound parameters."""
        given = {name: value for name, value in asdict(self).items() if value is not None}
        if given.get("q") == "":
            del given["q"]
        if "q" in given:  # LIKE's wildcards are searched as themselves
            given["q"] = given["q"].replace("/", "//").replace("%", "/%").replace("_", "/_")
        return given


#: the history's filters on plain columns, by name
_EQUAL = {
    "status": Comparison.status,
    "model": Comparison.model_name,
    "dataset": Comparison.dataset_name,
    "function": Comparison.function_name,
}


#: and on JSON lists of names
_LISTED = {"optimizer": Comparison.optimizer_names, "tag": Comparison.tags}


def _filter_conditions(dialect: str, given: tuple[str, ...]) -> list:
    """The conditions of these filters, on bound parameters named after them (HistoryFilter.params)."""
    found = [_EQUAL[name] == bindparam(name, type_=String) for name in given if name in _EQUAL]
    found += [
        _json_list_contains(_LISTED[name], bindparam(name, type_=String), dialect) for name in given if name in _LISTED
    ]
    if "q" in given:
        found.append(Comparison.name.icontains(bindparam("q", type_=String), escape="/"))
    return found


def _json_list_contains(column, value, dialect: str):
    """Whether the JSON list of strings in ``column`` holds ``value``, exactly."""
    if dialect == "postgresql":
        return cast(column, postgresql.JSONB).contains(func.jsonb_build_array(value))
    element = func.json_each(column).table_valued("value")
    return exists(select(1).select_from(element).where(element.c.value == value))


#: what a history page of the API shows of each comparison
SUMMARY_COLUMNS = ("id", "name", "status", "created_at", "finished_at", "tags", "note", "submitted_by")


@lru_cache(maxsize=1024)  # at most 2 shapes x 2 dialects x 2^7 filter sets x 2
def _history_statement(summaries: bool, dialect: str, filters: tuple[str, ...], paged: bool) -> Select:
    """The history query of one shape, built once: building and hashing a statement costs more than
    running it. Comparisons (or, with ``summaries``, the SUMMARY_COLUMNS and the runs' progress) of
    team ``team_id``, newest first, at most ``limit`` of them, keyset-paginated on (created_at, id)
    after (``after_created_at``, ``after_id``) when ``paged``, so deep pages stay as fast as the first:
    it walks the (team_id[, status], created_at, id) index in order and stops after ``limit``
    matches, whatever the filters."""
    columns = [getattr(Comparison, name) for name in SUMMARY_COLUMNS] if summaries else [Comparison]
    query = (
        select(*columns)
        .where(
            Comparison.team_id == bindparam("team_id"),
            Comparison.deleted_at.is_(None),
            *_filter_conditions(dialect, filters),
        )
        .order_by(Comparison.created_at.desc(), Comparison.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )
    if paged:
        created_at = bindparam("after_created_at", type_=UTCDateTime())
        comparison_id: BindParameter[str] = bindparam("after_id")
        query = query.where(
            or_(
                Comparison.created_at < created_at,
                and_(Comparison.created_at == created_at, Comparison.id < comparison_id),
            )
        )
    if not summaries:
        return query
    # the page first, then its runs' progress: grouping the join would aggregate the whole history
    aggregates = (
        func.count().label("runs"),
        func.sum(case((Run.status.in_(TERMINAL), 1), else_=0)).label("done"),
        func.sum(Run.steps_total).label("steps"),
        func.sum(Run.steps_done).label("steps_done"),
    )
    page: Subquery | CTE
    progress: FromClause
    joined: ColumnElement[bool]
    if dialect == "postgresql":
        # each comparison's runs through the comparison_id index: a third of the planning and running
        # time of grouping them all
        page = query.subquery("page")
        progress = select(*aggregates).where(Run.comparison_id == page.c.id).lateral("progress")
        joined = true()
    else:  # SQLite has no LATERAL
        page = query.cte("page")
        progress = (
            select(Run.comparison_id, *aggregates)
            .where(Run.comparison_id.in_(select(page.c.id)))
            .group_by(Run.comparison_id)
            .subquery("progress")
        )
        joined = progress.c.comparison_id == page.c.id
    return (
        select(*page.c, *(func.coalesce(progress.c[column.name], 0) for column in aggregates))
        .outerjoin(progress, joined)
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )


def _history(
    session: Session, summaries: bool, team_id: str, limit: int, cursor: str | None, where: HistoryFilter
) -> tuple[list, str | None]:
    filters = where.params()
    params = {"team_id": team_id, "limit": limit + 1, **filters}
    if cursor:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor)
    statement = _history_statement(summaries, session.get_bind().dialect.name, tuple(filters), bool(cursor))
    # the summaries' plain columns need none of the ORM's handling of a statement
    rows = (session.connection().execute if summaries else session.scalars)(statement, params).all()
    page = list(rows[:limit])
    return page, (_encode_cursor(page[-1]) if len(rows) > limit else None)


def list_comparisons(
    session: Session, team_id: str, limit: int, cursor: str | None = None, where: HistoryFilter = HistoryFilter()
) -> tuple[list[Comparison], str | None]:
    """The team's history, newest first, and the cursor of the next page (None on the last)."""
    return _history(session, False, team_id, limit, cursor, where)


def history_page(
    session: Session, team_id: str, limit: int, cursor: str | None = None, where: HistoryFilter = HistoryFilter()
) -> tuple[list[tuple], str | None]:
    """list_comparisons' page as plain rows, in one query: the SUMMARY_COLUMNS, then the runs'
    progress (runs_total, runs_done, steps_total, steps_done). No ORM objects, and no column the page
    does not show (the spec is most of a row)."""
    return _history(session, True, team_id, limit, cursor, where)


@dataclass(frozen=True)
class Progress:
    runs_total: int = 0
    runs_done: int = 0
    steps_total: int = 0
    steps_done: int = 0


def progress_of(session: Session, comparison_ids: Sequence[str]) -> dict[str, Progress]:
    """Progress of many comparisons in one aggregate query."""
    if not comparison_ids:
        return {}
    done = func.sum(case((Run.status.in_(TERMINAL), 1), else_=0))
    rows = session.execute(
        select(Run.comparison_id, func.count(), done, func.sum(Run.steps_total), func.sum(Run.steps_done))
        .where(Run.comparison_id.in_(comparison_ids))
        .group_by(Run.comparison_id)
    )
    return {cid: Progress(n, int(d or 0), int(st or 0), int(sd or 0)) for cid, n, d, st, sd in rows}


def iter_evals(session: Session, run_id: str) -> list[Eval]:
    return list(session.scalars(select(Eval).where(Eval.run_id == run_id).order_by(Eval.step)))


def iter_steps(session: Session, run_id: str, chunk: int = 10_000) -> Iterator[Step]:
    query = select(Step).where(Step.run_id == run_id).order_by(Step.step).execution_options(yield_per=chunk)
    yield from session.scalars(query)
