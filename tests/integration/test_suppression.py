"""The suppressor on SQLite and PostgreSQL: one row per email, batches of 100, failures kept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync.app import App
from klaviyo_sync.business.customers import Customer
from klaviyo_sync.business.suppression import (
    SuppressionState,
    Suppressor,
    list_suppressions,
)
from klaviyo_sync.cli import cli
from klaviyo_sync.config import Settings, SuppressionSettings
from klaviyo_sync.exceptions import RejectedSendError, RetryableSendError
from tests.integration.shop import Shop

T0 = datetime(2026, 3, 1, 12, 0)


class FakeSender:
    """Records suppression requests; fails as told."""

    def __init__(self, fail_with: Exception | None = None, reject: str | None = None) -> None:
        self.suppress: list[list[str]] = []
        self.unsuppress: list[list[str]] = []
        self.fail_with = fail_with
        self.reject = reject

    def suppress_profiles(self, emails: Sequence[str]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if self.reject is not None and self.reject in emails:
            raise RejectedSendError(f"400: invalid email {self.reject}")
        assert len(emails) <= 100
        self.suppress.append(list(emails))

    def unsuppress_profiles(self, emails: Sequence[str]) -> None:
        self.unsuppress.append(list(emails))


def customer(n: int, status: str = "Active", opt_in: bool = True) -> Customer:
    return Customer(id=str(n), email=f"C{n}@Example.com", status=status, email_opt_in=opt_in,
                    box="Classic", schedule="weekly")


def rows(engine: sa.Engine) -> dict[str, tuple[str, str, int]]:
    return {r.email: (r.state.value, r.reason, r.attempts) for r in list_suppressions(engine)}


def test_fifty_sightings_of_one_dead_customer_make_one_suppression(
        state_engine: sa.Engine) -> None:
    suppressor = Suppressor(state_engine, SuppressionSettings())
    dead = customer(1, status="Dead")
    assert suppressor.observe([dead] * 50) == 1
    for _ in range(3):
        assert suppressor.observe([dead]) == 0
    assert rows(state_engine) == {"c1@example.com": ("pending", "status:Dead", 0)}
    sender = FakeSender()
    assert suppressor.flush(sender) == 1
    assert sender.suppress == [["c1@example.com"]]
    assert suppressor.flush(sender) == 0 and len(sender.suppress) == 1
    assert suppressor.observe([dead]) == 0
    assert rows(state_engine)["c1@example.com"][0] == "sent"


def test_who_is_suppressed_and_who_is_not(state_engine: sa.Engine) -> None:
    suppressor = Suppressor(state_engine, SuppressionSettings(dead_statuses=("Dead", "Gone")))
    suppressor.observe([customer(1), customer(2, opt_in=False), customer(3, status="Gone"),
                        customer(4, status="Stopped"),
                        Customer(id="5", email=None, status="Dead")])
    assert rows(state_engine) == {"c2@example.com": ("pending", "not_opted_in", 0),
                                  "c3@example.com": ("pending", "status:Gone", 0)}


def test_flush_sends_at_most_100_emails_a_request(state_engine: sa.Engine) -> None:
    suppressor = Suppressor(state_engine, SuppressionSettings())
    suppressor.observe(customer(n, opt_in=False) for n in range(250))
    sender = FakeSender()
    assert suppressor.flush(sender) == 250
    assert [len(r) for r in sender.suppress] == [100, 100, 50]
    assert {e for r in sender.suppress for e in r} == {f"c{n}@example.com" for n in range(250)}


def test_a_failed_request_keeps_the_batch_pending_with_its_error(
        state_engine: sa.Engine) -> None:
    suppressor = Suppressor(state_engine, SuppressionSettings())
    suppressor.observe([customer(1, status="Dead")])
    assert suppressor.flush(FakeSender(fail_with=RetryableSendError("503 from Klaviyo"))) == 0
    (row,) = list_suppressions(state_engine)
    assert row.state is SuppressionState.PENDING and row.attempts == 1
    assert row.last_error == "503 from Klaviyo"
    assert suppressor.flush(FakeSender()) == 1
    (row,) = list_suppressions(state_engine)
    assert row.state is SuppressionState.SENT and row.last_error is None and row.sent_at


def test_one_rejected_email_does_not_hold_the_others_back(state_engine: sa.Engine) -> None:
    suppressor = Suppressor(state_engine, SuppressionSettings())
    suppressor.observe(customer(n, opt_in=False) for n in range(10))
    sender = FakeSender(reject="c7@example.com")
    assert suppressor.flush(sender) == 9
    states = {e: s for e, (s, _r, _a) in rows(state_engine).items()}
    assert states.pop("c7@example.com") == "rejected"
    assert set(states.values()) == {"sent"}


def test_reactivated_customers_are_unsuppressed_only_when_the_setting_says_so(
        state_engine: sa.Engine) -> None:
    keep = Suppressor(state_engine, SuppressionSettings())
    keep.observe([customer(1, status="Dead"), customer(2, status="Dead")])
    keep.flush(FakeSender())
    keep.observe([customer(1), customer(2)])  # active and opted in again
    assert {s for s, _r, _a in rows(state_engine).values()} == {"sent"}

    revive = Suppressor(state_engine, SuppressionSettings(unsuppress_reactivated=True))
    revive.observe([customer(3, status="Dead")])  # pending, never sent
    assert revive.observe([customer(1), customer(3)]) == 1
    sender = FakeSender()
    assert revive.flush(sender) == 1
    assert sender.unsuppress == [["c1@example.com"]] and sender.suppress == []
    states = {e: s for e, (s, _r, _a) in rows(state_engine).items()}
    assert states == {"c1@example.com": "unsuppressed", "c2@example.com": "sent",
                      "c3@example.com": "unsuppressed"}
    revive.observe([customer(1, opt_in=False)])  # opted out again: back on the list
    assert rows(state_engine)["c1@example.com"][:2] == ("pending", "not_opted_in")


def test_order_updates_check_the_customers_they_touch(
        tmp_path: Path, state_engine: sa.Engine) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'business.db'}")
    shop.add_customer(1, opt_in=False)
    shop.add_customer(2)  # Active, opted in
    shop.add_customer(3, status="Dead")
    shop.add_order(10, "placed", T0, customer=1)
    shop.add_order(20, "completed", T0, T0 + timedelta(minutes=1), customer=2)
    tracker = App(shop.settings_with(), state_engine=state_engine).order_tracker
    assert tracker is not None
    tracker.run_once(now=T0 + timedelta(hours=1))
    assert rows(state_engine) == {"c1@example.com": ("pending", "not_opted_in", 0)}
    shop.add_order(30, "cancelled", T0 + timedelta(minutes=2), customer=3)
    tracker.run_once(now=T0 + timedelta(hours=1))
    assert set(rows(state_engine)) == {"c1@example.com", "c3@example.com"}
    shop.close()


def test_builder_honours_the_switch(state_engine: sa.Engine) -> None:
    assert App(Settings(), state_engine=state_engine).suppression is not None
    off = Settings(suppression=SuppressionSettings(enabled=False))
    assert App(off, state_engine=state_engine).suppression is None


def test_suppressions_list_command(tmp_path: Path) -> None:
    from klaviyo_sync.state.db import open_state

    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_state(state_url)
    Suppressor(engine, SuppressionSettings()).observe([customer(1, status="Dead"),
                                                       customer(2, opt_in=False)])
    engine.dispose()
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "suppressions", "list",
                                      "--json"])
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in result.output.splitlines()]
    assert {(r["email"], r["state"], r["reason"]) for r in listed} == {
        ("c1@example.com", "pending", "status:Dead"), ("c2@example.com", "pending",
                                                       "not_opted_in")}
    table = CliRunner().invoke(cli, ["--config", str(config), "suppressions", "list",
                                     "--state", "pending"])
    assert table.exit_code == 0 and "c1@example.com" in table.output


def test_observing_nobody_touches_nothing(state_engine: sa.Engine) -> None:
    assert Suppressor(state_engine, SuppressionSettings()).observe([]) == 0
    assert list_suppressions(state_engine) == []
