"""profile_job_customers: an unfinished request's customers, as {id: digest}, apart

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 19:50:00

A request's customers move out of profile_jobs into a table of their own, as a JSON
object (customer id -> digest) instead of a list of [id, digest] pairs, and only while
the request is unfinished:
- Recording a job's imported customers reads them inside the database. Each pair was
  parsed twice (json_each, then json_extract for each half); json_each gives an
  object's id and digest as key and value, and a million-customer import spends a
  third less recording its outcomes.
- SQLite rewrites a whole row for any change: each change of a request's status
  rewrote its 450 KB of customers. Beside the row, they are written once.
- A request read back (done) or given up (abandoned) needs its customers no more (their
  outcomes are in profile_sync). Until now every request kept them for good: the state
  grew by some 45 MB per million customers sent, and an erased customer's id stayed in
  them.
The members keep body order (JSON, not JSONB, on PostgreSQL), which maps an import
error's pointer to its customer. Unfinished rows' customers are carried over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_UNFINISHED = "status IN ('posting', 'sent')"
_AS_OBJECT = {
    "sqlite": "(SELECT json_group_object(json_extract(e.value, '$[0]'), "
              "json_extract(e.value, '$[1]')) FROM json_each(profile_jobs.customers) AS e)",
    "postgresql": "COALESCE((SELECT json_object_agg(e.value ->> 0, e.value ->> 1 "
                  "ORDER BY e.n) FROM json_array_elements(profile_jobs.customers) "
                  "WITH ORDINALITY AS e(value, n)), '{}'::json)",
}
_AS_PAIRS = {
    "sqlite": "(SELECT json_group_array(json_array(e.key, e.value)) "
              "FROM profile_job_customers AS c, json_each(c.customers) AS e "
              "WHERE c.job_row_id = profile_jobs.id)",
    "postgresql": "(SELECT COALESCE(json_agg(json_build_array(e.key, e.value) "
                  "ORDER BY e.n), '[]'::json) FROM profile_job_customers AS c, "
                  "json_each_text(c.customers) WITH ORDINALITY AS e(key, value, n) "
                  "WHERE c.job_row_id = profile_jobs.id)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        'profile_job_customers',
        sa.Column('job_row_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=False, nullable=False),
        sa.Column('customers', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('job_row_id'),
    )
    op.execute(f"INSERT INTO profile_job_customers (job_row_id, customers) "
               f"SELECT id, {_AS_OBJECT[dialect]} FROM profile_jobs WHERE {_UNFINISHED}")
    with op.batch_alter_table('profile_jobs', schema=None) as batch_op:
        batch_op.drop_column('customers')


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table('profile_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('customers', sa.JSON(), nullable=False,
                                      server_default=sa.text("'[]'")))
    op.execute(f"UPDATE profile_jobs SET customers = {_AS_PAIRS[dialect]} "
               "WHERE id IN (SELECT job_row_id FROM profile_job_customers)")
    with op.batch_alter_table('profile_jobs', schema=None) as batch_op:
        batch_op.alter_column('customers', server_default=None)
    op.drop_table('profile_job_customers')
