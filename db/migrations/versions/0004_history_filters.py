"""history filters: problem and optimizer names, winners, status index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _names(spec: dict) -> dict:
    """What the history filters read, from a stored spec (kept here: a migration must not change
    when the application's code does)."""
    problem = spec.get("problem", {})
    return {"model_name": (problem.get("model") or {}).get("name"),
            "dataset_name": (problem.get("dataset") or {}).get("name"),
            "function_name": (problem.get("function") or {}).get("name"),
            "optimizer_names": list(dict.fromkeys(e["name"] for e in spec.get("optimizers", [])))}


def upgrade() -> None:
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('dataset_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('function_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('optimizer_names', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('winners', sa.JSON(), nullable=True))
        batch_op.create_index('ix_comparisons_team_status_created', ['team_id', 'status', 'created_at', 'id'],
                              unique=False)

    # comparisons finished before this revision keep winners NULL: ranking them needs the application
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, spec FROM comparisons")).all()
    update = sa.text("UPDATE comparisons SET model_name = :model_name, dataset_name = :dataset_name, "
                     "function_name = :function_name, optimizer_names = :optimizer_names WHERE id = :id"
                     ).bindparams(sa.bindparam("optimizer_names", type_=sa.JSON()))
    for comparison_id, spec in rows:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        connection.execute(update, {"id": comparison_id, **_names(spec)})


def downgrade() -> None:
    with op.batch_alter_table('comparisons', schema=None) as batch_op:
        batch_op.drop_index('ix_comparisons_team_status_created')
        batch_op.drop_column('winners')
        batch_op.drop_column('optimizer_names')
        batch_op.drop_column('function_name')
        batch_op.drop_column('dataset_name')
        batch_op.drop_column('model_name')
