"""One daemon per SQLite state file: an exclusive lock beside it, held for the process.

Two daemons on one SQLite file would both tail the log and both drain the queue through
one file lock, with nothing to divide the roles (PostgreSQL's advisory locks do that for
a shared queue). The second is refused at start with a message naming the first one.
The lock is ``flock`` on a file next to the database: the kernel drops it when the holder
dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from klaviyo_sync.exceptions import StateError


def lock_path(state_url: str) -> Path | None:
    """The lock file of a SQLite state database; None for a server database."""
    url = sa.make_url(state_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = Path(url.database)
    return database.with_name(database.name + ".daemon-lock")


@contextlib.contextmanager
def one_daemon(state_url: str) -> Iterator[None]:
    """Hold the SQLite state file's daemon lock for the ``with`` block (a no-op on
    PostgreSQL); raise StateError naming the holder when another daemon has it."""
    path = lock_path(state_url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise StateError(
                f"another klaviyo-sync daemon (pid {holder}) already runs on the state "
                f"file {path.with_suffix('')}: two daemons on one SQLite state are not "
                "supported (use PostgreSQL for several runners)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock
