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
import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

KEY = 'install'


def _settings():
    return sa.table('settings', sa.column('key', sa.String), sa.column('value', sa.JSON),
                    sa.column('updated_at', sa.DateTime(timezone=True)))


def _value(raw):
    return json.loads(raw) if isinstance(raw, str) else raw


def upgrade():
    bind = op.get_bind()
    settings = _settings()
    last = int(bind.execute(sa.text('SELECT max(id) FROM outbox')).scalar() or 0)
    raw = bind.execute(sa.select(settings.c.value).where(settings.c.key == KEY)).scalar()
    value = _value(raw)
    if isinstance(value, dict) and value.get('id'):
        # made already: by a process of this version before the upgrade ran (see outbox.install),
        # or kept by a downgrade, whose version wrote items with the old identity meanwhile
        since = value.pop('downgraded_after', None)
        if isinstance(since, int) and last > since:
            value['legacy_ranges'] = [*value.get('legacy_ranges', []), [since + 1, last]]
        bind.execute(settings.update().where(settings.c.key == KEY)
                     .values(value=value, updated_at=datetime.now(UTC)))
        return
    value = {'id': uuid.uuid4().hex, 'legacy_through': last}
    bind.execute(settings.insert().values(key=KEY, value=value, updated_at=datetime.now(UTC)))


def downgrade():
    # The id stays (the code before this revision never reads it), with the last item written
    # under it: upgrading again keeps the identities of the comments written before the downgrade,
    # and gives the ones the older version writes meanwhile their old identity
    # (``legacy_ranges``). Made anew, a retry of one of either could post it a second time.
    bind = op.get_bind()
    settings = _settings()
    value = _value(bind.execute(sa.select(settings.c.value).where(settings.c.key == KEY)).scalar())
    if not isinstance(value, dict):
        return
    value['downgraded_after'] = int(bind.execute(sa.text('SELECT max(id) FROM outbox')).scalar() or 0)
    bind.execute(settings.update().where(settings.c.key == KEY)
                 .values(value=value, updated_at=datetime.now(UTC)))
