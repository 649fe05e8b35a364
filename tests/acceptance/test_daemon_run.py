"""Acceptance: `klaviyo-sync run` as systemd would run it, against the Klaviyo stand-in.

The daemon is a real subprocess with NOTIFY_SOCKET on a datagram socket of the test and
WATCHDOG_USEC set; the log, the business database (SQLite, the sample schema) and the
state database are real files; the stand-in is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klaviyo_sync.clock import utcnow
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state
from tests.acceptance.shop_schema import SHOP_DDL
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY

pytestmark = pytest.mark.slow

LOG_TYPES = ("started.signup", "cancelled", "contact.form", "failed.payment",
             "referral.credit", "shipping.email")


def log_line(n: int, event_type: str | None = None) -> str:
    """One event line of the default kv format; ``n`` makes it (and its identity) unique."""
    when = (utcnow() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    kind = event_type or LOG_TYPES[n % len(LOG_TYPES)]
    fields = {
        "started.signup": f"first_name=Ann last_name=Lee box=705 value={40 + n}.95",
        "cancelled": f'reason="moving away {n}"',
        "contact.form": f'name="Ann Lee" subject="Box {n}" message="Where is it?"',
        "failed.payment": f"amount={n}.50 order=A{n} reason=declined",
        "referral.credit": f"amount=10.00 referred_customer={9000 + n}",
        "shipping.email": f"order=S{n} tracking=TRK{n} carrier=UPS",
    }[kind]
    return f"{when} {kind} customer={1000 + n} email=c{n}@example.com {fields}\n"


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        # Noise the tailer must skip.
        fh.write(f"{utcnow():%Y-%m-%d %H:%M:%S} login customer=1 ip=10.0.0.1\n")


def create_business_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SHOP_DDL)
        db.execute("INSERT INTO customers VALUES (77, 'ord@example.com', 'Ord', 'Er', "
                   "'Active', 'weekly', 'Classic', '2026-01-02', 1, '2026-01-02 10:00:00')")


def add_order(path: Path, order_id: int, items: int) -> None:
    now = f"{utcnow():%Y-%m-%d %H:%M:%S}"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO orders VALUES (?, 77, 'placed', ?, 'USD', ?, ?)",
                   (order_id, 12.5 * items, now, now))
        db.executemany("INSERT INTO order_items VALUES (?, ?, ?, ?, 1, 12.5, 'Coffee')",
                       [(order_id, 500 + i, f"SKU{i}", f"Beans {i}") for i in range(items)])


def write_settings(path: Path, *, state_url: str, log: Path, base_url: str,
                   business: Path | None = None, **sections: dict[str, object]) -> Path:
    data: dict[str, dict[str, object]] = {
        "state": {"url": state_url},
        "log": {"path": str(log)},
        "klaviyo": {"base_url": base_url, "respect_published_limits": False,
                    "timeout_s": 5.0},
        "sender": {"lease_s": 5.0, "backoff_base_s": 0.5, "backoff_max_s": 1.0},
        "schedule": {"tail_s": 0.3, "send_s": 0.5, "orders_s": 0.5, "retry_s": 1.0},
        "daemon": {"status_interval_s": 0.5, "shutdown_grace_s": 8.0},
        "logging": {"level": "info", "format": "json"},
    }
    if business is not None:
        data["business"] = {"url": f"sqlite:///{business}"}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    text = []
    for section, values in data.items():
        text.append(f"[{section}]")
        text += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


class NotifySocket:
    """The service manager's end of sd_notify: collects every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(min(left, 0.5))
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(65536).decode())
        return True

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


def start_daemon(config: Path, notify: NotifySocket | None, stderr: Path,
                 watchdog_usec: int = 1_000_000) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_PID", None)
    if notify is not None:
        env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(watchdog_usec))
    with stderr.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "klaviyo_sync", "--config", str(config), "run"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)


