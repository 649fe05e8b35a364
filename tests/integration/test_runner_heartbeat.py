"""Runners' heartbeats and taking back the leases of dead runners, on each backend."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import sqlalchemy as sa

from klaviyo_sync.clock import utcnow
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.queue.runners import Heartbeat, RunnerRegistry, pid_alive
from tests.integration.test_send_runner import make_events


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def leased_to(store: QueueStore, worker: str, n: int) -> list[int]:
    return [e.id for e in store.claim(worker, n, timedelta(minutes=5))]


def test_a_dead_process_on_this_host_loses_its_leases_at_once(state_engine: sa.Engine
                                                              ) -> None:
    store = QueueStore(state_engine)
    store.enqueue_many(make_events(30))
    pid = dead_pid()
    assert not pid_alive(pid)
    RunnerRegistry(state_engine, pid=pid).beat(f"here:{pid}")  # a fresh heartbeat
    ids = leased_to(store, f"here:{pid}", 20)
    alive = RunnerRegistry(state_engine)
    alive.beat("here:me")
    leased_to(store, "here:me", 5)
    dead = alive.dead(exclude="here:me")
    assert [row.worker for row in dead] == [f"here:{pid}"]
    assert store.release_orphans([row.worker for row in dead]) == 20
    counts = store.counts()
    assert counts["leased"] == 5 and counts["pending"] == 25
    again = store.claim("here:me", 100, timedelta(minutes=5))
    assert {e.id for e in again} >= set(ids)  # due now, not in five minutes


def test_a_runner_elsewhere_is_dead_only_once_its_heartbeat_stops(state_engine: sa.Engine
                                                                  ) -> None:
    store = QueueStore(state_engine)
    store.enqueue_many(make_events(10))
    far = RunnerRegistry(state_engine, host="other-host", pid=1)
    far.beat("other-host:1", now=utcnow() - timedelta(seconds=5))
    leased_to(store, "other-host:1", 10)
    here = RunnerRegistry(state_engine, dead_after_s=15)
    assert here.dead() == []  # pid 1 on another host says nothing; its beat is fresh
    far.beat("other-host:1", now=utcnow() - timedelta(seconds=16))
    assert [row.worker for row in here.dead()] == ["other-host:1"]
    here.forget(["other-host:1"])
    assert here.all() == []


def test_a_heartbeat_keeps_beating_while_its_runner_is_busy(state_engine: sa.Engine) -> None:
    registry = RunnerRegistry(state_engine, dead_after_s=0.5)
    beat = Heartbeat(registry, "busy:1", every_s=0.05)
    beat.start()
    try:
        first = registry.all()[0].heartbeat_at
        deadline = utcnow() + timedelta(seconds=10)
        while registry.all()[0].heartbeat_at == first and utcnow() < deadline:
            time.sleep(0.01)
        assert registry.all()[0].heartbeat_at > first
        assert registry.dead() == []
    finally:
        beat.stop()
