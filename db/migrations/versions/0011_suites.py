"""comparisons.suite, suite_budget, suite_workload: a comparison made by a suite submission

``suite`` is the suite's id (lite-v1), ``suite_budget`` 'full' or 'reduced' (a reduced run is never scored
with full ones), ``suite_workload`` the workload's name. The suite's reads select on all three, so they
are indexed together with the team.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("suite", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("suite_budget", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("suite_workload", sa.String(length=64), nullable=True))
        batch.create_index("ix_comparisons_team_suite", ["team_id", "suite", "suite_budget", "suite_workload"])


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_index("ix_comparisons_team_suite")
        batch.drop_column("suite_workload")
        batch.drop_column("suite_budget")
        batch.drop_column("suite")
