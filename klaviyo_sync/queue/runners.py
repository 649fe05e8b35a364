"""Which runners hold leases, and taking the leases back from those that died.

A claimed event is leased for ``[sender] lease_s`` (minutes: a batch may wait out a long
429). Without more, a runner that is SIGKILLed leaves its claims leased that long, and
the runner systemd restarts in its place sends nothing meanwhile. So each runner keeps a
row here with its host and pid and beats it every ``heartbeat_s`` while it lives; before
claiming, a runner takes back the leases of runners that are dead:

- on its own host, a runner whose pid no longer exists is dead at once;
- anywhere, a runner whose heartbeat is older than ``dead_after_s`` is dead.

Taking back is safe even if the "dead" runner was only stalled: its later ack or fail
changes only rows it still holds (the fence in QueueStore), and an event sent twice is
dropped by Klaviyo for its unique_id.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.state.schema import runners

log = get_logger(__name__)


@dataclass(frozen=True)
class RunnerRow:
    worker: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunnerRegistry:
    """The ``runners`` table: heartbeats in, dead runners out."""

    def __init__(self, engine: Engine, dead_after_s: float = 15.0,
                 host: str | None = None, pid: int | None = None) -> None:
        self.engine = engine
        self.dead_after = timedelta(seconds=dead_after_s)
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()

    def beat(self, worker: str, now: datetime | None = None) -> None:
        """Say ``worker`` (this process) is alive; registers it the first time."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            updated = conn.execute(
                runners.update().where(runners.c.worker == worker)
                .values(heartbeat_at=now, host=self.host, pid=self.pid)).rowcount
            if not updated:
                # A worker id is host:pid, so only this process ever inserts this row.
                conn.execute(runners.insert().values(
                    worker=worker, host=self.host, pid=self.pid, started_at=now,
                    heartbeat_at=now))

    def remove(self, worker: str) -> None:
        """A runner that stops cleanly holds no leases: forget it."""
        with self.engine.begin() as conn:
            conn.execute(runners.delete().where(runners.c.worker == worker))

    def all(self) -> list[RunnerRow]:
        with self.engine.connect() as conn:
            return [RunnerRow(*row) for row in conn.execute(
                sa.select(runners.c.worker, runners.c.host, runners.c.pid,
                          runners.c.started_at, runners.c.heartbeat_at)
                .order_by(runners.c.worker))]

    def dead(self, now: datetime | None = None, exclude: str | None = None) -> list[RunnerRow]:
        """Runners that are gone: their pid is gone from this host, or their heartbeat
        stopped more than ``dead_after_s`` ago."""
        now = now or utcnow()
        out = []
        for row in self.all():
            if row.worker == exclude:
                continue
            if (row.host == self.host and not pid_alive(row.pid)) \
                    or now - row.heartbeat_at > self.dead_after:
                out.append(row)
        return out

    def forget(self, workers: list[str]) -> None:
        if workers:
            with self.engine.begin() as conn:
                conn.execute(runners.delete().where(runners.c.worker.in_(workers)))


class Heartbeat:
    """Beats a worker's row every ``every_s`` in a thread of its own until stopped.

    A thread of its own: a runner busy in a long send (or waiting out a 429) must not
    look dead to the others.
    """

    def __init__(self, registry: RunnerRegistry, worker: str, every_s: float) -> None:
        self.registry = registry
        self.worker = worker
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.registry.beat(self.worker)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.registry.beat(self.worker)
            except Exception as exc:  # the database is down: the passes say so already
                log.debug("heartbeat_failed", error=str(exc).splitlines()[0])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
