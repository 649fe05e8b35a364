"""The daemon's scheduler with fake passes: isolation of failures, shutdown, watchdog, reload.

The passes are fakes (the real ones are exercised by tests/acceptance/test_daemon_*.py);
the scheduler, the jobs, the state database and the notify socket are real.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from klaviyo_sync import config
from klaviyo_sync.daemon.metrics import Metrics
from klaviyo_sync.daemon.service import Daemon, Runtime
from klaviyo_sync.daemon.systemd import Notifier
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.state.db import open_state


class FakePasses:
    """Counts runs; each pass's behaviour is a function the test sets."""

    has_orders = True
    has_consent = True
    has_catalog = True
    has_profiles = True

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.behaviour: dict[str, Any] = {}
        self.closed = False
        self.ran = threading.Condition()
        self.requests: list[tuple[str, int | None, float]] = [
            ("POST /api/events", 202, 35.0), ("POST /api/events", 429, 5.0)]

    def _run(self, name: str, stop: threading.Event) -> Any:
        with self.ran:
            self.runs[name] = self.runs.get(name, 0) + 1
            self.ran.notify_all()
        action = self.behaviour.get(name)
        return action(stop) if action else None

    def tail(self, stop: threading.Event) -> Any:
        return self._run("tail", stop)

    def send(self, stop: threading.Event) -> Any:
        return self._run("send", stop)

    def retry(self, stop: threading.Event) -> Any:
        return self._run("retry", stop)

    def orders(self, stop: threading.Event) -> Any:
        return self._run("orders", stop)

    def consent(self, stop: threading.Event) -> Any:
        return self._run("consent", stop)

    def optouts(self, stop: threading.Event) -> Any:
        return self._run("optouts", stop)

    def catalog(self, stop: threading.Event) -> Any:
        return self._run("catalog", stop)

    def catalog_all(self, stop: threading.Event) -> Any:
        return self._run("catalog_all", stop)

    def profiles(self, stop: threading.Event) -> Any:
        return self._run("profiles", stop)

    def prune(self, stop: threading.Event) -> Any:
        return self._run("prune", stop)

    def new_requests(self) -> list[tuple[str, int | None, float]]:
        requests, self.requests = self.requests, []
        return requests

    def close(self) -> None:
        self.closed = True

    def wait_for(self, name: str, count: int, timeout_s: float = 10.0) -> bool:
        with self.ran:
            return self.ran.wait_for(lambda: self.runs.get(name, 0) >= count, timeout_s)


def fast_settings(tmp_path: Path, **daemon: Any) -> config.Settings:
    return config.from_mapping({
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "log": {"path": str(tmp_path / "system.log")},
        "schedule": {"tail_s": 0.1, "send_s": 0.1, "orders_s": 0.1, "retry_s": 0.1,
                     "consent_s": 0.1, "optouts_s": 0.1},
        "daemon": {"status_interval_s": 0.2, "job_backoff_max_s": 0.2,
                   "shutdown_grace_s": 5.0, **daemon},
    })


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    eng = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    yield eng
    eng.dispose()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def messages_until(sock: socket.socket, wanted: str, limit: int = 200) -> list[str]:
    seen = []
    for _ in range(limit):
        msg = sock.recv(4096).decode()
        seen.append(msg)
        if wanted in msg:
            return seen
    raise AssertionError(f"{wanted!r} never arrived in {seen}")