def log_events(stderr: Path) -> list[dict[str, object]]:
    out = []
    for line in stderr.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout_s)
    return code, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (comments skipped)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_run_under_a_service_manager_delivers_and_stops_cleanly(
        tmp_path: Path, standin: KlaviyoStandIn) -> None:
    log = tmp_path / "system.log"
    business = tmp_path / "business.db"
    create_business_db(business)
    append(log, [log_line(n) for n in range(3)])
    add_order(business, 1, items=2)
    state_url = f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    port = free_port()
    config = write_settings(tmp_path / "settings.toml", state_url=state_url, log=log,
                            base_url=standin.base_url, business=business,
                            daemon={"http_listen": f"127.0.0.1:{port}"})
    notify = NotifySocket(tmp_path / "notify.sock")
    stderr = tmp_path / "daemon.log"
    proc = start_daemon(config, notify, stderr, watchdog_usec=1_000_000)
    try:
        assert notify.wait_for(lambda m: any("READY=1" in x for x in m), 30), \
            stderr.read_text()
        ready = next(x for x in notify.messages if "READY=1" in x)
        assert "STATUS=" in ready and "pending" in ready
        # WATCHDOG_USEC = 1 s: a ping every 0.5 s.
        assert notify.wait_for(lambda m: notify.count("WATCHDOG=1") >= 4, 10)

        # New lines and new orders while it runs.
        append(log, [log_line(n) for n in range(3, 12)])
        add_order(business, 2, items=3)
        expected_log = 12
        expected_orders = {"order:1:placed", "order:1:item:1", "order:1:item:2",
                           "order:2:placed", "order:2:item:1", "order:2:item:2",
                           "order:2:item:3"}

        def delivered() -> bool:
            ids = {e.unique_id for e in standin.events}
            from_log = [e for e in standin.events if not e.unique_id.startswith("order:")]
            return expected_orders <= ids and len(from_log) >= expected_log

        assert wait_until(delivered, 30), (len(standin.events), stderr.read_text()[-3000:])
        assert any(m.startswith("STATUS=") for m in notify.messages)

        # The same figures over HTTP: /healthz and Prometheus /metrics.
        def healthz() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200
                return dict(json.loads(r.read()))

        # Acknowledgements land just after the stand-in records; the status is cached 0.5 s.
        assert wait_until(lambda: healthz()["queue"]["sent"] == 19, 10), healthz()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = metric_values(resp.read().decode())
        assert metrics["klaviyo_sync_log_lines_read_total"] >= 12 + 2  # events + noise
        assert metrics['klaviyo_sync_events_enqueued_total{source="log"}'] == 12
        assert metrics['klaviyo_sync_events_enqueued_total{source="order"}'] == 7
        assert sum(v for k, v in metrics.items()
                   if k.startswith("klaviyo_sync_klaviyo_requests_total{")
                   and 'status_code="202"' in k) >= 1
        assert metrics["klaviyo_sync_klaviyo_request_duration_seconds_count"] >= 1

        # SIGHUP (systemctl reload): settings read again, passes rebuilt, READY=1 again.
        proc.send_signal(signal.SIGHUP)
        assert notify.wait_for(lambda m: notify.count("READY=1") >= 2, 15)
        assert notify.count("RELOADING=1") == 1
        append(log, [log_line(12)])
        expected_log += 1
        assert wait_until(delivered, 30), stderr.read_text()[-3000:]
        code, took = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, stderr.read_text()[-3000:]
    assert took < 10
    assert notify.wait_for(lambda m: notify.count("STOPPING=1") >= 1, 2)
    notify.close()
    recorded = [e.unique_id for e in standin.events]
    assert len(recorded) == len(set(recorded)) == expected_log + len(expected_orders)
    metrics = sorted({e.metric for e in standin.events})
    assert {"Placed Order", "Ordered Product", *LOG_TYPES} == set(metrics)
    engine = open_state(state_url)
    try:
        counts = QueueStore(engine).counts()
        with engine.connect() as conn:
            leased = conn.execute(sa.text(
                "SELECT count(*) FROM events WHERE state = 'leased' OR lease_until IS NOT NULL"
            )).scalar()
    finally:
        engine.dispose()
    assert counts == {"pending": 0, "leased": 0, "sent": len(recorded), "dead": 0}
    assert leased == 0
    events = [e["event"] for e in log_events(stderr)]
    assert events.count("daemon_started") == 2 and "reloading" in events
    assert "daemon_stopped" in events
    assert "job_crashed" not in events


