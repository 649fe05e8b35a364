"""The consent passes against the stand-in, on SQLite and PostgreSQL state: subscribe
opt-ins (historical and live), never over a newer opt-out, read opt-outs back once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.business.consent_rules import Action, ConsentState
from klaviyo_sync.business.consent_sync import list_consent
from klaviyo_sync.business.customers import Customer
from klaviyo_sync.business.optouts import list_optouts
from klaviyo_sync.business.suppression import Suppressor
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import ConsentSettings, Settings, SuppressionSettings
from klaviyo_sync.state.schema import consent_sync
from tests.consent_world import PHONE, SMS_OPT_IN, World, build_world, email
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)


def settings_for(state_url: str, business_url: str, base_url: str, **consent: Any
                 ) -> Settings:
    s = Settings()
    return s.replace(
        state=s.state.__class__(url=state_url),
        business=s.business.__class__(url=business_url),
        klaviyo=s.klaviyo.__class__(base_url=base_url, respect_published_limits=False,
                                    timeout_s=10.0),
        consent=ConsentSettings(enabled=True, **consent))


class Parts:
    """The consent parts from the wiring (app.py), on one set of settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = App(settings)
        self.state = self.app.state_engine

    def sync(self) -> Any:
        return self.app.consent_sync

    def optouts(self) -> Any:
        return self.app.optouts

    def reconciler(self, dry_run: bool) -> Any:
        return self.app.reconciler(dry_run)

    def suppress_dead(self, world: World) -> None:
        suppressor = Suppressor(self.state, SuppressionSettings())
        suppressor.observe([Customer(i, email(i), status="Dead", email_opt_in=False)
                            for i in sorted(world.ours)])
        suppressor.flush(self.app.sender)  # type: ignore[arg-type]

    def close(self) -> None:
        self.app.close()


@pytest.fixture
def world(tmp_path: Path, standin: KlaviyoStandIn, state_url: str
          ) -> tuple[Parts, World]:
    url, world = build_world(tmp_path / "business.db", standin, 400, utcnow())
    parts = Parts(settings_for(state_url, url, standin.base_url))
    parts.suppress_dead(world)
    yield parts, world
    parts.close()


def subscribed_emails(standin: KlaviyoStandIn) -> Counter[str]:
    return Counter(s.email or "" for s in standin.subscriptions if s.channel == "email")


def test_pass_subscribes_opt_ins_once_and_never_over_a_newer_optout(
        world: tuple[Parts, World], standin: KlaviyoStandIn) -> None:
    parts, w = world
    report = parts.sync().run_once()
    assert report.error is None
    subs = {s.email: s for s in standin.subscriptions if s.channel == "email"}
    assert set(subs) == {email(i) for i in w.to_subscribe()}
    # Only opt-outs older than the business opt-in are lifted; no newer one.
    lifted = [lift.email for lift in standin.suppressions_lifted]
    assert sorted(lifted) == sorted(email(i) for i in w.older_optouts)
    for i in w.historical - w.conflicts:
        s = subs[email(i)]
        assert s.historical_import and s.consented_at is not None
        assert abs(s.consented_at.replace(tzinfo=None) - w.opted_in[i]) < timedelta(seconds=1)
    for i in w.fresh - w.conflicts:
        assert not subs[email(i)].historical_import and subs[email(i)].consented_at is None
    assert {s.custom_source for s in subs.values()} == {"klaviyo-sync"}
    conflicts = {r.customer_id for r in list_consent(parts.state, ConsentState.CONFLICT)}
    assert conflicts == w.conflicts
    # Nothing new: the second pass sends nothing.
    again = parts.sync().run_once()
    assert again.requests == 0
    assert max(subscribed_emails(standin).values()) == 1


def test_optouts_listed_once_and_ours_never(world: tuple[Parts, World],
                                            standin: KlaviyoStandIn) -> None:
    parts, w = world
    first = parts.optouts().run_once()
    assert first.pages > 1  # more than 100 suppressed profiles: paged
    second = parts.optouts().run_once()
    assert second.recorded == 0
    listed = list_optouts(parts.state)
    assert Counter(o.email for o in listed) == Counter(w.klaviyo_optouts())
    assert not {o.email for o in listed} & {email(i) for i in w.ours}
    by_email = {o.email: o for o in listed}
    assert all(by_email[email(i)].customer_id == i for i in w.conflicts)
    # A new opt-out after the cursor is found by the next pass, alone.
    standin.account.opt_out(email("2"), "SPAM_COMPLAINT")
    third = parts.optouts().run_once()
    assert third.recorded == 1
    assert [o.reason for o in list_optouts(parts.state) if o.email == email("2")] \
        == ["SPAM_COMPLAINT"]


def test_reconcile_dry_run_changes_nothing_then_applies(
        world: tuple[Parts, World], standin: KlaviyoStandIn) -> None:
    parts, w = world
    writes_before = [r for r in standin.requests if r.method != "GET"]
    report = parts.reconciler(True).run(dry_run=True)
    assert [r for r in standin.requests if r.method != "GET"] == writes_before
    with parts.state.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(consent_sync)).scalar() == 0
    actions = Counter(r.action for r in report.rows)
    assert actions[Action.CONFLICT] == len(w.conflicts)
    assert actions[Action.SUBSCRIBE_HISTORICAL] + actions[Action.SUBSCRIBE_LIVE] \
        == len(w.to_subscribe())
    assert actions[Action.SUBSCRIBE_LIVE] == len(w.fresh - w.conflicts)
    assert actions[Action.RECORD_OPTOUT] == len(w.not_opted_in_optouts)
    applied = parts.reconciler(False).run(dry_run=False)
    assert applied.applied is not None and applied.applied.error is None
    assert set(subscribed_emails(standin)) == {email(i) for i in w.to_subscribe()}
    assert {lift.email for lift in standin.suppressions_lifted} \
        == {email(i) for i in w.older_optouts}
    # The passes after it subscribe nobody again and list every opt-out once.
    parts.sync().run_once()
    parts.optouts().run_once()
    assert max(subscribed_emails(standin).values()) == 1
    assert Counter(o.email for o in list_optouts(parts.state)) == Counter(w.klaviyo_optouts())


