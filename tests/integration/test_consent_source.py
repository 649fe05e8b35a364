"""The consent reader and the consent pass on every business database backend:
keyset pages on (updated_at, id), late commits inside the overlap, the opt-in-time
column and its fallback when the table has none."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from klaviyo_sync.business.consent_records import KlaviyoConsent, Subscribe
from klaviyo_sync.business.consent_source import ConsentReader
from klaviyo_sync.business.consent_sync import ConsentSync
from klaviyo_sync.business.db import open_business
from klaviyo_sync.business.optouts import OptoutRecorder
from klaviyo_sync.business.sample_data import create_schema, tables
from klaviyo_sync.config import BusinessSettings, ConsentSettings, Settings
from klaviyo_sync.state.db import open_state

T0 = datetime(2026, 4, 1, 9, 0, 0)
NOW = datetime(2026, 4, 2, 9, 0, 0)


class RecordingApi:
    """A ConsentApi that keeps the jobs it is given and knows no Klaviyo consent."""

    reads = False

    def __init__(self) -> None:
        self.jobs: list[tuple[bool, list[Subscribe]]] = []

    def subscribe(self, profiles: Sequence[Subscribe], historical: bool) -> None:
        self.jobs.append((historical, list(profiles)))

    def consent_of(self, emails: Sequence[str]) -> dict[str, KlaviyoConsent]:
        return {}

    def suppressed_pages(self, since: datetime | None) -> Any:
        return iter(())

    def all_pages(self) -> Any:
        return iter(())

    def list_opt_in(self, list_id: str) -> str | None:
        return "single_opt_in"


def _rows(n: int, at: datetime, opt_in_at: bool = True) -> list[dict[str, Any]]:
    rows = []
    for i in range(1, n + 1):
        row = {"id": i, "email": f"C{i}@Example.com", "status": "Active",
               "email_opt_in": i % 4 != 0, "updated_at": at,
               "signup_date": datetime(2025, 1, 1).date()}
        if opt_in_at:
            row["email_opt_in_at"] = at - timedelta(days=2) if i % 4 else None
        rows.append(row)
    return rows


def test_pages_fallback_and_late_commits_on_each_backend(business_url: str,
                                                         tmp_path: Path) -> None:
    business = BusinessSettings(url=business_url)
    writer = sa.create_engine(business_url)
    create_schema(writer, business)
    customers = tables(business)[0]
    with writer.begin() as conn:
        conn.execute(customers.insert(), _rows(23, T0))  # one timestamp, pages of 5
    engine = open_business(business_url)
    reader = ConsentReader(engine, business, ConsentSettings(), page_size=5)
    assert [len(p) for p in reader.read_all()] == [5, 5, 5, 5, 3]
    settings = Settings(business=business, consent=ConsentSettings(enabled=True,
                                                                   page_size=5))
    state = open_state(f"sqlite:///{tmp_path}/state.db")
    api = RecordingApi()
    sync = ConsentSync(settings, state, reader, api, OptoutRecorder("klaviyo-sync"),
                       text_times=engine.dialect.name == "sqlite")
    report = sync.run_once(now=NOW)
    assert report.customers_read == 23
    sent = [p.email for _h, job in api.jobs for p in job]
    assert sorted(sent) == sorted(f"c{i}@example.com" for i in range(1, 24) if i % 4)
    assert all(h for h, _job in api.jobs)  # two days old: historical
    assert all(p.consented_at == T0 - timedelta(days=2) for _h, job in api.jobs for p in job)
    # A late commit (older updated_at, inside the overlap) and a fresh opt-in.
    with writer.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 4).values(
            email_opt_in=True, email_opt_in_at=T0 - timedelta(seconds=30),
            updated_at=T0 - timedelta(seconds=60)))
        conn.execute(customers.update().where(customers.c.id == 8).values(
            email_opt_in=True, email_opt_in_at=NOW - timedelta(minutes=5),
            updated_at=NOW - timedelta(minutes=5)))
    api.jobs.clear()
    sync.run_once(now=NOW)
    assert sorted((h, p.email) for h, job in api.jobs for p in job) == [
        (False, "c8@example.com"), (True, "c4@example.com")]
    assert reader.by_email(["c1@example.com", "nobody@example.com"]) == {
        "c1@example.com": ("1", T0 - timedelta(days=2))}
    state.dispose()
    engine.dispose()
    writer.dispose()


def test_without_an_opt_in_time_column_the_signup_date_is_the_consent_time(
        business_url: str) -> None:
    business = BusinessSettings(url=business_url)
    writer = sa.create_engine(business_url)
    md = sa.MetaData()
    c = business.columns
    sa.Table(business.customers_table, md,
             sa.Column(c.customer_id, sa.Integer, primary_key=True, autoincrement=False),
             *(sa.Column(name, sa.String(320)) for name in (
                 c.customer_email, c.customer_first_name, c.customer_last_name,
                 c.customer_status, c.customer_schedule, c.customer_box)),
             sa.Column(c.customer_signup_date, sa.Date), sa.Column(c.customer_email_opt_in,
                                                                   sa.Boolean),
             sa.Column(c.customer_updated_at, sa.DateTime))
    md.create_all(writer)
    rows = _rows(3, T0, opt_in_at=False)
    rows[1]["signup_date"] = None
    with writer.begin() as conn:
        conn.execute(md.tables[business.customers_table].insert(), rows)
    engine = open_business(business_url)
    reader = ConsentReader(engine, business, ConsentSettings())
    found = {r.id: r.opt_in_at for p in reader.read_all() for r in p}
    assert reader.fallback
    assert found == {"1": datetime(2025, 1, 1), "2": T0, "3": datetime(2025, 1, 1)}
    engine.dispose()
    writer.dispose()


class RefusingApi(RecordingApi):
    """Refuses a whole job that holds one of ``bad``, as Klaviyo does (all or nothing),
    naming the offender's pointer unless ``pointer`` is False."""

    def __init__(self, bad: set[str], pointer: bool = True) -> None:
        super().__init__()
        self.bad = bad
        self.pointer = pointer
        self.calls = 0

    def subscribe(self, profiles: Sequence[Subscribe], historical: bool) -> None:
        from klaviyo_sync.exceptions import RejectedSendError

        self.calls += 1
        for index, p in enumerate(profiles):
            if p.email in self.bad:
                source = ({"pointer": f"/data/attributes/profiles/data/{index}/attributes/"
                                      "email"} if self.pointer else {})
                raise RejectedSendError("POST: 400 backdated consent date is after current "
                                        "subscription date", [{"detail": "x", "source":
                                                               source}], 400)
        super().subscribe(profiles, historical)


