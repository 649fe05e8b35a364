"""`missed-signups --include-klaviyo` and the MissedSignup profile flag, via the stand-in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync.business import checkout_events
from klaviyo_sync.business.sample_data import create_schema, generate, signup_events
from klaviyo_sync.cli import cli
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import BusinessSettings
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


def test_checkouts_from_klaviyo_and_profile_flags(
        tmp_path: Path, klaviyo: KlaviyoStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    monkeypatch.setattr(checkout_events, "PAGE_SIZE", 2)  # several pages for a few events
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    now = utcnow().replace(microsecond=0)
    writer = sa.create_engine(business_url)
    business = BusinessSettings(url=business_url)
    create_schema(writer, business)
    summary = generate(writer, business, customers=120, orders=0, seed=3, now=now)
    writer.dispose()
    state = open_state(state_url)
    QueueStore(state).enqueue_many(signup_events(summary), now=now)
    state.dispose()

    attempted = {s.customer_id for s in summary.signups}
    quiet = [c for c in summary.customers if c.id not in attempted and c.status == "Dead"][:3]
    assert len(quiet) == 3
    for n, customer in enumerate(quiet):
        assert customer.email
        klaviyo.add_event("Started Checkout", customer.email, now - timedelta(hours=n + 1))
    klaviyo.add_event("Started Checkout", "old@example.org", now - timedelta(days=90))
    klaviyo.add_event("Viewed Product", quiet[0].email or "", now - timedelta(hours=1))

    config = tmp_path / "settings.toml"
    config.write_text(
        f'[state]\nurl = "{state_url}"\n[business]\nurl = "{business_url}"\n'
        f'[klaviyo]\nbase_url = "{klaviyo.base_url}"\nrespect_published_limits = false\n'
        f'[missed_signups]\nwrite_profile_flag = true\n', encoding="utf-8")
    since = (now - timedelta(days=30)).strftime("%Y-%m-%d")
    result = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                      "--include-klaviyo", "--since", since,
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    by_id = {r["customer_id"]: r for r in rows}
    for customer in quiet:
        assert by_id[customer.id]["sources"] == ["klaviyo"]
        assert by_id[customer.id]["status"] == "Dead"
    assert "old@example.org" not in {r["email"] for r in rows}  # outside --since
    assert set(by_id) == set(summary.expected_missed_ids) | {c.id for c in quiet}

    flags = {email: p["properties"].get("MissedSignup")
             for email, p in klaviyo.profiles.items() if "MissedSignup" in p["properties"]}
    missed_emails = {r["email"] for r in rows}
    assert {e for e, flag in flags.items() if flag} == missed_emails
    completed = {c.email for c in summary.customers
                 if c.id in attempted and c.id not in summary.expected_missed_ids}
    assert completed and {e for e, flag in flags.items() if flag is False} == completed


def test_include_klaviyo_needs_the_klaviyo_sender(tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    writer = sa.create_engine(business_url)
    create_schema(writer, BusinessSettings(url=business_url))
    writer.dispose()
    config = tmp_path / "settings.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[business]\nurl = "{business_url}"\n'
        f'[sender]\nkind = "dry-run"\noutbox = "{tmp_path / "outbox.jsonl"}"\n',
        encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                      "--include-klaviyo"])
    assert isinstance(result.exception, ConfigError)  # main() makes it exit code 2
    assert "sender.kind" in str(result.exception)


def test_missed_signups_without_a_business_database_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "missed-signups"])
    assert isinstance(result.exception, ConfigError)
    assert "business.url" in str(result.exception)


def test_an_older_since_than_the_history_is_flagged(tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    writer = sa.create_engine(business_url)
    create_schema(writer, BusinessSettings(url=business_url))
    writer.dispose()
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    open_state(state_url).dispose()  # something has run: the state database exists
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n'
                      f'[business]\nurl = "{business_url}"\n', encoding="utf-8")
    recent = (datetime.now() - timedelta(days=2)).strftime("%Y-%m-%d")
    quiet = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                     "--since", recent, "--format", "csv"])
    assert quiet.exit_code == 0 and "note:" not in quiet.output
    assert quiet.stdout.splitlines()[0].startswith("customer_id,email,name")
    flagged = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                       "--since", "2000-01-01", "--format", "csv"])
    assert flagged.exit_code == 0 and "sender.sent_retention" in flagged.stderr


def test_missed_signups_before_anything_ran_answers_and_creates_nothing(
        tmp_path: Path) -> None:
    """An analyst on a fresh setup: no attempt is recorded yet, the answer says so, and
    the state database is not created by asking."""
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    writer = sa.create_engine(business_url)
    create_schema(writer, BusinessSettings(url=business_url))
    writer.dispose()
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "var" / "state.db"}"\n'
                      f'[business]\nurl = "{business_url}"\n', encoding="utf-8")
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, ["--config", str(config), "missed-signups",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [result.stdout.splitlines()[0]]  # the header alone
    assert "no state database yet" in result.stderr
    assert set(tmp_path.rglob("*")) == before
