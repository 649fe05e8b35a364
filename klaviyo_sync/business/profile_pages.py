"""The profiles pass's pages: customers read and built into profiles, in the pass's own
process or in a process of their own.

An initial sync (``profiles --all``) reads and builds every customer. In the pass's
process that work shares one interpreter lock with the threads that record, post and
read back the import jobs, and loses twice over: the SQLite driver lets go of the lock
for each row it steps, and each time another thread has taken it the reader waits for
it to come back, up to the interpreter's switch interval. Measured at a million
customers, reading took twice as long in the pass as alone, for the same CPU. A process
of its own (:class:`PageProcess`) reads and builds on a lock of its own and sends each
page as plain lists (ids, encoded resources, digests), which pickle and unpickle in C.
The pipe holds it back: it builds no further ahead of the pass than the pipe holds (a
few pages).

The process is ``python -m klaviyo_sync.page_process --fd N`` (its own wiring: see
there): it reads its :class:`PageSpec` (pickled) on stdin and writes pages to
descriptor N.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

from klaviyo_sync.business.customers import CUSTOMER_FIELDS, UPDATED_AT, SqlCustomerReader
from klaviyo_sync.business.profiles import Profile, ProfileBuilder, profiles_of
from klaviyo_sync.config import BusinessSettings, LoggingSettings, ProfileProperties
from klaviyo_sync.exceptions import BusinessDataError

_ID, _EMAIL, _STATUS = (CUSTOMER_FIELDS.index(name) for name in ("id", "email", "status"))
#: What the process sends after its last page.
END = "end"
#: The pipe's size asked for (Linux lets an unprivileged user have 1 MB).
_PIPE_BYTES = 4 << 20
#: How long a page process that was told to stop may take to go (seconds).
_STOP_WAIT_S = 10.0


class Page(NamedTuple):
    """One page of customers, built (its lists in keyset order, one entry per row)."""

    ids: list[str]
    items: list[bytes]
    digests: list[str]
    #: The raw (updated_at, id) of the page's last row: where the next page starts, and
    #: how far the pass's watermark may move.
    last: tuple[Any, Any]
    #: The rows' raw emails and statuses, when the pass needs them to leave out people
    #: who asked to be forgotten (None otherwise: they are not sent between processes).
    emails: list[Any] | None = None
    statuses: list[Any] | None = None

    def profiles(self) -> list[Profile]:
        return profiles_of(self.ids, self.items, self.digests)


def read_pages(reader: SqlCustomerReader, builder: ProfileBuilder, since: Any,
               page_size: int, with_keys: bool = False) -> Iterator[Page]:
    """Customers with updated_at >= ``since`` (all: None), page by page in keyset order,
    built; ``with_keys`` keeps each row's email and status too."""
    after: tuple[Any, Any] | None = None
    while True:
        rows = reader.read_changed_raw(after, since, page_size)
        if rows:
            last = rows[-1]
            after = (last[UPDATED_AT], last[_ID])
            ids, items, digests = builder.build_columns(rows)
            if with_keys:
                yield Page(ids, items, digests, after, [row[_EMAIL] for row in rows],
                           [row[_STATUS] for row in rows])
            else:
                yield Page(ids, items, digests, after)
        if len(rows) < page_size:
            return


@dataclass(frozen=True)
class PageSpec:
    """What a page process reads (``business.url``) and how it builds (all of it
    pickles)."""

    business: BusinessSettings
    properties: ProfileProperties
    extra: dict[str, str] = field(default_factory=dict)
    since: Any = None
    page_size: int = 5000
    with_keys: bool = False
    logging: LoggingSettings = field(default_factory=LoggingSettings)


class CannotStart(BusinessDataError):
    """The page process could not be started (nothing was read): the pass may read in
    its own process instead."""


class Failed(NamedTuple):
    """The process could not go on: the error, as the pass should raise it."""

    error: BaseException


class PageProcess:
    """Iterating gives the pages that a process of their own reads and builds.

    Leaving the iteration early (the pass was stopped, or failed) closes the pipe: the
    process's next send fails and it ends; one that does not within a few seconds is
    killed. A process that dies (killed, out of memory) ends the iteration with a
    :class:`BusinessDataError`, as a database that stops answering does.
    """

    def __init__(self, spec: PageSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None

    def __iter__(self) -> Iterator[Page]:
        read_end, write_end = os.pipe()
        _widen(write_end)
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=package_root + (os.pathsep + path if path else ""))
        try:
            process = self.process = subprocess.Popen(
                [sys.executable, "-m", "klaviyo_sync.page_process", "--fd", str(write_end)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_end,),
                env=env)
        except OSError as exc:
            os.close(read_end)
            raise CannotStart(f"cannot start the process that reads customers: "
                              f"{exc}") from exc
        finally:
            os.close(write_end)
        pages = Connection(read_end, writable=False)
        try:
            assert process.stdin is not None
            try:
                process.stdin.write(pickle.dumps(self.spec))
                process.stdin.close()
            except BrokenPipeError:
                pass  # it died at once: the read below says how
            while True:
                try:
                    message = pages.recv()
                except EOFError:
                    code = process.wait()
                    raise BusinessDataError(
                        f"the process reading customers for the profiles pass ended "
                        f"unexpectedly (exit code {code})") from None
                if message == END:
                    return
                if isinstance(message, Failed):
                    raise message.error
                yield message
        finally:
            pages.close()
            try:
                process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _widen(fd: int) -> None:
    """Let the pipe hold a whole page (about 1.5 MB at the usual 5,000 customers), so the
    process builds the next page while the pass takes the last one in, rather than
    waiting for it 64 KB at a time; as much as this user may ask for, else as it is."""
    for size in (_PIPE_BYTES, 1 << 20):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
            return
        except (OSError, AttributeError):  # over the user's limit; or not Linux
            continue
