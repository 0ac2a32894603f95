"""runs indexed by (comparison_id, status): a comparison's status follows from index probes

refresh_comparison runs at every claim and finish; it read every run of the comparison, O(N²) over
an N-run sweep. It now asks, per status, whether any run has it: one probe of this index each. The
index replaces ix_runs_comparison_id, whose lookups it serves as well.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_runs_comparison_status', 'runs', ['comparison_id', 'status'])
    op.drop_index('ix_runs_comparison_id', table_name='runs')


def downgrade() -> None:
    op.create_index('ix_runs_comparison_id', 'runs', ['comparison_id'])
    op.drop_index('ix_runs_comparison_status', table_name='runs')
