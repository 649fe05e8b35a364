"""profile_sync: index only the failed customers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 14:30:00

The index on status covered a million imported rows to find a few failed ones, and
every row an import job recorded paid for it: a quarter of the cost of recording a job.
A partial index over the failed rows, in the order `profiles failed` lists them, serves
that list; the counts come from count(*) and the failed rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_FAILED = sa.text("status = 'failed'")


def upgrade() -> None:
    with op.batch_alter_table('profile_sync', schema=None) as batch_op:
        batch_op.drop_index('ix_profile_sync_status')
    op.create_index('ix_profile_sync_failed', 'profile_sync', ['updated_at', 'customer_id'],
                    unique=False, sqlite_where=_FAILED, postgresql_where=_FAILED)


def downgrade() -> None:
    op.drop_index('ix_profile_sync_failed', table_name='profile_sync')
    with op.batch_alter_table('profile_sync', schema=None) as batch_op:
        batch_op.create_index('ix_profile_sync_status', ['status'], unique=False)
