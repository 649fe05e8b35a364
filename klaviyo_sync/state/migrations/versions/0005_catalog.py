"""catalog sync state: catalog_sync and catalog_jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_sync',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('in_klaviyo', sa.Boolean(), nullable=False),
    sa.Column('created_by_us', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'external_id')
    )
    with op.batch_alter_table('catalog_sync', schema=None) as batch_op:
        batch_op.create_index('ix_catalog_sync_state', ['state'], unique=False)

    op.create_table('catalog_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('klaviyo_job_id', sa.String(length=64), nullable=True),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('posted_at', sa.DateTime(), nullable=True),
    sa.Column('read_back_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('catalog_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_catalog_jobs_status', ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('catalog_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_catalog_jobs_status')
    op.drop_table('catalog_jobs')
    with op.batch_alter_table('catalog_sync', schema=None) as batch_op:
        batch_op.drop_index('ix_catalog_sync_state')
    op.drop_table('catalog_sync')
