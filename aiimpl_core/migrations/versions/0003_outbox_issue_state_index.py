"""an outbox item's issue and state in one index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00

Whether anything of an issue waits (``issue_key = … AND state IN ('pending', 'sending')``) is read
for every comment queued. With ``issue_key`` alone indexed, PostgreSQL answered it by intersecting
that index with ``ix_outbox_pending``, whose entries for every item taken and then sent stay until
the table is vacuumed: the check grew with the items sent since. ``(issue_key, state)`` answers it
in one probe and serves every lookup by issue as the old index did, which it replaces.

On PostgreSQL both indexes are built and dropped ``CONCURRENTLY``. Should the run be interrupted,
upgrading again recovers: an index built already is kept (one PostgreSQL left invalid is built
again), one dropped already is not dropped again.
"""
from alembic import op

from aiimpl_core.database import create_index_again, index_changes_concurrently

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    block, options = index_changes_concurrently(op)
    with block:
        create_index_again(op, 'ix_outbox_issue_state', 'outbox', ['issue_key', 'state'], **options)
        op.drop_index('ix_outbox_issue_key', table_name='outbox', if_exists=True, **options)


def downgrade():
    block, options = index_changes_concurrently(op)
    with block:
        create_index_again(op, 'ix_outbox_issue_key', 'outbox', ['issue_key'], **options)
        op.drop_index('ix_outbox_issue_state', table_name='outbox', if_exists=True, **options)
