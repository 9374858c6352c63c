"""the database's own id, which keys the identity of the comments it posts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 05:00:00

A comment's identity (the id Linear takes for a new comment, the property Jira stores with it) was
keyed by ``AIIMPL_SECRET_KEY`` and the outbox item's id alone, so two databases sharing the key (an
install moved to a new PostgreSQL database, which numbers its items from 1 again) gave their
comments the same identities: the new database's comment was taken as posted already, or refused
as another issue's. The ``install`` setting holds a random id of this database, which keys the
identities of the items written after this revision. Items written before it (``legacy_through``:
the highest outbox id then) keep the identity they had, as a retry of one whose answer was lost must
find the comment its first try posted.
"""
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

KEY = 'install'


def upgrade():
    bind = op.get_bind()
    settings = sa.table('settings', sa.column('key', sa.String), sa.column('value', sa.JSON),
                        sa.column('updated_at', sa.DateTime(timezone=True)))
    if bind.execute(sa.select(settings.c.key).where(settings.c.key == KEY)).first() is not None:
        return  # made already by a process of this version before the upgrade ran (see outbox.install)
    last = bind.execute(sa.text('SELECT max(id) FROM outbox')).scalar() or 0
    value = {'id': uuid.uuid4().hex, 'legacy_through': int(last)}
    bind.execute(settings.insert().values(key=KEY, value=value, updated_at=datetime.now(UTC)))


def downgrade():
    # The id stays (the code before this revision never reads it): upgrading again keeps it, and
    # with it the identities of the comments written since. Made anew, a retry of one of them
    # would post it a second time.
    pass
