"""systemd's notification protocol (sd_notify): one datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

A few lines of our own rather than a dependency: the protocol is a small, stable wire format
(sd_notify(3)), and the Python bindings of libsystemd need its headers and a compiler to install.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Tells the service manager how the daemon is doing; does nothing when none is listening."""

    def __init__(self, address: str | None) -> None:
        # '@name' is a socket in the abstract namespace, written with a leading NUL
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens: only then is a status line worth building."""
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one notification; false when nobody took it (no manager, or it went away)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            return False  # a manager that stopped listening cannot be told anything anyway
        return True


def watchdog_interval() -> float | None:
    """Seconds within which the manager wants a WATCHDOG=1, or None when it wants none.

    WATCHDOG_PID names the process the setting is for: a child that inherited the environment
    (a worker) must not ping on the daemon's behalf."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


def monotonic_usec() -> str:
    """The field systemd pairs with RELOADING=1 to tell one reload from the next."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
