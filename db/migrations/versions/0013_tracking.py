"""free-form tracking: tracked_runs and tracked_metrics

Runs of any model and loop that a client trains and reports (docs/tracking.md): a config and any scalar
metrics per step, stored long (one row per logged value), grouped by config and never paired.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracked_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("team_id", sa.String(32), sa.ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hardware", sa.JSON(), nullable=True),
        sa.Column("client", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_tracked_runs_team_project", "tracked_runs", ["team_id", "project"])
    op.create_index("ix_tracked_runs_status", "tracked_runs", ["status"])
    op.create_table(
        "tracked_metrics",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("tracked_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.Double(), nullable=False),  # FaithfulFloat: NaN as text on SQLite,
    )


def downgrade() -> None:
    op.drop_table("tracked_metrics")
    op.drop_index("ix_tracked_runs_status", "tracked_runs")
    op.drop_index("ix_tracked_runs_team_project", "tracked_runs")
    op.drop_table("tracked_runs")
