"""the session program wheels the GitHub Actions workflows pin

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 09:00:00

A synced workflow installs the session program as the wheel the orchestrator served at the sync,
pinned to its sha256. A deploy that changed the core's files served another wheel, and every
workflow synced before it failed at its install step until the next sync. ``session_packages``
keeps each wheel a sync pinned (its bytes, once per sha256), served by its hash from then on; the
housekeeping removes one no sync or check has pinned for a long time.
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('session_packages',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_pinned_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_session_packages'))
    )


def downgrade():
    # the workflows synced since pin wheels by their hash; the version gone back to serves its own
    # wheel only, at the URL without one: they fail at their install until its sync rewrites them
    op.drop_table('session_packages')
