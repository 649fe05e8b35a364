"""HTTP requests with one deadline for the whole exchange.

requests' ``timeout`` bounds each socket read, so a server sending a byte every few
seconds holds a request for as long as it likes. Here a watchdog timer shuts the
request's socket down when the deadline passes, in the status line, the headers or the
body alike; the request then fails, and is reported as a timeout.

The adapter's connections record themselves, per request, in a holder the calling
thread set up: that is how the watchdog finds the socket of this request (and no other).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_calling = threading.local()  # .holder: the _Watched of the request this thread makes


class _Watched:
    """The connection one request uses, and whether its deadline passed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: HTTPConnection | None = None
        self.finished = False
        self.expired = False

    def expire(self) -> None:
        with self.lock:
            if self.finished:
                return
            self.expired = True
            sock = getattr(self.conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _register(conn: HTTPConnection) -> None:
    holder = getattr(_calling, "holder", None)
    if holder is not None:
        holder.conn = conn


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections :func:`request_within` can find and cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def request_within(session: requests.Session, deadline_s: float, method: str, url: str,
                   **kwargs: Any) -> requests.Response:
    """``session.request`` with its body read, all within ``deadline_s`` seconds.

    Raises requests.Timeout when the deadline passes. ``timeout`` (per read) still
    applies inside it; without one, the deadline is used for it too.
    """
    kwargs.setdefault("timeout", deadline_s)
    holder = _Watched()
    timer = threading.Timer(deadline_s, holder.expire)
    timer.daemon = True
    _calling.holder = holder
    timer.start()
    try:
        resp = session.request(method, url, stream=True, **kwargs)
        try:
            _ = resp.content  # the body, under the same deadline
        except BaseException:
            resp.close()
            raise
    except requests.RequestException as exc:
        if holder.expired:
            raise requests.Timeout(f"no complete answer within {deadline_s} s") from exc
        raise
    finally:
        with holder.lock:
            holder.finished = True
        timer.cancel()
        _calling.holder = None
    if holder.expired:  # cut just as the last byte came: still too late to trust
        raise requests.Timeout(f"no complete answer within {deadline_s} s")
    return resp
