"""Acceptance: consent both ways at the issue's size (5,000 customers), through the
installed CLI as a subprocess, on SQLite and PostgreSQL state; SIGKILL at random moments
of the consent and optouts passes subscribes nobody twice and loses no opt-out."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.app import App
from klaviyo_sync.business.customers import Customer
from klaviyo_sync.business.suppression import Suppressor
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings, SuppressionSettings
from klaviyo_sync.state.db import open_state
from klaviyo_sync.state.schema import audit, consent_sync
from tests.consent_world import World, build_world, email
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

pytestmark = pytest.mark.slow

CUSTOMERS = 5000
KILLS = 10


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)


def write_settings(path: Path, state_url: str, business_url: str, base_url: str,
                   writeback: bool = False) -> Path:
    lines = ["[state]", f'url = "{state_url}"', "[business]", f'url = "{business_url}"',
             "[klaviyo]", f'base_url = "{base_url}"', "respect_published_limits = false",
             "timeout_s = 10.0", "[consent]", "enabled = true"]
    if writeback:
        lines += [f'writeback_url = "{business_url}"',
                  'writeback_statement = "UPDATE customers SET email_opt_in = 0 '
                  'WHERE id = :customer_id"']
    lines += ["[logging]", 'level = "warning"']
    path.write_text("\n".join(lines) + "\n")
    return path


def env() -> dict[str, str]:
    found = dict(os.environ, KLAVIYO_API_KEY=API_KEY)
    found["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return found


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "klaviyo_sync", "--config", str(config), *args]


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command(config, *args), env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def suppress_ours(state_url: str, base_url: str, world: World) -> None:
    """Our own suppression rule suppresses the dead customers first, as `send` would."""
    settings = Settings()
    settings = settings.replace(klaviyo=settings.klaviyo.__class__(
        base_url=base_url, respect_published_limits=False))
    settings = settings.replace(state=settings.state.__class__(url=state_url))
    with App(settings) as app:
        suppressor = Suppressor(app.state_engine, SuppressionSettings())
        suppressor.observe([Customer(i, email(i), status="Dead") for i in world.ours])
        assert suppressor.flush(app.sender) == len(world.ours)  # type: ignore[arg-type]


def email_subscriptions(standin: KlaviyoStandIn) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for s in standin.subscriptions:
        if s.channel == "email":
            found.setdefault(s.email or "", []).append(s)
    return found


def check_subscribed_once(standin: KlaviyoStandIn, world: World) -> None:
    subs = email_subscriptions(standin)
    assert set(subs) == {email(i) for i in world.to_subscribe()}
    assert {len(v) for v in subs.values()} == {1}, "someone was subscribed twice"
    for i in world.to_subscribe():
        s = subs[email(i)][0]
        if i in world.historical:
            assert s.historical_import
            assert s.consented_at is not None
            assert abs(s.consented_at.replace(tzinfo=None) - world.opted_in[i]) \
                < timedelta(seconds=1)
        else:
            assert not s.historical_import and s.consented_at is None
    lifted = Counter(lift.email for lift in standin.suppressions_lifted)
    # Only opt-outs older than the business opt-in are lifted: 0 newer ones.
    assert not set(lifted) & {email(i) for i in world.conflicts}
    assert set(lifted) == {email(i) for i in world.older_optouts}


def test_a_world_of_5000_customers_reconciled_and_synced(
        standin: KlaviyoStandIn, state_url: str, tmp_path: Path) -> None:
    now = utcnow()
    business_url, world = build_world(tmp_path / "business.db", standin, CUSTOMERS, now)
    business = sa.create_engine(business_url)
    with business.begin() as conn:
        conn.execute(sa.text("CREATE TABLE optout_log (customer_id INTEGER)"))
        conn.execute(sa.text("CREATE TRIGGER count_writes AFTER UPDATE OF email_opt_in ON "
                             "customers BEGIN INSERT INTO optout_log VALUES (NEW.id); END"))
    suppress_ours(state_url, standin.base_url, world)
    config = write_settings(tmp_path / "settings.toml", state_url, business_url,
                            standin.base_url, writeback=True)

    writes = len([r for r in standin.requests if r.method != "GET"])
    dry = run(config, "consent", "reconcile", "--dry-run", "--format", "json")
    assert len([r for r in standin.requests if r.method != "GET"]) == writes
    actions = Counter(json.loads(line)["action"] for line in dry.stdout.splitlines())
    assert actions["conflict: newer Klaviyo opt-out, not subscribed"] == len(world.conflicts)
    assert actions["subscribe live"] == len(world.fresh - world.conflicts)
    assert actions["subscribe as historical"] == len(world.historical - world.conflicts)
    state = open_state(state_url)
    with state.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(consent_sync)).scalar() == 0

    run(config, "consent", "reconcile")
    run(config, "consent")
    run(config, "optouts")
    run(config, "consent")
    check_subscribed_once(standin, world)

    listed = run(config, "optouts", "list", "--format", "json").stdout.splitlines()
    emails = Counter(json.loads(line)["email"] for line in listed)
    assert emails == Counter(world.klaviyo_optouts())
    assert not set(emails) & {email(i) for i in world.ours}
    csv_out = run(config, "optouts", "list", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("at,email,customer_id") and len(csv_out) == len(listed) + 1
    with business.connect() as conn:
        updated = Counter(r[0] for r in conn.execute(sa.text(
            "SELECT customer_id FROM optout_log")))
    # Opt-outs superseded by a later business opt-in are not written back.
    expected = {int(i) for i in world.conflicts | world.not_opted_in_optouts}
    assert set(updated) == expected and set(updated.values()) == {1}
    with state.connect() as conn:
        summaries = conn.execute(sa.select(audit.c.endpoint)
                                 .where(audit.c.method == "RECON")).scalars().all()
    assert len(summaries) == 1 and "conflict=" in summaries[0]
    state.dispose()
    business.dispose()


def _kill_trials(standin: KlaviyoStandIn, config: Path, args: tuple[str, ...],
                 prepare: Any, rng: random.Random) -> int:
    kills = 0
    for trial in range(KILLS * 2):
        if kills >= KILLS:
            break
        prepare(trial)
        seen = len(standin.requests)
        proc = subprocess.Popen(command(config, *args), env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(standin.requests) == seen and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    return kills


def test_sigkill_during_the_consent_pass_subscribes_nobody_twice(
        make_standin: Any, state_url: str, tmp_path: Path) -> None:
    standin = make_standin(latency_s=0.05)
    business_url, world = build_world(tmp_path / "business.db", standin, CUSTOMERS, utcnow())
    business = sa.create_engine(business_url)
    with business.begin() as conn:  # everyone opts in later, a group per trial
        conn.execute(sa.text("UPDATE customers SET email_opt_in = 0"))
    config = write_settings(tmp_path / "settings.toml", state_url, business_url,
                            standin.base_url)
    groups = [sorted(world.opted_in, key=int)[g::KILLS] for g in range(KILLS)]

    def opt_in_group(trial: int) -> None:
        if trial < KILLS:
            with business.begin() as conn:
                conn.execute(sa.text("UPDATE customers SET email_opt_in = 1, updated_at = :at "
                                     "WHERE id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)),
                    {"at": utcnow(), "ids": [int(i) for i in groups[trial]]})

    kills = _kill_trials(standin, config, ("consent",), opt_in_group, random.Random(11))
    assert kills >= KILLS
    for trial in range(KILLS):
        opt_in_group(trial)  # (a no-op for groups already opted in, but bumps their time)
    run(config, "consent")
    run(config, "consent")
    check_subscribed_once(standin, world)
    business.dispose()


def test_sigkill_during_the_optouts_pass_loses_and_repeats_nothing(
        make_standin: Any, state_url: str, tmp_path: Path) -> None:
    standin = make_standin(latency_s=0.05)
    business_url, world = build_world(tmp_path / "business.db", standin, CUSTOMERS, utcnow())
    config = write_settings(tmp_path / "settings.toml", state_url, business_url,
                            standin.base_url)
    injected: set[str] = set()

    def inject(trial: int) -> None:
        # 250 new opt-outs a trial, in runs of 10 sharing one moment: a page boundary
        # falls inside a run, where a cursor that skipped would lose some.
        base = utcnow().replace(tzinfo=UTC) - timedelta(minutes=30 - trial)
        for n in range(250):
            address = f"later{trial}-{n}@example.org"
            standin.account.opt_out(address, "UNSUBSCRIBE",
                                    base + timedelta(milliseconds=n // 10))
            injected.add(address)

    kills = _kill_trials(standin, config, ("optouts",), inject, random.Random(12))
    assert kills >= KILLS
    run(config, "optouts")
    run(config, "optouts")
    listed = Counter(json.loads(line)["email"] for line in
                     run(config, "optouts", "list", "--format", "json").stdout.splitlines())
    assert listed == Counter(world.klaviyo_optouts() | injected)
