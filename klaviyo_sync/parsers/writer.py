"""A background thread that writes the ingest's chunks to the database, in order.

Two things make a replay fast without weakening what a commit means:

- Parsing and writing overlap: SQLite and psycopg release the GIL while the database
  works, so chunk N is inserted on the second core while chunk N+1 is parsed.
- Group commit: chunks that arrive while a transaction is open join it, up to
  ``max_weight`` (the ingest counts bytes: a few chunks) or ``max_open_s`` seconds.
  Content-derived ids make the unique index's pages random, so every commit rewrites
  most of the index; committing every 1 MB chunk of a dense replay spends more time
  rewriting the index than inserting.

Each chunk still goes in one transaction together with the checkpoint just past it, in
file order; a transaction only ever covers whole chunks. A kill -9 rolls back to the last
commit, whose checkpoint matches exactly the events committed with it. At most one chunk
waits in line, so memory stays bounded by a few chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class OrderedWriter(Generic[T, R]):
    """Apply submitted items in order on one background thread, in grouped transactions.

    ``begin()`` opens a transaction (a context manager yielding a connection);
    ``apply(conn, item)`` writes one item in it; ``finish(conn, items)``, if given, runs
    last in each transaction (writes an ``apply`` left pending); ``on_done(item, result)``
    runs once the item's transaction has committed. The first exception rolls its
    transaction back and stops the writer; the next :meth:`submit` or :meth:`close`
    re-raises it.
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[Any]],
                 apply: Callable[[Any, T], R], on_done: Callable[[T, R], None],
                 weight: Callable[[T], int] = lambda item: 1, max_weight: int = 50_000,
                 max_open_s: float = 1.0, name: str = "ingest-writer",
                 finish: Callable[[Any, list[T]], None] | None = None) -> None:
        self._begin = begin
        self._apply = apply
        self._finish = finish
        self._on_done = on_done
        self._weight = weight
        self._max_weight = max_weight
        self._max_open_s = max_open_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> None:
        """Queue ``item`` (waits while one is already waiting)."""
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Wait until everything submitted is committed; re-raise a commit's error."""
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=0.5)
                self._thread.join()
            except queue.Full:
                continue
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            finished = False
            while not finished:
                item = self._queue.get()
                if item is _DONE:
                    return
                finished = self._transaction(item)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the submitting thread
            self._error = exc
            self._drain()

    def _transaction(self, first: T) -> bool:
        """Apply ``first`` and whatever follows within the limits, in one transaction.
        Returns True once the end marker was seen."""
        applied: list[tuple[T, R]] = []
        finished = False
        with self._begin() as conn:
            opened = time.monotonic()
            item, weight = first, 0
            while True:
                applied.append((item, self._apply(conn, item)))
                weight += self._weight(item)
                left_s = self._max_open_s - (time.monotonic() - opened)
                if weight >= self._max_weight or left_s <= 0:
                    break
                try:
                    following = self._queue.get(timeout=left_s)
                except queue.Empty:
                    break
                if following is _DONE:
                    finished = True
                    break
                item = following  # type: ignore[assignment]
            if self._finish is not None:
                self._finish(conn, [done for done, _ in applied])
        for item, result in applied:
            self._on_done(item, result)
        return finished

    def _drain(self) -> None:
        # Wake a submitter blocked on the full queue; it then sees the error.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
