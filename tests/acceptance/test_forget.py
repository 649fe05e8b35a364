"""Acceptance: `klaviyo-sync forget` erases one person in Klaviyo and in our own state.

A small world: ten customers, one of whom (Ann Quibbleworth, customer 1004) has 50 log
events, 2 orders, a suppression (she is Dead) and a rejected log line. The CLI runs as a
subprocess against the stand-in; the state is SQLite or PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.state.db import open_state
from klaviyo_sync.state.schema import events, order_sync, rejects, suppressions
from tests.acceptance.shop_schema import SHOP_DDL
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

EMAIL = "ann.quibbleworth@example.com"
NAME = "Quibbleworth"
TARGET = "1004"
OTHERS = [str(1000 + i) for i in range(10) if 1000 + i != 1004]


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY,
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(config),
                           *args], capture_output=True, text=True, env=env, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def make_business(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SHOP_DDL)
        for cid in [TARGET, *OTHERS]:
            target = cid == TARGET
            db.execute("INSERT INTO customers VALUES (?,?,?,?,?,?,?,?,?,?)", (
                int(cid), EMAIL if target else f"c{cid}@example.com", "Ann" if target else "Bo",
                NAME if target else f"Other{cid}", "Dead" if target else "Active", "weekly",
                "Classic", "2026-01-02", 1, "2026-01-02 10:00:00"))
        orders = [(1, TARGET), (2, TARGET), (3, OTHERS[0]), (4, OTHERS[1])]
        for order_id, cid in orders:
            db.execute("INSERT INTO orders VALUES (?, ?, 'placed', 25.0, 'USD', "
                       "'2026-11-20 10:00:00', '2026-11-20 10:00:00')", (order_id, int(cid)))
            db.execute("INSERT INTO order_items VALUES (?, 7, 'SKU7', 'Beans', 1, 25.0, "
                       "'Coffee')", (order_id,))


def log_lines(start: int = 0) -> list[str]:
    lines = []
    for n in range(50):
        lines.append(f"2026-11-{20 + n // 40:02d} 10:{n % 60:02d}:{start:02d} started.signup "
                     f"customer={TARGET} email={EMAIL} first_name=Ann last_name={NAME} "
                     f"box=705 value=47.95")
    for i, cid in enumerate(OTHERS):
        lines.append(f"2026-11-20 11:{i:02d}:00 cancelled customer={cid} "
                     f"email=c{cid}@example.com reason=moving")
    # A line of a synced type that cannot be parsed: kept as a reject, with her email.
    lines.append(f"2026-11-20 12:00:00 started.signup customer={TARGET} email={EMAIL} "
                 "value=lots")
    lines.append("2026-11-20 12:00:01 started.signup customer=1001 email=c1001@example.com "
                 "value=lots")
    return lines


def world(tmp_path: Path, state_url: str, standin: KlaviyoStandIn) -> Path:
    business = tmp_path / "shop.db"
    make_business(business)
    log = tmp_path / "system.log"
    log.write_text("\n".join(log_lines()) + "\n", encoding="utf-8")
    config = tmp_path / "settings.toml"
    config.write_text(
        f'[state]\nurl = "{state_url}"\n[log]\npath = "{log}"\ntimezone = "UTC"\n'
        f'[business]\nurl = "sqlite:///{business}"\n'
        f'[klaviyo]\nbase_url = "{standin.base_url}"\nrespect_published_limits = false\n'
        f'[privacy]\nkey_file = "{tmp_path / "privacy.key"}"\n'
        '[logging]\nlevel = "warning"\n', encoding="utf-8")
    ok(cli(config, "parse"))
    ok(cli(config, "orders"))
    ok(cli(config, "send"))
    return config


def counts(state_url: str) -> dict[str, Any]:
    engine = open_state(state_url)
    try:
        with engine.connect() as conn:
            def n(table: sa.Table, where: Any) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                        .where(where)).scalar() or 0)

            mine = sa.or_(events.c.customer_id == TARGET, events.c.email == EMAIL)
            raws = [bytes(r) for r in conn.execute(sa.select(rejects.c.raw)).scalars()]
            return {
                "her_rejects": sum(EMAIL.encode() in raw for raw in raws),
                "other_rejects": sum(b"c1001@example.com" in raw for raw in raws),
                "her_events": n(events, mine),
                "other_events": n(events, sa.not_(mine)),
                "rejects": n(rejects, sa.true()),
                "her_suppressions": n(suppressions, suppressions.c.email == EMAIL),
                "other_suppressions": n(suppressions, suppressions.c.email != EMAIL),
                "order_sync": n(order_sync, sa.true()),
                "her_order_sync": n(order_sync, order_sync.c.customer_id == TARGET),
            }
    finally:
        engine.dispose()


def state_bytes(state_url: str) -> bytes:
    """What `strings` reads: the SQLite file (and any WAL), or pg_dump of the schema."""
    url = sa.make_url(state_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    schema = url.query["options"].split("search_path=")[1]  # type: ignore[union-attr]
    dump = subprocess.run(["pg_dump", "-h", url.host or "127.0.0.1", "-U",
                           url.username or "postgres", "-n", schema, url.database or "test"],
                          capture_output=True, timeout=120, check=True)
    return dump.stdout


def standin_knows_her(standin: KlaviyoStandIn) -> bool:
    return any(EMAIL in json.dumps(e.profile) for e in standin.events)


@pytest.mark.slow
def test_forget_erases_her_everywhere_and_nobody_else(tmp_path: Path, state_url: str,
                                                      standin: KlaviyoStandIn) -> None:
    config = world(tmp_path, state_url, standin)
    before = counts(state_url)
    assert before["her_events"] >= 52 and before["her_suppressions"] == 1
    assert before["her_order_sync"] == 2 and before["rejects"] == 2
    assert before["her_rejects"] == before["other_rejects"] == 1
    assert EMAIL.encode() in state_bytes(state_url) and standin_knows_her(standin)

    dry = json.loads(ok(cli(config, "forget", "--email", EMAIL, "--dry-run", "--json")))
    assert counts(state_url) == before and not standin.account.deletion_requests

    done = json.loads(ok(cli(config, "forget", "--email", EMAIL, "--json")))
    assert done["removed"] == dry["removed"]  # the dry run printed the same counts
    assert done["removed"]["events_sent"] + done["removed"]["events_pending"] \
        + done["removed"]["events_dead"] == before["her_events"]
    assert done["removed"]["rejects"] == 1 and done["removed"]["suppressions"] == 1
    assert len(standin.account.deletion_requests) == 1
    assert standin.account.deletion_requests[0].value == EMAIL
    after = counts(state_url)
    assert after["her_events"] == after["her_suppressions"] == after["her_order_sync"] == 0
    assert after["her_rejects"] == 0
    for key in ("other_events", "other_rejects", "rejects", "other_suppressions",
                "order_sync"):
        assert after[key] == before[key], key
    dump = state_bytes(state_url)
    assert EMAIL.encode() not in dump and NAME.encode() not in dump

    # A later line of hers is not sent: the tombstone. status says so.
    log = Path(tmp_path / "system.log")
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"2026-11-25 09:00:00 cancelled customer={TARGET} email={EMAIL} "
                 "reason=moving\n")
    ok(cli(config, "parse"))
    sent_before = len(standin.events)
    ok(cli(config, "send"))
    assert len(standin.events) == sent_before and not standin_knows_her(standin)
    status = json.loads(cli(config, "status", "--json").stdout)
    assert status["erasures"] == {"requests": 1, "skipped": 1}
    listing = ok(cli(config, "forget", "--list", "--json"))
    row = json.loads(listing.splitlines()[0])
    assert row["skipped"] == 1 and row["state"] == "done" and row["klaviyo_status"] == 202
    assert EMAIL not in listing and TARGET not in listing.replace('"id": 1', "")

    # Asking again asks Klaviyo nothing more.
    again = json.loads(ok(cli(config, "forget", "--email", EMAIL, "--json")))
    assert len(standin.account.deletion_requests) == 1
    assert "not asked again" in again["klaviyo"]
    assert json.loads(ok(cli(config, "forget", "--list", "--json")).splitlines()[0])[
        "state"] == "done"


def end_state(state_url: str, standin: KlaviyoStandIn) -> dict[str, Any]:
    engine = open_state(state_url)
    try:
        with engine.connect() as conn:
            erasure = conn.execute(sa.text(
                "SELECT state, klaviyo_status FROM erasures WHERE asked_by = 'email'")).all()
    finally:
        engine.dispose()
    return {**counts(state_url), "erasures": [tuple(r) for r in erasure],
            "klaviyo_knows_her": standin.account.profile_id_for("email", EMAIL) is not None}


@pytest.fixture
def separate(state_url: str) -> Iterator[Callable[[Path], str]]:
    """A state database of its own per world: a new SQLite file, or a new PG schema
    (dropped afterwards)."""
    url = sa.make_url(state_url)
    made: list[str] = []

    def new(folder: Path) -> str:
        if url.get_backend_name() == "sqlite":
            return f"sqlite:///{folder / 'state.db'}"
        schema = f"{url.query['options'].split('search_path=')[1]}_{folder.name}"[:60]
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        made.append(schema)
        return url.update_query_dict({"options": f"-csearch_path={schema}"}) \
            .render_as_string(hide_password=False)

    if url.get_backend_name() == "sqlite":
        yield new
        return
    admin = sa.create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    yield new
    with admin.connect() as conn:
        for schema in made:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.mark.slow
def test_sigkill_during_forget_then_forget_again_ends_like_a_clean_run(
        tmp_path: Path, separate: Callable[[Path], str], make_standin: Any) -> None:
    clean_standin = make_standin()
    clean = tmp_path / "clean"
    clean.mkdir()
    clean_url = separate(clean)
    config = world(clean, clean_url, clean_standin)
    ok(cli(config, "forget", "--email", EMAIL))
    expected = end_state(clean_url, clean_standin)
    rng = random.Random(13)
    for trial in range(10):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        standin = make_standin()
        url = separate(folder)
        config = world(folder, url, standin)
        env = dict(os.environ, KLAVIYO_API_KEY=API_KEY,
                   PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        proc = subprocess.Popen([sys.executable, "-m", "klaviyo_sync", "--config",
                                 str(config), "forget", "--email", EMAIL], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        ok(cli(config, "forget", "--email", EMAIL))
        assert end_state(url, standin) == expected, f"trial {trial}"


@pytest.mark.slow
def test_a_forgotten_person_is_never_subscribed_and_loses_consent_records(
        tmp_path: Path, state_url: str, standin: KlaviyoStandIn) -> None:
    config = world(tmp_path, state_url, standin)
    config.write_text(config.read_text(encoding="utf-8").replace(
        "[logging]", "[consent]\nenabled = true\n[logging]"), encoding="utf-8")

    def business_shows_her_active(at: str) -> None:
        with sqlite3.connect(tmp_path / "shop.db") as db:
            db.execute(f"UPDATE customers SET status = 'Active', updated_at = '{at}' "
                       f"WHERE id = {TARGET}")

    business_shows_her_active("2026-11-30 09:00:00")
    ok(cli(config, "consent"))
    subscribed = [s.email for s in standin.subscriptions]
    assert subscribed.count(EMAIL) == 1 and len(subscribed) == len(OTHERS) + 1
    done = json.loads(ok(cli(config, "forget", "--email", EMAIL, "--json")))
    assert done["removed"]["consent_sync"] == 1
    # The business touches her row again (still opted in): the consent pass leaves her out,
    # or it would re-create the profile Klaviyo just deleted.
    business_shows_her_active("2026-12-01 09:00:00")
    report = ok(cli(config, "consent", "--json"))
    assert [s.email for s in standin.subscriptions].count(EMAIL) == 1
    assert '"erased_skipped": 1' in report
    assert EMAIL.encode() not in state_bytes(state_url)
