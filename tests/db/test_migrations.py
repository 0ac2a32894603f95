"""Alembic owns the schema: the migrations must build exactly what the models declare, and go down again."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from db.migrate import alembic_config, upgrade
from db.models import LOCAL_TEAM_ID, Base


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
        connection.execute(text("INSERT INTO comparisons (id, name, status, spec, tags, created_at) "
                                "VALUES ('c1', 'old', 'succeeded', '{}', '[]', CURRENT_TIMESTAMP)"))
    upgrade(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT team_id FROM comparisons")).scalar_one() == LOCAL_TEAM_ID
    command.downgrade(alembic_config(url), "0001")
    upgrade(url)
    engine.dispose()
