"""when an outbox item was re-queued by an operator

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 14:00:00

An item is given up on after its attempts and no sooner than the time they take at the back-off
(``outbox.FULL_SERIES``, about 16 hours) since it was queued. An operator's retry resets its
attempts, but the time still counted from its creation: an item retried more than 16 hours after it
was first queued was given up again after 25 attempts, which a tracker's short ``Retry-After`` uses
up in minutes. ``outbox.requeued_at`` records the retry, and the new series counts from it;
``created_at`` stays the time the item was first queued.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('outbox', sa.Column('requeued_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    # native on PostgreSQL and on SQLite 3.35 and later (the column has no index or constraint), so
    # the outbox table, which 0007 made AUTOINCREMENT on SQLite, is not copied
    op.execute("ALTER TABLE outbox DROP COLUMN requeued_at")