def test_a_raising_job_does_not_stop_the_others(tmp_path: Path, engine: sa.Engine) -> None:
    passes = FakePasses()

    def broken(_stop: threading.Event) -> None:
        raise RuntimeError("tail exploded")

    passes.behaviour["tail"] = broken
    metrics = Metrics()
    runtime = Runtime(fast_settings(tmp_path), engine, passes, Notifier(None), metrics)
    with capture_logs() as logs:
        runtime.start()
        try:
            assert passes.wait_for("tail", 3)
            sends_then = passes.runs["send"]
            assert passes.wait_for("send", sends_then + 3)
            assert passes.wait_for("orders", 3) and passes.wait_for("retry", 3)
            assert passes.wait_for("consent", 3) and passes.wait_for("optouts", 3)
        finally:
            assert runtime.stop(5)
    crashed = [e for e in logs if e["event"] == "job_crashed"]
    assert crashed and all(e["job"] == "tail" for e in crashed)
    assert crashed[-1]["failures"] >= 3
    assert passes.closed
    assert metrics.job_runs.labels("tail", "error")._value.get() >= 3
    assert metrics.job_runs.labels("send", "ok")._value.get() >= 3
    assert metrics.requests.labels("POST /api/events", "202")._value.get() == 1
    assert metrics.requests.labels("POST /api/events", "429")._value.get() == 1


def test_stop_lets_the_pass_in_flight_finish_its_batch(tmp_path: Path,
                                                       engine: sa.Engine) -> None:
    passes = FakePasses()
    batches: list[str] = []
    started = threading.Event()

    def draining(stop: threading.Event) -> str:
        started.set()
        while not stop.is_set():  # one "batch" after another until told to stop
            time.sleep(0.05)
        time.sleep(0.2)  # the batch in hand: finish and commit it
        batches.append("committed")
        return "done"

    passes.behaviour["send"] = draining
    runtime = Runtime(fast_settings(tmp_path), engine, passes, Notifier(None), Metrics())
    runtime.start()
    assert started.wait(5)
    assert runtime.stop(5) is True
    assert batches == ["committed"] and passes.closed
    runs = dict(passes.runs)
    time.sleep(0.3)
    assert passes.runs == runs  # nothing started after the stop


def test_a_pass_that_ignores_stop_is_left_behind_after_the_grace(tmp_path: Path,
                                                                 engine: sa.Engine) -> None:
    passes = FakePasses()
    release = threading.Event()
    started = threading.Event()

    def stubborn(_stop: threading.Event) -> None:
        started.set()
        release.wait(10)

    passes.behaviour["orders"] = stubborn
    runtime = Runtime(fast_settings(tmp_path), engine, passes, Notifier(None), Metrics())
    runtime.start()
    assert started.wait(5)
    with capture_logs() as logs:
        assert runtime.stop(0.3) is False
    assert not passes.closed  # never close connections under a running pass
    assert [e["jobs"] for e in logs if e["event"] == "shutdown_grace_expired"] == [["orders"]]
    release.set()


