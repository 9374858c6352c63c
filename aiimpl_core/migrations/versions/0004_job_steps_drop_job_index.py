"""a job's steps are found by the unique (job, step) index alone

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 23:40:00

``job_steps`` had an index on ``job_id`` beside the unique constraint on ``(job_id, step_id)``,
whose index starts with the same column and serves every lookup of a job's steps (and the cascade
from a deleted job) as well. Every step a runner reports wrote both; now only the one.

On PostgreSQL the index is dropped and rebuilt (downgrade) ``CONCURRENTLY``.
"""
import contextlib

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _concurrently():
    """On PostgreSQL without locking out writes (runners report steps during an upgrade):
    ``CONCURRENTLY``, outside the migration's transaction."""
    context = op.get_context()
    if context.dialect.name == "postgresql":
        return context.autocommit_block(), {"postgresql_concurrently": True}
    return contextlib.nullcontext(), {}


def upgrade():
    block, options = _concurrently()
    with block:
        op.drop_index('ix_job_steps_job_id', table_name='job_steps', **options)


def downgrade():
    block, options = _concurrently()
    with block:
        op.create_index('ix_job_steps_job_id', 'job_steps', ['job_id'], unique=False, **options)