def test_sms_numbers_not_in_e164_are_listed_not_sent(
        tmp_path: Path, standin: KlaviyoStandIn, state_url: str) -> None:
    url, w = build_world(tmp_path / "b.db", standin, 200, utcnow(), sms=True)
    parts = Parts(settings_for(state_url, url, standin.base_url, sms_phone_column=PHONE,
                               sms_opt_in_column=SMS_OPT_IN))
    try:
        assert parts.sync().run_once().error is None
        sms = {s.phone_number for s in standin.subscriptions if s.channel == "sms"}
        assert sms == set(w.good_phones.values())
        invalid = {r.customer_id: r for r in list_consent(parts.state,
                                                          ConsentState.INVALID_PHONE)}
        assert set(invalid) == set(w.bad_phones)
        assert all("does not start with +" in (r.reason or "")
                   for i, r in invalid.items() if i not in w.conflicts)
        assert {s.email for s in standin.subscriptions if s.channel == "email"} \
            == {email(i) for i in w.to_subscribe()}
    finally:
        parts.close()


def test_writeback_updates_each_business_row_once(
        tmp_path: Path, standin: KlaviyoStandIn, state_url: str) -> None:
    url, w = build_world(tmp_path / "b.db", standin, 300, utcnow())
    writer = sa.create_engine(url)
    with writer.begin() as conn:
        conn.execute(sa.text("CREATE TABLE optout_log (customer_id INTEGER)"))
        conn.execute(sa.text(
            "CREATE TRIGGER count_writes AFTER UPDATE OF email_opt_in ON customers "
            "BEGIN INSERT INTO optout_log VALUES (NEW.id); END"))
    statement = "UPDATE customers SET email_opt_in = 0 WHERE id = :customer_id"
    parts = Parts(settings_for(state_url, url, standin.base_url, writeback_url=url,
                               writeback_statement=statement))
    try:
        first = parts.optouts().run_once()
        parts.optouts().run_once()
        with writer.connect() as conn:
            writes = Counter(r[0] for r in conn.execute(sa.text(
                "SELECT customer_id FROM optout_log")))
            opted = dict(conn.execute(sa.text("SELECT id, email_opt_in FROM customers")).all())
        # An opt-out older than the business opt-in is superseded: not written back.
        expected = {int(i) for i in w.conflicts | w.not_opted_in_optouts}
        assert set(writes) == expected and set(writes.values()) == {1}
        assert first.written_back == len(expected)
        assert all(not opted[i] for i in expected)
    finally:
        parts.close()
        writer.dispose()




def test_rows_left_sending_by_a_crash_are_read_back_not_resent(
        world: tuple[Parts, World], standin: KlaviyoStandIn) -> None:
    parts, w = world
    sync = parts.sync()
    sync.run_once()
    sent_before = subscribed_emails(standin)
    # As if killed after the request (subscribed in Klaviyo) or before it (not sent):
    # both left 'sending'.
    after, before = sorted(w.to_subscribe(), key=int)[:5], sorted(w.to_subscribe(), key=int)[5:8]
    with parts.state.begin() as conn:
        conn.execute(consent_sync.update().where(consent_sync.c.customer_id.in_(after + before))
                     .values(state=ConsentState.SENDING.value, batch="crashed"))
    with standin.account.lock:  # the 'before' ones never reached Klaviyo
        for i in before:
            pid = standin.account.profile_id_for("email", email(i))
            assert pid is not None
            standin.account.consent.email[pid].consent = "NEVER_SUBSCRIBED"
    report = parts.sync().run_once()
    assert report.counts["resolved_in_flight"] == 8
    resent = subscribed_emails(standin) - sent_before
    assert set(resent) == {email(i) for i in before} and set(resent.values()) == {1}
    assert not list_consent(parts.state, ConsentState.SENDING)


def test_subscriptions_go_to_the_configured_list_and_a_missing_list_stops_them(
        tmp_path: Path, standin: KlaviyoStandIn, state_url: str) -> None:
    url, w = build_world(tmp_path / "b.db", standin, 60, utcnow())
    missing = Parts(settings_for(state_url, url, standin.base_url, list_id="NOPE"))
    try:
        report = missing.sync().run_once()
        assert report.error is not None and "no list 'NOPE'" in report.error
        assert not standin.subscriptions
    finally:
        missing.close()
    standin.account.add_list("Lx1", "Newsletter", double_opt_in=True)
    parts = Parts(settings_for(state_url, url, standin.base_url, list_id="Lx1"))
    try:
        assert parts.sync().run_once().error is None
        subs = [s for s in standin.subscriptions if s.channel == "email"]
        assert {s.list_id for s in subs} == {"Lx1"}
        # Double opt-in list: only the live (fresh) ones get a confirmation email.
        assert {c.email for c in standin.confirmations_sent} \
            == {email(i) for i in w.fresh - w.conflicts}
        assert not [f for f in standin.flows_fired
                    if f.email in {email(i) for i in w.historical}]
    finally:
        parts.close()
