"""NUL characters and lone surrogates stored before the API refused them: replaced by U+FFFD

A tag with a NUL (stored as the JSON escape \\u0000 in a json column) made every jsonb cast of the
column fail on PostgreSQL, so each ?tag= filter of its team answered 500; a lone surrogate in a
comparison's JSON (SQLite keeps the escape) made reading the comparison fail. Both are replaced by
U+FFFD, the character that says one was lost. No schema change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""
import json
import re

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

#: the columns that hold the texts a user sends as JSON
COLUMNS = ('tags', 'spec')
_UNSAFE = re.compile('[\x00\ud800-\udfff]')


def _cleaned(value):
    if isinstance(value, str):
        return _UNSAFE.sub('\ufffd', value)
    if isinstance(value, dict):
        return {_cleaned(key): _cleaned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cleaned(item) for item in value]
    return value


def upgrade() -> None:
    connection = op.get_bind()
    comparisons = sa.table('comparisons', sa.column('id', sa.String), *(sa.column(name, sa.JSON) for name in COLUMNS))
    texts = [sa.cast(comparisons.c[name], sa.Text) for name in COLUMNS]
    # only rows with an escape can hold either character (json.dumps escapes both); with ESCAPE the
    # backslash is no LIKE escape, on either backend
    has_escape = sa.or_(*(text.like(sa.literal('%\\u%'), escape='!') for text in texts))
    rows = connection.execute(sa.select(comparisons.c.id, *texts).where(has_escape)).all()
    for comparison_id, *stored in rows:
        values = {name: json.loads(text) for name, text in zip(COLUMNS, stored)}
        changed = {name: _cleaned(value) for name, value in values.items() if _cleaned(value) != value}
        if changed:
            connection.execute(sa.update(comparisons).where(comparisons.c.id == comparison_id).values(**changed))


def downgrade() -> None:
    pass  # the characters replaced are not kept
