"""step rollups, steps without foreign key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


_SQLITE_FK_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _steps_fk_name() -> str:
    return "steps_run_id_fkey" if op.get_bind().dialect.name == "postgresql" else "fk_steps_run_id_runs"


def upgrade() -> None:
    op.create_table('step_rollups',
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('block', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('nan_count', sa.Integer(), nullable=False),
    sa.Column('pos_inf_count', sa.Integer(), nullable=False),
    sa.Column('neg_inf_count', sa.Integer(), nullable=False),
    sa.Column('finite_sum', sa.Double(), nullable=False),
    sa.Column('min', sa.Double(), nullable=True),
    sa.Column('max', sa.Double(), nullable=True),
    sa.Column('first', sa.Double(), nullable=False),
    sa.Column('last', sa.Double(), nullable=False),
    sa.Column('first_step', sa.Integer(), nullable=False),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.Column('first_time_s', sa.Double(), nullable=False),
    sa.Column('last_time_s', sa.Double(), nullable=False),
    sa.Column('first_epoch', sa.Integer(), nullable=True),
    sa.Column('last_epoch', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'level', 'block')
    )
    # the foreign key of 0001 was unnamed: PostgreSQL called it steps_run_id_fkey, SQLite names none
    with op.batch_alter_table('steps', schema=None, naming_convention=_SQLITE_FK_NAMES) as batch_op:
        batch_op.drop_constraint(_steps_fk_name(), type_='foreignkey')



def downgrade() -> None:
    op.execute(sa.text("DELETE FROM steps WHERE run_id NOT IN (SELECT id FROM runs)"))
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.create_foreign_key(_steps_fk_name(), 'runs', ['run_id'], ['id'], ondelete='CASCADE')

    op.drop_table('step_rollups')
