"""consent both ways: consent_sync and optouts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'consent_sync',
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=True),
        sa.Column('phone', sa.String(length=32), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('sms_state', sa.String(length=16), nullable=True),
        sa.Column('consented_at', sa.DateTime(), nullable=True),
        sa.Column('historical', sa.Boolean(), nullable=False),
        sa.Column('batch', sa.String(length=32), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('subscribed_at', sa.DateTime(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('customer_id'),
    )
    with op.batch_alter_table('consent_sync', schema=None) as batch_op:
        batch_op.create_index('ix_consent_sync_email', ['email'], unique=False)
        batch_op.create_index('ix_consent_sync_state', ['state'], unique=False)

    op.create_table(
        'optouts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('customer_id', sa.String(length=64), nullable=True),
        sa.Column('reason', sa.String(length=32), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('method', sa.String(length=64), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('written_back_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('recorded_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('optouts', schema=None) as batch_op:
        batch_op.create_index('ix_optouts_recorded', ['recorded_at'], unique=False)
        batch_op.create_index('ux_optouts_email_at', ['email', 'at', 'reason'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('optouts', schema=None) as batch_op:
        batch_op.drop_index('ux_optouts_email_at')
        batch_op.drop_index('ix_optouts_recorded')
    op.drop_table('optouts')
    with op.batch_alter_table('consent_sync', schema=None) as batch_op:
        batch_op.drop_index('ix_consent_sync_state')
        batch_op.drop_index('ix_consent_sync_email')
    op.drop_table('consent_sync')
