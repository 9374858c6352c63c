"""the session lifetime a job was dispatched with

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:30:00

A job in flight was judged by the session lifetime in force at each reconcile cycle
(``AIIMPL_SESSION_LIFETIME_SECONDS``), not the one its session was started with (and told, as
``AIIMPL_LIFETIME_SECONDS``): lowering the setting and restarting stopped the sessions already
running as overruns, and raising it let a stopped machine's job wait past its own lifetime.
``jobs.lifetime_seconds`` records it at dispatch. The jobs dispatched before this revision have
none, and are judged by the setting as before.
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('lifetime_seconds', sa.Integer(), nullable=True))


def downgrade():
    # native on PostgreSQL and on SQLite 3.35 and later (the column has no index or constraint);
    # the jobs in flight are judged by the setting again
    op.execute("ALTER TABLE jobs DROP COLUMN lifetime_seconds")
