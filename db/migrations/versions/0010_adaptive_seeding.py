"""comparisons.adaptive and adaptive_due_at: adaptive seeding's rounds and decisions

``adaptive`` holds the state of a comparison whose seeds are {"adaptive": ...}: its round, whether it is
done, and each pair's decision with its evidence (db.adaptive). ``adaptive_due_at`` is set when a round's
last run ends and cleared once the round is evaluated; the sweeper sends the round task again for a
comparison left due (a lost message), so it is indexed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("adaptive", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("adaptive_due_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_comparisons_adaptive_due_at", ["adaptive_due_at"])


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_index("ix_comparisons_adaptive_due_at")
        batch.drop_column("adaptive_due_at")
        batch.drop_column("adaptive")
