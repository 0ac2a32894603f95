"""runs.execution: how a run trained, alone or as a member of a vectorized ensemble

The two modes agree to about 1e-7, not bitwise, so reuse compares the mode beside the config hash.
Runs trained before have NULL (unknown): no new run is ever reused from them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('execution', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('execution')
