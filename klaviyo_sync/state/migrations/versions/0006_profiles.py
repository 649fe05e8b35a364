"""profile sync: profile_sync and profile_jobs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('profile_sync',
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('digest', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('failed_digest', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('imported_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('customer_id')
    )
    with op.batch_alter_table('profile_sync', schema=None) as batch_op:
        batch_op.create_index('ix_profile_sync_status', ['status'], unique=False)

    op.create_table('profile_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('customers', sa.JSON(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('read_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    with op.batch_alter_table('profile_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_profile_jobs_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('profile_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_profile_jobs_status')
    op.drop_table('profile_jobs')
    with op.batch_alter_table('profile_sync', schema=None) as batch_op:
        batch_op.drop_index('ix_profile_sync_status')
    op.drop_table('profile_sync')
