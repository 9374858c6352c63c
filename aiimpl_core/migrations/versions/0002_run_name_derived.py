"""a job's run name is derived from the job, not stored

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 04:40:00

``Job.run_name`` is ``AI-Implement {issue_key} {phase} job-{id}``, which every job was created
with: deriving it makes a new job one ``INSERT`` instead of an ``INSERT`` and an ``UPDATE``.
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    # native on PostgreSQL and on SQLite 3.35 and later (the column has no index or constraint),
    # so the jobs table with its partial unique index is not copied
    op.execute("ALTER TABLE jobs DROP COLUMN run_name")


def downgrade():
    op.add_column('jobs', sa.Column('run_name', sa.String(length=255), nullable=True))
    op.execute("UPDATE jobs SET run_name = 'AI-Implement ' || issue_key || ' ' || phase || ' job-' || id")
