"""a job's steps are found by the unique (job, step) index alone

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 23:40:00

``job_steps`` had an index on ``job_id`` beside the unique constraint on ``(job_id, step_id)``,
whose index starts with the same column and serves every lookup of a job's steps (and the cascade
from a deleted job) as well. Every step a runner reports wrote both; now only the one.

On PostgreSQL the index is dropped and rebuilt (downgrade) ``CONCURRENTLY``.
"""
from alembic import op

from aiimpl_core.database import create_index_again, index_changes_concurrently

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    block, options = index_changes_concurrently(op)
    with block:
        op.drop_index('ix_job_steps_job_id', table_name='job_steps', if_exists=True, **options)


def downgrade():
    block, options = index_changes_concurrently(op)
    with block:
        create_index_again(op, 'ix_job_steps_job_id', 'job_steps', ['job_id'], **options)
