"""A background thread that commits the ingest's transactions in order.

Parsing a chunk and committing the previous one overlap: SQLite and psycopg release the
GIL while the database works, so on a replay the insert runs on the second core while the
next chunk is parsed. Order and atomicity are unchanged: one transaction per chunk, in
file order, each holding its events and the checkpoint just past them. At most one
transaction waits in line, so memory stays bounded by a few chunks.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class OrderedWriter(Generic[T, R]):
    """Run ``commit(item)`` for each submitted item, in order, on one background thread.

    ``on_done(item, result)`` runs on that thread after each commit. The first exception
    stops the writer; it is re-raised by the next :meth:`submit` or by :meth:`close`.
    """

    def __init__(self, commit: Callable[[T], R], on_done: Callable[[T, R], None],
                 name: str = "ingest-writer") -> None:
        self._commit = commit
        self._on_done = on_done
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
        if self._thread.is_alive():
            while True:
                try:
                    self._queue.put(_DONE, timeout=0.5)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        break
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            try:
                result = self._commit(item)  # type: ignore[arg-type]
                self._on_done(item, result)  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the submitting thread
                self._error = exc
                # Drain so a submitter blocked on a full queue wakes up and sees it.
                while True:
                    try:
                        if self._queue.get_nowait() is _DONE:
                            return
                    except queue.Empty:
                        return
