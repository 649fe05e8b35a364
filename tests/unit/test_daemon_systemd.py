"""sd_notify over a real unix datagram socket, path and abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from klaviyo_sync.daemon.systemd import Notifier, watchdog_interval_s


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_ready_status_watchdog_and_stopping_arrive(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    notifier = Notifier(path)
    assert notifier.ready("3 pending")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 pending"
    assert notifier.status("queue:\n 5 pending")
    assert sock.recv(4096) == b"STATUS=queue: 5 pending"  # one line, whatever we pass
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.reloading()
    reload_msg = sock.recv(4096).decode()
    assert reload_msg.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"klaviyo-sync-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    notifier = Notifier(f"@{name}")
    try:
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        notifier.close()
        sock.close()


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({}, os.getpid())
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog()
    assert notifier.watchdog_s is None


def test_a_vanished_manager_is_logged_once_and_ignored(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with capture_logs() as logs:
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    notifier.close()
    assert [e["event"] for e in logs] == ["notify_failed"]


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1234"}, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "999"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str],
                                                    expected: float | None) -> None:
    assert watchdog_interval_s(environ, 1234) == expected


def test_a_manager_that_stops_reading_never_stalls_the_daemon(
        receiver: tuple[str, socket.socket]) -> None:
    path, _sock = receiver  # never read: its queue fills up
    notifier = Notifier(path)
    # A blocking send would hang here (pytest's timeout catches it): no stopwatch needed.
    with capture_logs() as logs:
        sent = [notifier.watchdog() for _ in range(5000)]
    notifier.close()
    assert sent[0] and not sent[-1]  # the first went through, the overflow was dropped
    assert [e["event"] for e in logs] == ["notify_failed"]