def test_sigterm_during_a_slow_drain_exits_0_within_10_s_and_loses_nothing(
        tmp_path: Path, standin: KlaviyoStandIn) -> None:
    log = tmp_path / "system.log"
    append(log, [log_line(n) for n in range(300)])
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = write_settings(tmp_path / "settings.toml", state_url=state_url, log=log,
                            base_url=standin.base_url,
                            sender={"claim_batch": 10, "batch_max_events": 10,
                                    "single_threshold": 0, "concurrency": 1})
    standin.latency_s = 0.2  # ~0.2 s a batch: SIGTERM lands in the middle of the drain
    stderr = tmp_path / "daemon.log"
    proc = start_daemon(config, None, stderr)
    try:
        assert wait_until(lambda: len(standin.events) >= 20, 30), stderr.read_text()[-2000:]
        code, took = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0 and took < 10, stderr.read_text()[-2000:]
    engine = open_state(state_url)
    try:
        counts = QueueStore(engine).counts()
    finally:
        engine.dispose()
    assert counts["leased"] == 0, "the batch in flight was not finished and acknowledged"
    assert counts["sent"] == len(standin.events) and counts["dead"] == 0
    assert counts["sent"] + counts["pending"] == 300  # the rest waits for the next start
    assert counts["pending"] > 0, "the drain finished before SIGTERM: test proves nothing"


def test_a_second_daemon_on_one_sqlite_state_file_is_refused(
        tmp_path: Path, standin: KlaviyoStandIn) -> None:
    log = tmp_path / "system.log"
    log.write_text("")
    state = tmp_path / "state" / "state.db"
    config = write_settings(tmp_path / "settings.toml", state_url=f"sqlite:///{state}",
                            log=log, base_url=standin.base_url)
    notify = NotifySocket(tmp_path / "notify.sock")
    first = start_daemon(config, notify, tmp_path / "first.err")
    try:
        assert notify.wait_for(lambda m: any("READY=1" in x for x in m), 30)
        second = subprocess.run(
            [sys.executable, "-m", "klaviyo_sync", "--config", str(config), "run"],
            env=dict(os.environ, KLAVIYO_API_KEY=API_KEY,
                     PYTHONPATH=str(Path(__file__).resolve().parents[2])),
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert f"another klaviyo-sync daemon (pid {first.pid})" in second.stderr
        assert str(state) in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # the first one carries on
    finally:
        code, _ = stop(first)
        notify.close()
    assert code == 0
    # The lock goes with the process: a new daemon may start at once.
    again = start_daemon(config, None, tmp_path / "again.err")
    try:
        assert wait_until(lambda: any(e.get("event") == "daemon_started"
                                      for e in log_events(tmp_path / "again.err")), 30)
    finally:
        assert stop(again)[0] == 0


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_log_path_that_is_no_regular_file_fails_the_tail_pass_only(
        tmp_path: Path, standin: KlaviyoStandIn, kind: str) -> None:
    """The tail pass fails with one readable line each time; orders and send go on."""
    log = tmp_path / "system.log"
    if kind == "fifo":
        os.mkfifo(log)
    else:
        log.mkdir()
    business = tmp_path / "business.db"
    create_business_db(business)
    add_order(business, 1, items=1)
    state_url = f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    config = write_settings(tmp_path / "settings.toml", state_url=state_url, log=log,
                            base_url=standin.base_url, business=business)
    stderr = tmp_path / "daemon.log"
    proc = start_daemon(config, None, stderr)
    try:
        wanted = {"order:1:placed", "order:1:item:1"}
        assert wait_until(lambda: wanted <= {e.unique_id for e in standin.events}, 30), \
            stderr.read_text()[-3000:]
        add_order(business, 2, items=1)  # later passes too, while the tail keeps failing
        wanted |= {"order:2:placed", "order:2:item:1"}
        assert wait_until(lambda: wanted <= {e.unique_id for e in standin.events}, 30), \
            stderr.read_text()[-3000:]
        code, _ = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, stderr.read_text()[-3000:]
    events = log_events(stderr)
    failed = [e for e in events if e["event"] == "job_failed" and e.get("job") == "tail"]
    assert failed and all(str(log) in str(e["error"]) for e in failed)
    assert not any(e["event"] == "job_crashed" for e in events)
