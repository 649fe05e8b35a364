"""Acceptance: two daemons on one PostgreSQL queue and one log.

One tails (advisory lock), both send, every event is recorded once; after a kill -9 of
the tailing daemon the other takes the tail over within 30 s and nothing is lost.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state
from klaviyo_sync.state.schema import audit
from tests.acceptance.test_daemon_run import (
    NotifySocket,
    append,
    log_events,
    log_line,
    start_daemon,
    stop,
    wait_until,
    write_settings,
)
from tests.klaviyo_standin.fixtures import StandInFactory

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def tail_holder(stderrs: list[Path]) -> list[int]:
    """Indexes of the daemons whose log says they took the tail lock."""
    return [i for i, err in enumerate(stderrs)
            if any(e.get("event") == "lock_acquired" and str(e.get("lock", "")).startswith("tail:")
                   for e in log_events(err))]


def test_two_daemons_one_tails_both_send_and_the_tail_survives_a_kill(
        tmp_path: Path, pg_schema_url: str, make_standin: StandInFactory) -> None:
    standin = make_standin(latency_s=0.05)
    log = tmp_path / "system.log"
    append(log, [log_line(n) for n in range(10)])
    config = write_settings(tmp_path / "settings.toml", state_url=pg_schema_url, log=log,
                            base_url=standin.base_url,
                            sender={"claim_batch": 5, "batch_max_events": 5,
                                    "single_threshold": 0, "concurrency": 1})
    notifies = [NotifySocket(tmp_path / f"notify{i}.sock") for i in range(2)]
    stderrs = [tmp_path / f"daemon{i}.log" for i in range(2)]
    procs = [start_daemon(config, notifies[i], stderrs[i]) for i in range(2)]
    try:
        for notify, err in zip(notifies, stderrs, strict=True):
            assert notify.wait_for(lambda m: any("READY=1" in x for x in m), 30), \
                err.read_text()[-2000:]
        assert wait_until(lambda: len(tail_holder(stderrs)) == 1, 15)
        (tailer,) = tail_holder(stderrs)
        standby = 1 - tailer
        # Enough work, slowly answered, that both daemons' send passes take a share.
        append(log, [log_line(n) for n in range(10, 400)])
        assert wait_until(lambda: len(standin.events) >= 400, 30), \
            (len(standin.events), stderrs[tailer].read_text()[-2000:])
        assert tail_holder(stderrs) == [tailer], "the standby must not tail while it lives"

        engine = open_state(pg_schema_url)
        with engine.connect() as conn:
            workers = {w for (w,) in conn.execute(sa.select(audit.c.worker).distinct())}
        assert workers == {f"{os.uname().nodename}:{p.pid}" for p in procs}, \
            "both daemons must have sent"

        # kill -9 the tailer: its session ends, the standby takes the tail over.
        os.kill(procs[tailer].pid, signal.SIGKILL)
        procs[tailer].wait(10)
        append(log, [log_line(n) for n in range(400, 450)])
        assert wait_until(lambda: standby in tail_holder(stderrs), 30), \
            stderrs[standby].read_text()[-2000:]
        # The dead daemon's last batch may have reached Klaviyo unacknowledged: its lease
        # runs out (lease_s), the standby sends it again, and Klaviyo keeps it once.
        store = QueueStore(engine)
        assert wait_until(lambda: store.counts()["sent"] == 450, 30), store.counts()
        code, took = stop(procs[standby])
        assert code == 0 and took < 10, stderrs[standby].read_text()[-2000:]
        counts = store.counts()
        engine.dispose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for notify in notifies:
            notify.close()
    recorded = [e.unique_id for e in standin.events]
    assert len(recorded) == len(set(recorded)) == 450
    assert counts == {"pending": 0, "leased": 0, "sent": 450, "dead": 0}
    assert not standin.internal_errors
