"""admin sessions ended by their sign-out

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 16:00:00

Signing out ended an admin session only in the browser that signed out: its token, copied
elsewhere, stayed good until it expired. ``ended_admin_sessions`` keeps the session id of each
token signed out before its time, until that time, and every worker and host refuses it.

Tokens issued before this revision carry no session id and cannot be ended one by one: they are
refused from now on, and every admin signs in again once.
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('ended_admin_sessions',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('session_id', name=op.f('pk_ended_admin_sessions'))
    )


def downgrade():
    op.drop_table('ended_admin_sessions')
