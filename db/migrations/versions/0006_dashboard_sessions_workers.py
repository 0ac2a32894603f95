"""dashboard sessions revocable server-side; the live workers and their queues

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dashboard_sessions',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_dashboard_sessions_key_id', 'dashboard_sessions', ['key_id'])
    op.create_table(
        'workers',
        sa.Column('hostname', sa.String(length=200), nullable=False),
        sa.Column('queues', sa.JSON(), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('hostname'),
    )
    op.create_index('ix_workers_last_seen', 'workers', ['last_seen'])

def downgrade() -> None:
    op.drop_index('ix_workers_last_seen', table_name='workers')
    op.drop_table('workers')
    op.drop_index('ix_dashboard_sessions_key_id', table_name='dashboard_sessions')
    op.drop_table('dashboard_sessions')
