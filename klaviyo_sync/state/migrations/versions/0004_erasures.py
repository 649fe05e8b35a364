"""erasures: requests to forget a person, and their tombstones

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('asked_by', sa.String(length=16), nullable=False),
    sa.Column('email_hash', sa.String(length=64), nullable=True),
    sa.Column('customer_hash', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('removed', sa.JSON(), nullable=True),
    sa.Column('klaviyo_status', sa.Integer(), nullable=True),
    sa.Column('klaviyo_detail', sa.Text(), nullable=True),
    sa.Column('klaviyo_at', sa.DateTime(), nullable=True),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('lifted_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('customer_hash'),
    sa.UniqueConstraint('email_hash')
    )


def downgrade() -> None:
    op.drop_table('erasures')
