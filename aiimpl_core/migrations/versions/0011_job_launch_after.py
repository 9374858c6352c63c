"""when a rate-limited dispatch is tried again

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:40:00

A backend that rate-limited a dispatch (429, or a refusal with ``Retry-After``) ended the job
``failed`` and the issue at "Planning failed": nothing had been started, and the operator had to
apply the trigger again once the limit had passed. The job now stays ``unknown`` and
``jobs.launch_after`` says when the dispatcher tries it again; the poller that takes the try clears
it in a compare-and-set, so no two launch it.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('launch_after', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    # native on PostgreSQL and on SQLite 3.35 and later (the column has no index or constraint); a
    # job waiting for its try then waits for nothing, and ends run_not_found after the window
    op.execute("ALTER TABLE jobs DROP COLUMN launch_after")
