from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from optibench.settings import get_settings

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def make_engine(url: str) -> Engine:
    engine = _make_engine(url)
    _ENGINES.add(engine)
    return engine


def forget_inherited_connections() -> None:
    """In a process just forked (a Celery pool process): give every engine a fresh, empty pool. The
    parent's pooled connections are its sockets; used here as well, two processes would speak on one
    PostgreSQL connection (DuplicatePreparedStatement, EMPTY_QUERY, "server closed the connection").
    ``close=False`` leaves them open for the parent (SQLAlchemy's documented pattern for forks)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # WAL lets the API read while a worker writes; the busy timeout queues writers
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # orjson parses the JSON columns several times faster than json; PostgreSQL has validated them as JSON
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, json_deserializer=orjson.loads)


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    if url is None:
        settings.ensure_data_dir()
    return make_engine(url or settings.database_url)


@lru_cache
def _factory(url: str | None, autocommit: bool) -> sessionmaker[Session]:
    engine = get_engine(url)
    return sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine, expire_on_commit=False
    )


def new_session(url: str | None = None, *, autocommit: bool = False) -> Session:
    """``autocommit``: each statement commits on its own, with no BEGIN and ROLLBACK around a request's
    reads (two round trips saved). It suits requests that only read, whose statements each see their
    own snapshot under READ COMMITTED anyway, or write a single statement."""
    return _factory(url, autocommit)()


def driver_connection(session: Session) -> Any:
    """The DBAPI driver's own connection (psycopg's or sqlite3's) under the session's."""
    driver = session.connection().connection.driver_connection
    assert driver is not None, "a checked-out connection has its driver's"
    return driver


def rows_matched(session: Session, statement: Executable) -> int:
    """The rows an UPDATE or DELETE matched: ``Session.execute`` returns a ``CursorResult`` for those,
    though its annotation says ``Result``, which has no rowcount."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


@contextmanager
def transaction(url: str | None = None) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    with new_session(url) as session, session.begin():
        yield session
