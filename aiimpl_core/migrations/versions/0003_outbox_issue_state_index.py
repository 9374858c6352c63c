"""an outbox item's issue and state in one index

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00

Whether anything of an issue waits (``issue_key = … AND state IN ('pending', 'sending')``) is read
for every comment queued. With ``issue_key`` alone indexed, PostgreSQL answered it by intersecting
that index with ``ix_outbox_pending``, whose entries for every item taken and then sent stay until
the table is vacuumed: the check grew with the items sent since. ``(issue_key, state)`` answers it
in one probe and serves every lookup by issue as the old index did, which it replaces.

On PostgreSQL both indexes are built and dropped ``CONCURRENTLY``. Should the build be
interrupted, PostgreSQL keeps an invalid ``ix_outbox_issue_state``: drop it and upgrade again.
"""
from alembic import op

from aiimpl_core.database import index_changes_concurrently

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    block, options = index_changes_concurrently(op)
    with block:
        op.create_index('ix_outbox_issue_state', 'outbox', ['issue_key', 'state'], unique=False, **options)
        op.drop_index('ix_outbox_issue_key', table_name='outbox', **options)


def downgrade():
    block, options = index_changes_concurrently(op)
    with block:
        op.create_index('ix_outbox_issue_key', 'outbox', ['issue_key'], unique=False, **options)
        op.drop_index('ix_outbox_issue_state', table_name='outbox', **options)