def test_a_refused_profile_fails_alone_with_or_without_a_pointer(tmp_path: Path) -> None:
    from klaviyo_sync.business.consent_rules import ConsentState
    from klaviyo_sync.business.consent_sync import list_consent

    url = f"sqlite:///{tmp_path}/b.db"
    business = BusinessSettings(url=url)
    writer = sa.create_engine(url)
    create_schema(writer, business)
    with writer.begin() as conn:
        conn.execute(tables(business)[0].insert(), _rows(40, T0))
    writer.dispose()
    bad = {"c5@example.com", "c22@example.com"}
    for pointer in (True, False):
        state = open_state(f"sqlite:///{tmp_path}/state-{pointer}.db")
        engine = open_business(url)
        api = RefusingApi(bad, pointer)
        settings = Settings(business=business, consent=ConsentSettings(enabled=True))
        sync = ConsentSync(settings, state, ConsentReader(engine, business, settings.consent),
                           api, OptoutRecorder("klaviyo-sync"), text_times=True)
        report = sync.run_once(now=NOW)
        sent = {p.email for _h, job in api.jobs for p in job}
        assert sent == {f"c{i}@example.com" for i in range(1, 41) if i % 4} - bad
        refused = list_consent(state, ConsentState.REFUSED)
        assert {r.email for r in refused} == bad
        assert all("backdated consent" in (r.reason or "") for r in refused)
        assert report.counts["refused"] == 2 and report.error is None
        assert sync.run_once(now=NOW).requests == 0  # refused stays refused
        state.dispose()
        engine.dispose()
