"""klaviyo.timeout_s bounds a whole request, not each read: a trickling server is dropped."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from klaviyo_sync.exceptions import RetryableSendError
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.auth import ApiKeyAuth, OAuthAuth
from klaviyo_sync.senders.client import KlaviyoClient
from klaviyo_sync.senders.pacing import Pacer
from tests.unit.test_send_batching import make_event

DEADLINE_S = 1.5
STEP_S = 0.5  # well under the deadline: a per-read timeout never fires


class TrickleServer:
    """Answers every request one byte every STEP_S, in the headers or in the body."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        #: Set once an answer went out whole (it takes minutes): a client that waited for
        #: it had no deadline.
        self.finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = b'{"access_token": "t", "expires_in": 3600}' + b" " * 200
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        with conn:
            try:
                conn.recv(65536)
                slow = head + body if self.where == "headers" else body
                if self.where == "body":
                    conn.sendall(head)
                for byte in slow:
                    if self.stopped.wait(STEP_S):
                        return
                    conn.sendall(bytes([byte]))
                self.finished.set()
            except OSError:
                return  # the client gave up: what the test wants

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture(params=["headers", "body"])
def trickle(request: pytest.FixtureRequest) -> Iterator[TrickleServer]:
    server = TrickleServer(request.param)
    yield server
    server.close()


def test_a_send_gives_up_at_the_deadline(trickle: TrickleServer) -> None:
    client = KlaviyoClient(trickle.url, "2026-07-15", ApiKeyAuth("pk_test"), Pacer(None),
                           AuditLog(None), timeout_s=DEADLINE_S)
    with pytest.raises(RetryableSendError, match="no answer within"):
        client.post_event(make_event(1))
    client.close()
    # The answer takes minutes to trickle out and would have been a 200 in the end: the
    # client gave up on it halfway, which only a deadline on the whole request does (a
    # per-read timeout never fires: a byte arrives every STEP_S). No clock is asserted.
    assert not trickle.finished.is_set()


def test_a_token_refresh_gives_up_at_the_deadline(trickle: TrickleServer) -> None:
    session = requests.Session()
    auth = OAuthAuth(session, trickle.url + "/oauth/token", "client", "s3cret", "refresh",
                     None, timeout_s=DEADLINE_S)
    with pytest.raises(RetryableSendError, match="unreachable"):
        auth.authorization()
    session.close()
    assert not trickle.finished.is_set()
