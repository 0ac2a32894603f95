"""teams keys history reuse

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('teams',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('max_runs_per_comparison', sa.Integer(), nullable=True),
    sa.Column('max_steps_per_comparison', sa.Integer(), nullable=True),
    sa.Column('max_running_comparisons', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('team_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_team_id'), ['team_id'], unique=False)

    op.create_table('share_links',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('comparison_id', sa.String(length=32), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('share_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_share_links_comparison_id'), ['comparison_id'], unique=False)

    # existing comparisons belong to the embedded deployment's team
    op.execute(sa.text("INSERT INTO teams (id, name, created_at) VALUES ('local', 'local', CURRENT_TIMESTAMP)"))
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('team_id', sa.String(length=32), nullable=False, server_default='local'))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('submitted_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
        batch_op.drop_index(batch_op.f('ix_comparisons_created'))
        batch_op.create_index('ix_comparisons_team_created', ['team_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ux_comparisons_team_idempotency', ['team_id', 'idempotency_key'], unique=True)
        batch_op.create_foreign_key('fk_comparisons_team_id', 'teams', ['team_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('config_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reused_from_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('phase', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('sweep_values', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('hardware', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_config_hash'), ['config_hash'], unique=False)
        batch_op.create_foreign_key('fk_runs_reused_from_id', 'runs', ['reused_from_id'], ['id'], ondelete='SET NULL')



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_reused_from_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_runs_config_hash'))
        batch_op.drop_column('hardware')
        batch_op.drop_column('sweep_values')
        batch_op.drop_column('phase')
        batch_op.drop_column('reused_from_id')
        batch_op.drop_column('config_hash')

    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.drop_constraint('fk_comparisons_team_id', type_='foreignkey')
        batch_op.drop_index('ux_comparisons_team_idempotency')
        batch_op.drop_index('ix_comparisons_team_created')
        batch_op.create_index(batch_op.f('ix_comparisons_created'), ['created_at', 'id'], unique=False)
        batch_op.drop_column('request_hash')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('submitted_by')
        batch_op.drop_column('note')
        batch_op.drop_column('team_id')

    with op.batch_alter_table('share_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_share_links_comparison_id'))

    op.drop_table('share_links')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_team_id'))

    op.drop_table('api_keys')
    op.drop_table('teams')
