"""external runs: runs.external and runs.client

A run trained by a client on its own machine (the SDK) rather than by a worker: ``external`` marks it (the
watchdog fails it at the end of its lease instead of queueing it again; no worker ever claims it), and
``client`` keeps what the client said about itself (package versions, its own optimizer's description).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("client", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("client")
        batch.drop_column("external")
