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
few pages). While the process starts, the pass reads the first pages itself (see
:class:`PageProcess`).

The process is ``python -m klaviyo_sync.page_process --fd N`` (its own wiring: see
there). On stdin it gets two pickled orders: its :class:`PageSpec`, then, once it has
said :data:`READY` on descriptor N, the keyset position to read after (None: from the
start); it writes its pages to descriptor N. Stdin's end before the second order means
nothing is left to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, NamedTuple

from klaviyo_sync.business.customers import CUSTOMER_FIELDS, UPDATED_AT, SqlCustomerReader
from klaviyo_sync.business.profiles import Profile, ProfileBuilder, profiles_of
from klaviyo_sync.config import BusinessSettings, LoggingSettings, ProfileProperties
from klaviyo_sync.exceptions import BusinessDataError
from klaviyo_sync.logconfig import get_logger

_ID, _EMAIL, _STATUS = (CUSTOMER_FIELDS.index(name) for name in ("id", "email", "status"))
#: What the process sends once it can read (before its first page), and after its last.
READY = "ready"
END = "end"
#: The pipe's size asked for (Linux lets an unprivileged user have 1 MB).
_PIPE_BYTES = 4 << 20
#: How long a page process that was told to stop may take to go (seconds).
_STOP_WAIT_S = 10.0

log = get_logger(__name__)


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
               page_size: int, with_keys: bool = False,
               after: tuple[Any, Any] | None = None) -> Iterator[Page]:
    """Customers with updated_at >= ``since`` (all: None), page by page in keyset order,
    built, from the start or from after the raw (updated_at, id) ``after`` (a
    :attr:`Page.last`); ``with_keys`` keeps each row's email and status too."""
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
    """The page process could not be started (nothing was read), and no ``head`` was
    given to read instead."""


class Failed(NamedTuple):
    """The process could not go on: the error, as the pass should raise it."""

    error: BaseException


class PageProcess:
    """Iterating gives the pages that a process of their own reads and builds.

    The process takes about half a second to start (an interpreter, SQLAlchemy, the
    database opened). Given ``head``, the same pages read here from the start (a
    :func:`read_pages` not yet begun), the pages come from ``head`` until the process says
    it is ready; it then reads on from after the last of them, and ``head`` is closed. So
    the pass posts its first request at once instead of waiting, and the process only
    ever reads what ``head`` did not. A process that cannot be started, or fails before
    it is ready, leaves the rest to ``head``, with a warning: the pass reads itself, more
    slowly (without ``head``, one that cannot be started raises :class:`CannotStart`).
    ``head_pages`` counts the pages ``head`` gave.

    Leaving the iteration early (the pass was stopped, or failed) closes the pipe: the
    process's next send fails and it ends; one that does not within a few seconds is
    killed. A process that dies (killed, out of memory) once it reads ends the iteration
    with a :class:`BusinessDataError`, as a database that stops answering does.
    """

    def __init__(self, spec: PageSpec, head: Iterator[Page] | None = None) -> None:
        self.spec = spec
        self.head = head
        self.head_pages = 0
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
            if self.head is None:
                raise CannotStart(f"cannot start the process that reads customers: "
                                  f"{exc}") from exc
            _read_here(f"cannot start it: {exc}")
            for page in self.head:
                self.head_pages += 1
                yield page
            return
        finally:
            os.close(write_end)
        pages = Connection(read_end, writable=False)
        assert process.stdin is not None
        orders = process.stdin
        try:
            _tell(orders, self.spec)
            after: tuple[Any, Any] | None = None
            head = self.head
            if head is not None:
                listening = True
                for page in head:
                    self.head_pages += 1
                    after = page.last
                    yield page
                    if listening and pages.poll():  # its first word: ready, or not
                        if self._ready(pages, process):
                            break
                        listening = False  # it cannot: head reads on to the end
                else:
                    return  # head read every page: the process is told nothing more
                _close(head)
            _tell(orders, after)
            orders.close()
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
                if message != READY:
                    yield message
        finally:
            if self.head is not None:
                _close(self.head)
            pages.close()
            with contextlib.suppress(OSError):
                orders.close()  # unread orders: the process ends at their end
            try:
                process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _ready(self, pages: Connection, process: subprocess.Popen[bytes]) -> bool:
        """The process's first word: ready (True), or why it is not (False)."""
        try:
            message = pages.recv()
        except EOFError:
            reason = f"it ended (exit code {process.wait()})"
        else:
            if message == READY:
                return True
            reason = str(message.error) if isinstance(message, Failed) else repr(message)
        _read_here(f"it could not start: {reason}")
        return False


def _read_here(why: str) -> None:
    log.warning("profile_pages_in_process", error=f"the process reading customers: {why}",
                hint="the pass reads the customers itself, more slowly")


def _close(pages: Iterator[Page]) -> None:
    """End a generator of pages where it is (an iterator of another kind has no end)."""
    close = getattr(pages, "close", None)
    if close is not None:
        close()


def _tell(orders: IO[bytes], order: Any) -> None:
    """Write one order to the process (the spec, then where to start), pickled."""
    try:
        pickle.dump(order, orders)
        orders.flush()
    except BrokenPipeError:
        pass  # it died: the pipe's end says so


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
