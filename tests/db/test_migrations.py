"""Alembic owns the schema: the migrations must build exactly what the models declare, and go down again."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql

from db.migrate import alembic_config, upgrade
from db.models import LOCAL_TEAM_ID, Base
from tests.conftest import empty_postgres_database


def test_migrations_match_the_models(database_url):
    engine = create_engine(database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_the_first_revision_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url, "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO comparisons (id, name, status, spec, tags, created_at) "
                "VALUES ('c1', 'old', 'succeeded', '{}', '[]', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT team_id FROM comparisons")).scalar_one() == LOCAL_TEAM_ID
    command.downgrade(alembic_config(url), "0001")
    upgrade(url)
    engine.dispose()


def _collations(connection) -> dict[tuple[str, str], str | None]:
    rows = connection.execute(
        text(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
    )
    return {(table, column): collation for table, column, collation in rows}


def test_postgresql_columns_have_the_collations_the_models_declare(postgres_url):
    # autogenerate does not compare collations, so the test above cannot see them
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        stored = _collations(connection)
    engine.dispose()
    for table in Base.metadata.tables.values():
        for column in table.columns:
            declared = getattr(column.type.dialect_impl(postgresql.dialect()), "collation", None)
            assert stored[(table.name, column.name)] == declared, (table.name, column.name)


@pytest.fixture
def empty_postgres_url():
    with empty_postgres_database("optibench_migrations") as url:
        yield url


def test_run_keys_turn_bytewise_on_postgresql_and_back_keeping_the_rows(empty_postgres_url):
    url = empty_postgres_url
    upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO steps (run_id, step, loss, time_s, step_time_ms) "
                "VALUES ('b0', 1, 0.5, 1.0, 1.0), ('a1', 2, 0.25, 2.0, 1.0)"
            )
        )
    upgrade(url)
    with engine.connect() as connection:
        collations = _collations(connection)
        assert (collations[("steps", "run_id")], collations[("step_rollups", "run_id")]) == ("C", "C")
        assert connection.execute(text("SELECT run_id, step, loss FROM steps ORDER BY run_id")).all() == [
            ("a1", 2, 0.25),
            ("b0", 1, 0.5),
        ]
    command.downgrade(alembic_config(url), "0004")
    with engine.connect() as connection:
        collations = _collations(connection)
        assert (collations[("steps", "run_id")], collations[("step_rollups", "run_id")]) == (None, None)
        assert connection.execute(text("SELECT count(*) FROM steps")).scalar_one() == 2
    engine.dispose()
