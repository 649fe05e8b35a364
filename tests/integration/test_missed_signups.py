"""The missed-signup ruleset on a generated data set with a known answer."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync.business.checkout_events import CheckoutAttempt
from klaviyo_sync.business.db import open_business
from klaviyo_sync.business.missed_signups import find_missed_signups, render
from klaviyo_sync.business.sample_data import (
    SampleSummary,
    create_schema,
    generate,
    signup_events,
)
from klaviyo_sync.cli import cli
from klaviyo_sync.config import BusinessSettings, Settings, StateSettings
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state

NOW = datetime(2026, 3, 1, 12, 0)


def build(business_url: str, state_url: str, customers: int = 1000
          ) -> tuple[Settings, SampleSummary, sa.Engine]:
    settings = Settings(business=BusinessSettings(url=business_url),
                        state=StateSettings(url=state_url))
    writer = sa.create_engine(business_url)
    create_schema(writer, settings.business)
    summary = generate(writer, settings, customers=customers, orders=20, seed=11, now=NOW)
    writer.dispose()
    state = open_state(state_url)
    QueueStore(state).enqueue_many(signup_events(summary), now=NOW)
    return settings, summary, state


def ids_in(fmt: str, text: str) -> list[str]:
    if fmt == "json":
        return [row["customer_id"] for row in json.loads(text)]
    if fmt == "csv":
        return [row["customer_id"] for row in csv.DictReader(io.StringIO(text))]
    lines = text.splitlines()
    assert lines[-1] == f"{len(lines) - 2} missed signup(s)"
    return [line.split()[0] for line in lines[1:-1]]


def test_known_answer_in_every_format_on_every_backend(
        business_url: str, tmp_path: Path) -> None:
    settings, summary, state = build(business_url, f"sqlite:///{tmp_path / 'state.db'}")
    assert len(summary.customers) >= 1000 and len(summary.expected_missed_ids) > 100
    reader = open_business(business_url)
    try:
        rows = find_missed_signups(state, reader, settings, now=NOW)
    finally:
        reader.dispose()
        state.dispose()
    expected = sorted(summary.expected_missed_ids)
    assert sorted(r.customer_id or "" for r in rows) == expected
    for fmt in ("table", "csv", "json"):
        assert sorted(ids_in(fmt, render(rows, fmt))) == expected, fmt
    # Each row shows the customer as the business database has them now.
    people = {c.id: c for c in summary.customers}
    attempts = {}
    for s in summary.signups:
        attempts.setdefault(s.customer_id, []).append(s.occurred_at)
    for row in rows:
        times = attempts[row.customer_id]
        assert (row.first_attempt_at, row.last_attempt_at, row.attempts) == (
            min(times), max(times), len(times))
        assert row.days_since_last_attempt == (NOW.date() - max(times).date()).days
        person = people.get(row.customer_id)
        if person is None:  # a prospect who never became a customer
            assert row.status is None and row.name == "New Person"
            continue
        assert (row.status, row.schedule, row.box, row.email) == (
            person.status, person.schedule, person.box, person.email)
        assert row.name == f"{person.first_name} {person.last_name}"
        assert not (person.status == "Active" and person.box and person.schedule)


def test_cli_writes_the_known_answer_in_all_three_formats(tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    _settings, summary, state = build(business_url, state_url)
    state.dispose()
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n[business]\nurl = "{business_url}"\n',
                      encoding="utf-8")
    for fmt in ("table", "csv", "json"):
        out = tmp_path / f"missed.{fmt}"
        result = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                          "--format", fmt, "--output", str(out)])
        assert result.exit_code == 0, result.output
        assert f"{len(summary.expected_missed_ids)} missed signup(s) written" in result.output
        assert "sender.sent_retention" in result.output  # where the history ends
        text = out.read_text(encoding="utf-8")
        assert sorted(ids_in(fmt, text)) == sorted(summary.expected_missed_ids), fmt
    printed = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                       "--format", "json"])
    assert printed.exit_code == 0
    assert '"customer_id"' in printed.stdout


def test_window_limits_the_attempts(tmp_path: Path) -> None:
    settings, summary, state = build(f"sqlite:///{tmp_path / 'b.db'}",
                                     f"sqlite:///{tmp_path / 's.db'}", customers=300)
    reader = open_business(settings.business.url)
    since = (NOW - timedelta(days=10)).date()
    until = (NOW - timedelta(days=3)).date()
    rows = find_missed_signups(state, reader, settings, since=since, until=until, now=NOW)
    reader.dispose()
    state.dispose()
    in_window = {s.customer_id for s in summary.signups
                 if since <= s.occurred_at.date() <= until}
    assert {r.customer_id for r in rows} == in_window & set(summary.expected_missed_ids)
    for row in rows:
        assert since <= row.first_attempt_at.date() <= row.last_attempt_at.date() <= until


def test_klaviyo_checkouts_count_as_attempts(tmp_path: Path) -> None:
    settings, summary, state = build(f"sqlite:///{tmp_path / 'b.db'}",
                                     f"sqlite:///{tmp_path / 's.db'}", customers=200)
    attempted = {s.customer_id for s in summary.signups}
    quiet_missed = next(c for c in summary.customers
                        if c.id not in attempted and c.status != "Active")
    quiet_fine = next(c for c in summary.customers if c.id not in attempted
                      and c.status == "Active" and c.box and c.schedule)
    checkouts = [CheckoutAttempt(quiet_missed.email.upper() if quiet_missed.email else None,
                                 None, NOW - timedelta(days=1)),
                 CheckoutAttempt(quiet_fine.email, None, NOW - timedelta(days=1)),
                 CheckoutAttempt("stranger@example.org", None, NOW - timedelta(days=2)),
                 CheckoutAttempt(None, None, NOW - timedelta(days=2))]
    reader = open_business(settings.business.url)
    rows = find_missed_signups(state, reader, settings, klaviyo_events=checkouts, now=NOW)
    reader.dispose()
    state.dispose()
    by_key = {r.customer_id or r.email: r for r in rows}
    assert by_key[quiet_missed.id].sources == ("klaviyo",)
    assert by_key["stranger@example.org"].customer_id is None
    assert quiet_fine.id not in by_key
    assert len(rows) == len(summary.expected_missed_ids) + 2
