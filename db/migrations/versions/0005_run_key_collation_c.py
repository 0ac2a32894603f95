"""steps and step_rollups compare run ids bytewise on PostgreSQL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_TABLES = ('steps', 'step_rollups')


def _collate_run_id(collation: str | None) -> None:
    # SQLite compares text bytewise already and has no "C" collation; its tables stay as they are
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in _TABLES:
        # the keys' indexes are rebuilt; the rows are not rewritten
        op.alter_column(table, 'run_id', existing_type=sa.String(length=32), existing_nullable=False,
                        type_=sa.String(length=32, collation=collation))


def upgrade() -> None:
    _collate_run_id('C')


def downgrade() -> None:
    _collate_run_id('default')
