"""Health decisions (pure) and the tail's distance to the end of the log (real files)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from klaviyo_sync import config
from klaviyo_sync.config import StatusSettings
from klaviyo_sync.daemon.health import (
    Health,
    Status,
    TailStatus,
    assess,
    compute_status,
    tail_status,
)
from klaviyo_sync.exceptions import StateError
from klaviyo_sync.state.db import create_engine

NOW = datetime(2026, 3, 1, 12, 0, 0)
LIMITS = StatusSettings(degraded_backlog_age_s=900, failing_backlog_age_s=7200,
                        degraded_dead_letters=1, degraded_tail_bytes_behind=1000,
                        degraded_orders_pass_age_s=3600)


def status(**changes: Any) -> Status:
    base = Status(
        checked_at=NOW, queue={"pending": 3, "leased": 0, "sent": 10, "dead": 0},
        oldest_due_at=NOW - timedelta(seconds=5), rejects=0, suppressions_pending=0,
        tail=TailStatus("/var/log/x.log", "/var/log/x.log", 100, 5, 100, 0, NOW),
        last_send_ok_at=NOW.isoformat(), auth_failure=None,
        last_orders_pass_at=(NOW - timedelta(seconds=30)).isoformat(), last_tail_at=None,
        orders_expected=True,
    )
    return replace(base, **changes)


def test_a_quiet_pipeline_is_healthy() -> None:
    assert assess(status(), LIMITS) == (Health.HEALTHY, ())
    assert Health.HEALTHY.exit_code == 0


def test_a_backlog_past_the_degraded_age_degrades() -> None:
    health, reasons = assess(status(oldest_due_at=NOW - timedelta(minutes=16)), LIMITS)
    assert health is Health.DEGRADED and health.exit_code == 1
    assert "oldest due event waiting 16m" in reasons[0]


def test_a_backlog_past_the_failing_age_fails() -> None:
    health, reasons = assess(status(oldest_due_at=NOW - timedelta(hours=3)), LIMITS)
    assert health is Health.FAILING and health.exit_code == 2
    assert "failing past" in reasons[0]


def test_refused_credentials_fail_and_come_first() -> None:
    refused = {"at": "2026-03-01T11:00:00+00:00", "status": 401, "detail": "bad key"}
    health, reasons = assess(status(auth_failure=refused, queue={"dead": 2}), LIMITS)
    assert health is Health.FAILING
    assert reasons[0].startswith("Klaviyo refuses our credentials") and "bad key" in reasons[0]
    assert any("2 dead letter(s)" in r for r in reasons[1:])


def test_dead_letters_degrade_unless_the_check_is_off() -> None:
    assert assess(status(queue={"dead": 1}), LIMITS)[0] is Health.DEGRADED
    off = replace(LIMITS, degraded_dead_letters=0)
    assert assess(status(queue={"dead": 50}), off)[0] is Health.HEALTHY


def test_a_tail_far_behind_or_a_missing_log_degrades() -> None:
    behind = replace(status().tail, bytes_behind=5000)
    assert "tail 4.9 KB behind" in assess(status(tail=behind), LIMITS)[1][0]
    missing = replace(status().tail, size=None, bytes_behind=None, log_error="missing")
    assert assess(status(tail=missing), LIMITS) == (
        Health.DEGRADED, ("log /var/log/x.log: missing",))


def test_a_stale_orders_pass_degrades_only_when_orders_are_expected() -> None:
    stale = (NOW - timedelta(hours=2)).isoformat()
    assert assess(status(last_orders_pass_at=stale), LIMITS)[0] is Health.DEGRADED
    assert assess(status(last_orders_pass_at=stale, orders_expected=False), LIMITS)[0] \
        is Health.HEALTHY
    aware = (NOW - timedelta(hours=2)).isoformat() + "+00:00"
    assert assess(status(last_orders_pass_at=aware), LIMITS)[0] is Health.DEGRADED


def test_summary_and_json_carry_the_figures() -> None:
    s = replace(status(oldest_due_at=NOW - timedelta(minutes=20)), health=Health.DEGRADED,
                reasons=("oldest due event waiting 20m",))
    assert s.summary() == ("degraded: 3 pending, 0 leased, 0 dead; tail 0 B behind; "
                           "oldest due event waiting 20m")
    data = s.to_json()
    assert data["oldest_due_age_s"] == 1200.0 and data["dead_letters"] == 0
    assert data["checked_at"] == "2026-03-01T12:00:00+00:00" and data["health"] == "degraded"


def checkpoint(path: Path, offset: int, file_size: int | None = None) -> SimpleNamespace:
    st = path.stat()
    return SimpleNamespace(_mapping={
        "path": str(path), "offset": offset, "file_size": file_size or st.st_size,
        "lines_read": 7, "updated_at": NOW, "inode": st.st_ino, "device": st.st_dev,
    })


def test_bytes_behind_on_the_same_file(tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 1000)
    tail = tail_status(str(log), checkpoint(log, 400))
    assert (tail.offset, tail.size, tail.bytes_behind, tail.lines_read) == (400, 1000, 600, 7)


def test_bytes_behind_before_the_first_pass(tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 1000)
    tail = tail_status(str(log), None)
    assert (tail.file, tail.offset, tail.bytes_behind) == (None, 0, 1000)


def test_bytes_behind_after_rotation_counts_the_old_file_rest(tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 1000)
    cp = checkpoint(log, 700)
    os.rename(log, tmp_path / "system.log.1")
    log.write_bytes(b"y" * 50)
    assert tail_status(str(log), cp).bytes_behind == 300 + 50


def test_bytes_behind_after_copytruncate_starts_again(tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 1000)
    cp = checkpoint(log, 1000)
    log.write_bytes(b"y" * 80)  # same inode, shorter than the offset
    assert tail_status(str(log), cp).bytes_behind == 80


def test_a_missing_log_is_reported(tmp_path: Path) -> None:
    tail = tail_status(str(tmp_path / "nope.log"), None)
    assert tail.log_error == "missing" and tail.size is None and tail.bytes_behind is None


def test_a_state_database_that_went_away_is_a_state_error() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StateError, match="state database unreachable"):
            compute_status(config.Settings(), engine)
    finally:
        engine.dispose()


# --- what operators care about: passes, the log, the business database, the scheduler ----

def test_a_failing_pass_degrades_at_once_and_fails_when_it_keeps_failing() -> None:
    from klaviyo_sync.daemon.health import PassRecord, decide

    once = PassRecord(failures=1, last_ok_at=NOW - timedelta(seconds=10),
                      last_failed_at=NOW, last_error="OperationalError: database is locked")
    s = decide(status(passes={"tail": once}), LIMITS)
    assert s.health is Health.DEGRADED and s.decided_by == "tail_pass"
    assert "tail pass failed 1 time(s) in a row" in s.reasons[0]
    again = replace(once, failures=3)
    s = decide(status(passes={"tail": again}), LIMITS)
    assert s.health is Health.FAILING and s.decided_by == "tail_pass"
    assert s.health.exit_code == 2 and "database is locked" in s.reasons[0]


def test_a_pass_that_stopped_succeeding_degrades_then_fails() -> None:
    from klaviyo_sync.daemon.health import PassRecord, decide

    def last_ok(ago: timedelta) -> Status:
        return decide(status(passes={"send": PassRecord(last_ok_at=NOW - ago)}), LIMITS)

    assert last_ok(timedelta(minutes=1)).health is Health.HEALTHY
    assert last_ok(timedelta(minutes=20)).health is Health.DEGRADED
    stale = last_ok(timedelta(hours=2))
    assert stale.health is Health.FAILING and stale.decided_by == "send_pass"
    assert "is the daemon running?" in stale.reasons[0]


def test_orders_pass_records_count_only_when_orders_are_expected() -> None:
    from klaviyo_sync.daemon.health import PassRecord, decide

    broken = {"orders": PassRecord(failures=9, last_error="business down")}
    assert decide(status(passes=broken), LIMITS).health is Health.FAILING
    assert decide(status(passes=broken, orders_expected=False), LIMITS).health \
        is Health.HEALTHY


def test_an_unreadable_log_fails_and_a_missing_one_degrades(tmp_path: Path) -> None:
    from klaviyo_sync.daemon.health import decide

    folder = tmp_path / "logdir"
    folder.mkdir()
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    for path, words in ((folder, "is a directory"), (fifo, "not a regular file")):
        tail = tail_status(str(path), None)
        assert tail.log_error is not None and words in tail.log_error
        s = decide(status(tail=tail), LIMITS)
        assert s.health is Health.FAILING and s.decided_by == "log"
    missing = decide(status(tail=tail_status(str(tmp_path / "gone.log"), None)), LIMITS)
    assert missing.health is Health.DEGRADED and missing.decided_by == "log"


def test_a_tail_that_does_not_move_with_bytes_to_read_is_stuck() -> None:
    from klaviyo_sync.daemon.health import decide

    def stuck(since: timedelta, behind: int = 500) -> Status:
        tail = replace(status().tail, bytes_behind=behind, checkpoint_at=NOW - since)
        return decide(status(tail=tail), LIMITS)

    assert stuck(timedelta(seconds=30)).health is Health.HEALTHY
    assert stuck(timedelta(hours=5), behind=0).health is Health.HEALTHY  # nothing to read
    s = stuck(timedelta(minutes=10))
    assert s.health is Health.DEGRADED and s.decided_by == "tail_stuck"
    assert stuck(timedelta(hours=1)).health is Health.FAILING


def test_a_business_database_that_does_not_answer_fails() -> None:
    from klaviyo_sync.daemon.health import decide

    s = decide(status(business_error="connection refused"), LIMITS)
    assert s.health is Health.FAILING and s.decided_by == "business_db"
    assert decide(status(business_error="connection refused", orders_expected=False),
                  LIMITS).health is Health.HEALTHY


def test_a_frozen_scheduler_fails() -> None:
    from klaviyo_sync.daemon.health import decide

    s = decide(status(stalled_jobs=("tail", "send")), LIMITS)
    assert s.health is Health.FAILING and s.decided_by == "scheduler"
    assert "tail, send" in s.reasons[0]


def test_failing_findings_come_before_degraded_ones() -> None:
    from klaviyo_sync.daemon.health import PassRecord, decide

    s = decide(status(queue={"dead": 4}, passes={"tail": PassRecord(failures=5)}), LIMITS)
    assert [f.check for f in s.findings] == ["tail_pass", "dead_letters"]
    data = s.to_json()
    assert data["decided_by"] == "tail_pass" and data["findings"][0]["health"] == "failing"
    assert data["passes"]["tail"]["failures"] == 5
