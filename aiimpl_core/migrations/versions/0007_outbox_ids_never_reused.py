"""an outbox item's id is never given twice

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 08:00:00

An item's id keys the identity of the comment it posts (``outbox.comment_ref``). On SQLite an
``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT`` takes the highest id in the table plus one: once
housekeeping removed the newest items (an install quiet for longer than ``AIIMPL_RETENTION_DAYS``),
the next item took the id of an earlier one, and with it the identity of a comment posted already:
the tracker took the new comment for that one (same issue) or refused it (another issue).
``AUTOINCREMENT`` never gives an id twice. PostgreSQL's sequence never did: nothing changes there.

SQLite cannot add ``AUTOINCREMENT`` to a table: the table is copied. Its ids go on past the highest
id it holds and past ``legacy_through`` of the ``install`` setting (see ``0006``), the highest id of
the items written before it, which a pruned table may no longer show.
"""
import json

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    given = [bind.execute(sa.text('SELECT coalesce(max(id), 0) FROM outbox')).scalar()]
    # (an upgrade again after `aiimpl db downgrade 0006`: the table counts already)
    if bind.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first():
        given.append(bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")).scalar())
    value = bind.execute(sa.text("SELECT value FROM settings WHERE key = 'install'")).scalar()
    value = json.loads(value) if isinstance(value, str) else value
    if isinstance(value, dict):
        given.append(value.get('legacy_through'))
    floor = max(n for n in given if isinstance(n, int) and not isinstance(n, bool))
    with op.batch_alter_table('outbox', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
        pass
    # (the copy's INSERT made the table's row in sqlite_sequence unless the table was empty)
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'outbox'"))
    bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', :seq)"), {'seq': floor})


def downgrade():
    # the older versions' code works on the table as it is: ids that are never given twice keep the
    # identities of their comments apart under that code too
    pass