def test_watchdog_pings_from_the_scheduler_and_stops_when_a_pass_hangs(
        tmp_path: Path, engine: sa.Engine, receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    passes = FakePasses()
    hang = threading.Event()
    hanging = threading.Event()
    release = threading.Event()

    def maybe_hang(_stop: threading.Event) -> None:
        if hang.is_set():
            hanging.set()
            release.wait(10)

    passes.behaviour["orders"] = maybe_hang
    settings = fast_settings(tmp_path, hung_job_s=0.5)
    notifier = Notifier(path, watchdog_s=0.1)
    runtime = Runtime(settings, engine, passes, notifier, Metrics())
    runtime.start()
    try:
        pings = [m for m in messages_until(sock, "WATCHDOG=1") if m == "WATCHDOG=1"]
        for _ in range(3):
            messages_until(sock, "WATCHDOG=1")
        assert pings
        with capture_logs() as logs:
            hang.set()
            assert hanging.wait(5)
            time.sleep(1.0)  # past hung_job_s: the pings must have stopped
            sock.setblocking(False)
            try:
                while True:  # what was sent before
                    sock.recv(4096)
            except BlockingIOError:
                pass
            sock.settimeout(0.1)
            late = []
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:  # STATUS= lines keep coming; WATCHDOG=1 not
                with contextlib.suppress(TimeoutError):
                    late.append(sock.recv(4096).decode())
        assert "WATCHDOG=1" not in late
        assert any(e["event"] == "job_hung" and e["job"] == "orders" for e in logs)
    finally:
        release.set()
        runtime.stop(5)
        notifier.close()


def test_the_daemon_reports_ready_reloads_and_stops(tmp_path: Path,
                                                    receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    built: list[FakePasses] = []
    reloads = iter([ConfigError("settings.toml: [log] unknown key 'pathh'"),
                    fast_settings(tmp_path)])

    def factory(_settings: config.Settings, _engine: sa.Engine, _worker: str) -> FakePasses:
        built.append(FakePasses())
        return built[-1]

    def load() -> config.Settings:
        value = next(reloads)
        if isinstance(value, Exception):
            raise value
        return value

    daemon = Daemon(fast_settings(tmp_path), Notifier(path), load_settings=load,
                    passes_factory=factory, worker_id="test:1")
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run(handle_signals=False)))
    with capture_logs() as logs:
        thread.start()
        ready = messages_until(sock, "READY=1")[-1]
        assert ready.startswith("READY=1\nSTATUS=healthy: 0 pending") or "degraded" in ready
        daemon.request_reload()  # an invalid file: refused, the old settings keep running
        assert "reload refused" in messages_until(sock, "reload refused")[-1]
        daemon.request_reload()
        messages_until(sock, "RELOADING=1")
        messages_until(sock, "READY=1")
        assert built[0].closed and len(built) == 2
        assert built[1].wait_for("send", 1)
        daemon.request_stop()
        messages_until(sock, "STOPPING=1")
        thread.join(10)
    assert codes == [0] and built[1].closed and not daemon.abandoned_threads
    events = [e["event"] for e in logs]
    assert "reload_refused" in events and "reloading" in events and "daemon_stopped" in events


def test_the_daemon_waits_for_the_state_database_before_ready(
        receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    settings = config.from_mapping({"state": {"url": "postgresql://nobody@127.0.0.1:1/none"}})
    daemon = Daemon(settings, Notifier(path), passes_factory=lambda *a: FakePasses())
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run(handle_signals=False)))
    thread.start()
    waiting = messages_until(sock, "STATUS=waiting for the state database")
    assert not any("READY=1" in m for m in waiting)
    daemon.request_stop()
    thread.join(10)
    assert codes == [0] and daemon.runtime is None


def test_the_catalog_changes_pass_runs_on_its_interval_and_the_full_pass_on_its_cron(
        tmp_path: Path, engine: sa.Engine) -> None:
    passes = FakePasses()
    settings = config.from_mapping({
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "log": {"path": str(tmp_path / "system.log")},
        "schedule": {"tail_s": 5.0, "send_s": 5.0, "orders_s": 5.0, "retry_s": 5.0,
                     "catalog_changes_s": 0.1, "catalog_cron": "15 2 * * *"},
    })
    runtime = Runtime(settings, engine, passes, Notifier(None), Metrics())
    runtime.start()
    try:
        assert passes.wait_for("catalog", 3)
        full = runtime.scheduler.get_job("catalog_all")
        assert full is not None and "catalog_all" not in passes.runs
        fire = full.trigger.get_next_fire_time(None, datetime(2026, 3, 1, 5, 0, tzinfo=UTC))
        assert fire == datetime(2026, 3, 2, 2, 15, tzinfo=UTC)
    finally:
        assert runtime.stop(5)


