"""profile_jobs.customers: a JSON object, customer id -> digest; none kept once done

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 19:50:00

Recording a job's imported customers reads them out of the request's row inside the
database. As a list of [id, digest] pairs each member was parsed twice (json_each, then
json_extract for each half); as an object json_each gives id and digest as key and
value, and a million-customer import spends a third less recording its outcomes. The
members keep body order (the column is JSON, not JSONB, on PostgreSQL), which maps an
import error's pointer to its customer. Rows written before are rewritten in place.

A request read back (done) or given up (abandoned) no longer needs its customers, whose
outcomes are in profile_sync: those rows are emptied (the code now empties them when
they end). Until now every request kept its ids and digests for good: the state grew by
some 45 MB per million customers sent, and an erased customer's id stayed in them.
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_EMPTY_ENDED = ("UPDATE profile_jobs SET customers = '{}' "
                "WHERE status IN ('done', 'abandoned')")
_UP = {
    "sqlite": "UPDATE profile_jobs SET customers = (SELECT json_group_object("
              "json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]')) "
              "FROM json_each(profile_jobs.customers) AS e) "
              "WHERE json_type(customers) = 'array'",
    "postgresql": "UPDATE profile_jobs SET customers = COALESCE((SELECT json_object_agg("
                  "e.value ->> 0, e.value ->> 1 ORDER BY e.n) FROM json_array_elements("
                  "profile_jobs.customers) WITH ORDINALITY AS e(value, n)), '{}'::json) "
                  "WHERE json_typeof(customers) = 'array'",
}
_DOWN = {
    "sqlite": "UPDATE profile_jobs SET customers = (SELECT json_group_array("
              "json_array(e.key, e.value)) FROM json_each(profile_jobs.customers) AS e) "
              "WHERE json_type(customers) = 'object'",
    "postgresql": "UPDATE profile_jobs SET customers = COALESCE((SELECT json_agg("
                  "json_build_array(e.key, e.value) ORDER BY e.n) FROM json_each_text("
                  "profile_jobs.customers) WITH ORDINALITY AS e(key, value, n)), '[]'::json) "
                  "WHERE json_typeof(customers) = 'object'",
}


def upgrade() -> None:
    op.execute(_EMPTY_ENDED)
    op.execute(_UP[op.get_bind().dialect.name])


def downgrade() -> None:
    op.execute(_DOWN[op.get_bind().dialect.name])
