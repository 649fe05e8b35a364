"""A generated consent world: business customers with opt-ins, and a stand-in holding
Klaviyo-side opt-outs (newer and older than the business opt-in) and our own
suppressions. Used by the consent integration and acceptance tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from klaviyo_sync.business.sample_data import create_schema, tables
from klaviyo_sync.config import BusinessSettings
from tests.klaviyo_standin import KlaviyoStandIn

#: Added to the default customers table when a world has SMS.
PHONE, SMS_OPT_IN = "phone", "sms_opt_in"


@dataclass
class World:
    """Who is what, by customer id (emails are customer<id>@example.com)."""

    now: datetime
    opted_in: dict[str, datetime] = field(default_factory=dict)  # id -> opt-in time
    fresh: set[str] = field(default_factory=set)
    historical: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)  # newer Klaviyo opt-out
    older_optouts: set[str] = field(default_factory=set)  # opted out before opting in
    not_opted_in_optouts: set[str] = field(default_factory=set)
    ours: set[str] = field(default_factory=set)  # dead: suppressed by our rule
    bad_phones: dict[str, str] = field(default_factory=dict)
    good_phones: dict[str, str] = field(default_factory=dict)

    def to_subscribe(self) -> set[str]:
        return set(self.opted_in) - self.conflicts

    def klaviyo_optouts(self) -> set[str]:
        """Emails with an opt-out made in Klaviyo (not ours)."""
        return {email(i) for i in self.conflicts | self.older_optouts
                | self.not_opted_in_optouts}


def email(customer_id: str) -> str:
    return f"customer{customer_id}@example.com"


def _phone(i: int) -> tuple[str, bool]:
    """Every 9th customer has a phone; every 4th of those is malformed."""
    if i % 36 == 9:
        return ("07700 900" + f"{i % 1000:03d}", False)
    return (f"+4477009{i:05d}", True)


def build_world(path: Path, standin: KlaviyoStandIn, customers: int, now: datetime,
                sms: bool = False) -> tuple[str, World]:
    """Write the business database (SQLite file) and the stand-in's opt-outs."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    settings = BusinessSettings(url=url)
    create_schema(engine, settings)
    table = tables(settings)[0]
    if sms:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE customers ADD COLUMN {PHONE} VARCHAR(32)"))
            conn.execute(sa.text(f"ALTER TABLE customers ADD COLUMN {SMS_OPT_IN} BOOLEAN"))
    world = World(now)
    rows = []
    for i in range(1, customers + 1):
        cid = str(i)
        opted = i % 10 != 0
        dead = i % 10 == 0 and i % 20 == 0
        fresh = opted and i % 10 == 1
        opt_in_at = (now - timedelta(minutes=5 + i % 50) if fresh
                     else now - timedelta(days=30 + i % 300, seconds=i)) if opted else None
        row = {"id": i, "email": email(cid), "first_name": "Ada", "last_name": "Berg",
               "status": "Dead" if dead else "Active", "schedule": "weekly",
               "box": "Classic", "signup_date": None, "email_opt_in": opted,
               "email_opt_in_at": opt_in_at,
               "updated_at": (opt_in_at or now - timedelta(days=400)) + timedelta(seconds=1)}
        rows.append(row)
        if opted and opt_in_at is not None:
            world.opted_in[cid] = opt_in_at
            (world.fresh if fresh else world.historical).add(cid)
            if i % 7 == 0:
                world.conflicts.add(cid)
                at = opt_in_at + (now - opt_in_at) / 2
                standin.account.opt_out(email(cid), "UNSUBSCRIBE" if i % 2 else
                                        "SPAM_COMPLAINT", at.replace(tzinfo=UTC))
            elif i % 11 == 0 and not fresh:
                world.older_optouts.add(cid)
                standin.account.opt_out(email(cid), "UNSUBSCRIBE",
                                        (opt_in_at - timedelta(days=3)).replace(tzinfo=UTC))
        elif dead:
            world.ours.add(cid)
        elif i % 3 == 0:
            world.not_opted_in_optouts.add(cid)
            standin.account.opt_out(email(cid), "UNSUBSCRIBE",
                                    (now - timedelta(days=i % 40 + 1)).replace(tzinfo=UTC))
        if sms:
            phone, good = _phone(i) if i % 9 == 0 else (None, True)
            row[PHONE], row[SMS_OPT_IN] = phone, phone is not None
            # A conflict's SMS is not sent either; its bad number is still listed.
            if phone is not None and opted and not good:
                world.bad_phones[cid] = phone
            elif phone is not None and opted and cid not in world.conflicts:
                world.good_phones[cid] = phone
    with engine.begin() as conn:
        if sms:
            cols = ", ".join(rows[0])
            marks = ", ".join(f":{k}" for k in rows[0])
            conn.execute(sa.text(f"INSERT INTO customers ({cols}) VALUES ({marks})"), rows)
        else:
            conn.execute(table.insert(), rows)
    engine.dispose()
    return url, world
