"""Job wrappers: back-off decisions under freezegun, failures contained and logged."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger
from freezegun import freeze_time
from structlog.testing import capture_logs

from klaviyo_sync.daemon.jobs import (
    Job,
    JobRecord,
    backoff_s,
    hung_since,
    record_failure,
    record_success,
    should_run,
)
from klaviyo_sync.exceptions import StateError

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.mark.parametrize(("failures", "expected"), [
    (0, 0.0), (1, 0.0), (2, 4.0), (3, 8.0), (4, 16.0), (8, 256.0), (9, 300.0), (30, 300.0),
])
def test_backoff_doubles_from_the_second_failure_and_is_capped(failures: int,
                                                               expected: float) -> None:
    assert backoff_s(2.0, failures, 300.0) == expected


def test_backoff_is_never_shorter_than_the_interval() -> None:
    # A cap below the interval must not make a failing job run more often than a healthy one.
    assert backoff_s(60.0, 5, 10.0) == 60.0


def test_a_job_backs_off_after_repeated_failures_and_recovers() -> None:
    record = JobRecord()
    for _ in range(3):
        record = record_failure(record, T0, "boom")
    assert record.failures == 3
    # 3 failures at 2 s interval: wait 2 * 2^2 = 8 s after the last one.
    assert not should_run(record, T0 + timedelta(seconds=7.9), 2.0, 300.0)
    assert should_run(record, T0 + timedelta(seconds=8), 2.0, 300.0)
    record = record_success(record, T0 + timedelta(seconds=8))
    assert record.failures == 0 and record.last_error is None
    assert should_run(record, T0 + timedelta(seconds=8), 2.0, 300.0)


def test_one_failure_does_not_delay_the_next_regular_run() -> None:
    record = record_failure(JobRecord(), T0, "boom")
    assert should_run(record, T0, 2.0, 300.0)


def test_a_run_is_hung_only_past_the_threshold() -> None:
    record = JobRecord(running_since=T0, running_since_s=1000.0)  # monotonic seconds
    assert hung_since(record, 1059.0, 60.0) is None
    assert hung_since(record, 1061.0, 60.0) == 61.0
    assert hung_since(record, 1000.0 + 5 * 3600, 0) is None  # 0 disables the check
    assert hung_since(JobRecord(), 1000.0 + 5 * 3600, 60.0) is None


def test_the_prune_cron_fires_daily_at_the_set_hour_in_utc() -> None:
    trigger = CronTrigger.from_crontab("0 4 * * *", timezone=UTC)
    now = datetime(2026, 3, 1, 5, 30, tzinfo=UTC)
    first = trigger.get_next_fire_time(None, now)
    assert first == datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(first, first + timedelta(seconds=1)) == datetime(
        2026, 3, 3, 4, 0, tzinfo=UTC)


class Pass:
    """A fake pass that fails a set number of times, then succeeds."""

    def __init__(self, fail_times: int, error: Exception | None = None) -> None:
        self.fail_times = fail_times
        self.error = error or RuntimeError("disk on fire")
        self.calls = 0

    def __call__(self, stop: threading.Event) -> str:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.error
        return f"report {self.calls}"


def test_a_raising_pass_is_logged_with_context_and_backs_off() -> None:
    fake = Pass(fail_times=3)
    results: list[object] = []
    job = Job("tail", fake, 2.0, threading.Event(), backoff_max_s=300.0,
              on_result=lambda name, result, _s: results.append((name, result)))
    with freeze_time(T0) as clock, capture_logs() as logs:
        job()  # failure 1
        job()  # failure 2 (one failure costs nothing extra)
        assert fake.calls == 2
        clock.tick(3.9)
        job()  # 2 failures: 4 s back-off, not yet
        assert fake.calls == 2
        clock.tick(0.1)
        job()  # failure 3
        assert fake.calls == 3
        clock.tick(7.9)
        job()
        assert fake.calls == 3
        clock.tick(0.1)
        job()  # succeeds
    assert fake.calls == 4
    assert job.record.failures == 0 and job.record.last_ok_at is not None
    crashed = [e for e in logs if e["event"] == "job_crashed"]
    assert [e["failures"] for e in crashed] == [1, 2, 3]
    assert crashed[0]["job"] == "tail" and crashed[0]["error"] == "disk on fire"
    assert crashed[0]["log_level"] == "error" and crashed[0].get("exc_info")
    assert [r[0] for r in results] == ["tail"] * 4
    assert isinstance(results[0][1], RuntimeError) and results[-1][1] == "report 4"


def test_a_known_error_is_one_line_without_traceback() -> None:
    job = Job("send", Pass(1, StateError("state database unreachable")), 10.0,
              threading.Event())
    with capture_logs() as logs:
        job()
    (entry,) = [e for e in logs if e["event"] == "job_failed"]
    assert entry["error_type"] == "StateError" and "exc_info" not in entry
    assert entry["next_try_in_s"] == 10.0


def test_a_database_outage_is_one_line_without_traceback() -> None:
    outage = sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    job = Job("tail", Pass(1, outage), 2.0, threading.Event())
    with capture_logs() as logs:
        job()
    (entry,) = [e for e in logs if e["event"] == "job_failed"]
    assert entry["error_type"] == "OperationalError" and "exc_info" not in entry


def test_no_run_starts_once_stop_is_set() -> None:
    fake = Pass(0)
    stop = threading.Event()
    job = Job("send", fake, 10.0, stop)
    stop.set()
    job()
    assert fake.calls == 0


def test_a_job_never_runs_twice_at_once() -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(stop: threading.Event) -> None:
        calls.append(1)
        entered.set()
        release.wait(5)

    job = Job("orders", slow, 60.0, threading.Event())
    worker = threading.Thread(target=job)
    worker.start()
    assert entered.wait(5)
    assert job.running
    job()  # the scheduler firing again while the first run is in flight
    release.set()
    worker.join(5)
    assert calls == [1] and not job.running
    assert job.wait_idle(0)


def test_a_failing_result_hook_does_not_fail_the_pass() -> None:
    def hook(*_args: object) -> None:
        raise RuntimeError("metrics broke")

    job = Job("tail", Pass(0), 2.0, threading.Event(), on_result=hook)
    with capture_logs() as logs:
        job()
    assert job.record.failures == 0
    assert any(e["event"] == "job_result_hook_failed" for e in logs)


def test_the_back_off_runs_on_the_monotonic_clock_whatever_the_wall_clock_does() -> None:
    record = JobRecord()
    for _ in range(3):  # 3 failures at a 2 s interval: 8 s of back-off
        record = record_failure(record, T0, "boom", now_s=1000.0)
    # The wall clock stepped back an hour: the back-off still ends 8 s after the failure.
    back = T0 - timedelta(hours=1)
    assert not should_run(record, back, 2.0, 300.0, now_s=1007.9)
    assert should_run(record, back, 2.0, 300.0, now_s=1008.0)
    # Stepped forward an hour: the back-off is not cut short either.
    ahead = T0 + timedelta(hours=1)
    assert not should_run(record, ahead, 2.0, 300.0, now_s=1001.0)
    assert should_run(record_success(record, ahead), ahead, 2.0, 300.0, now_s=1001.0)