def test_a_pass_that_keeps_failing_is_recorded_and_makes_health_fail(
        tmp_path: Path, engine: sa.Engine) -> None:
    from klaviyo_sync.daemon.health import Health, compute_status

    passes = FakePasses()

    def unreadable(_stop: threading.Event) -> None:
        from klaviyo_sync.exceptions import LogSourceError

        raise LogSourceError("log /srv/x: is a directory")

    passes.behaviour["tail"] = unreadable
    passes.behaviour["send"] = lambda _stop: "sent"
    settings = fast_settings(tmp_path)
    runtime = Runtime(settings, engine, passes, Notifier(None), Metrics())
    runtime.start()
    try:
        assert passes.wait_for("tail", 4) and passes.wait_for("send", 2)
    finally:
        assert runtime.stop(5)
    status = compute_status(settings, engine)
    assert status.passes["tail"].failures >= 3
    assert status.passes["tail"].last_error == "LogSourceError: log /srv/x: is a directory"
    assert status.passes["send"].failures == 0 and status.passes["send"].last_ok_at
    assert status.health is Health.FAILING and status.decided_by == "tail_pass"
    # A pass that did nothing (a standby without the role returns None) records nothing.
    assert "orders" not in status.passes


def test_a_scheduler_that_stops_calling_the_jobs_is_failing(tmp_path: Path,
                                                            engine: sa.Engine) -> None:
    from klaviyo_sync.daemon.health import Health

    passes = FakePasses()
    (tmp_path / "system.log").write_bytes(b"")
    runtime = Runtime(fast_settings(tmp_path), engine, passes, Notifier(None), Metrics())
    runtime.start()
    try:
        assert passes.wait_for("tail", 2)
        assert runtime.board.refresh().health is Health.HEALTHY
        runtime.loop.shutdown()  # frozen: nothing calls the jobs any more
        for job in runtime.jobs:  # as if it had been frozen for two minutes
            job.last_called_mono -= 120
        status = runtime.board.refresh()
        assert status.health is Health.FAILING and status.decided_by == "scheduler"
        assert "tail" in status.reasons[0]
    finally:
        assert runtime.stop(5)


# The interval loop reads the monotonic clock in this module; the ignore list keeps
# freezegun from faking it there, so only the wall clock is stepped.
_MONOTONIC_MODULES = ["klaviyo_sync.daemon.ticker"]


def test_a_backward_wall_clock_step_does_not_freeze_the_jobs(
        tmp_path: Path, engine: sa.Engine) -> None:
    from freezegun import freeze_time

    passes = FakePasses()
    runtime = Runtime(fast_settings(tmp_path), engine, passes, Notifier(None), Metrics())
    with freeze_time("2026-06-01 12:00:00", tick=True, ignore=_MONOTONIC_MODULES) as wall:
        runtime.start()
        try:
            assert passes.wait_for("tail", 2)
            wall.move_to("2026-06-01 11:00:00")  # an NTP step back by an hour
            after_step = passes.runs["tail"]
            assert passes.wait_for("tail", after_step + 5), "the jobs froze after the step"
            assert passes.wait_for("send", passes.runs["send"] + 3)
        finally:
            assert runtime.stop(5)


def test_a_forward_wall_clock_step_does_not_make_a_running_job_look_hung(
        tmp_path: Path, engine: sa.Engine, receiver: tuple[str, socket.socket]) -> None:
    from freezegun import freeze_time

    path, sock = receiver
    passes = FakePasses()
    started, release = threading.Event(), threading.Event()

    def long_orders(_stop: threading.Event) -> None:
        started.set()
        release.wait(30)

    passes.behaviour["orders"] = long_orders
    notifier = Notifier(path, watchdog_s=0.1)
    runtime = Runtime(fast_settings(tmp_path, hung_job_s=600.0), engine, passes, notifier,
                      Metrics())
    with freeze_time("2026-06-01 12:00:00", tick=True, ignore=_MONOTONIC_MODULES) as wall:
        runtime.start()
        try:
            assert started.wait(10)
            wall.move_to("2026-06-01 14:00:00")  # two hours on the wall, none in truth
            with capture_logs() as logs:
                seen = messages_until(sock, "WATCHDOG=1")
                seen += messages_until(sock, "WATCHDOG=1")
            assert not [e for e in logs if e["event"] == "job_hung"], logs
            assert "WATCHDOG=1" in seen[-1]
        finally:
            release.set()
            runtime.stop(5)
            notifier.close()
