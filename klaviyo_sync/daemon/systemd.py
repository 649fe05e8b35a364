"""sd_notify(3) over $NOTIFY_SOCKET with the standard library: READY, STATUS, WATCHDOG, STOPPING.

Not depending on libsystemd keeps the daemon installable anywhere; the protocol is one
datagram of ``KEY=value`` lines to a unix socket, whose name starting with ``@`` means
Linux's abstract namespace. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping

from klaviyo_sync.logconfig import get_logger

log = get_logger(__name__)

#: How long READY/RELOADING/STOPPING may wait for room in the manager's socket queue.
_STATE_CHANGE_WAIT_S = 2.0


def _address(notify_socket: str) -> str | bytes:
    if notify_socket.startswith("@"):
        # Abstract namespace: the name is a leading NUL byte followed by the rest.
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC (systemd's advice), if the watchdog is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid.isdigit() and int(watchdog_pid) != pid:
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Sends notifications to the service manager; silent when there is none."""

    def __init__(self, notify_socket: str | None, watchdog_s: float | None = None) -> None:
        self.address = _address(notify_socket) if notify_socket else None
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int) -> Notifier:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC (the CLI passes ``os.environ``)."""
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog_interval_s(environ, pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str, wait_s: float = 0.0) -> bool:
        """Send one datagram; a failure is logged once and otherwise ignored.

        A manager that does not read its socket must never stall the daemon: routine
        messages (STATUS=, WATCHDOG=1) are dropped at once when its queue is full, and
        the state changes wait at most ``wait_s``.
        """
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(wait_s)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            # The manager going away must not take the daemon down with it.
            if not self._warned:
                log.warning("notify_failed", error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []),
                           wait_s=_STATE_CHANGE_WAIT_S)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match the reload it asked for.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                           wait_s=_STATE_CHANGE_WAIT_S)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []),
                           wait_s=_STATE_CHANGE_WAIT_S)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
