"""systemd's notify protocol (``sd_notify``): a service says it is ready, alive or stopping.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or an abstract socket
spelled with a leading ``@``) to a ``Type=notify`` unit, and ``WATCHDOG_USEC`` when the
unit has ``WatchdogSec=``: the service must send ``WATCHDOG=1`` more often than that, or
systemd restarts it. Outside systemd nothing is set and nothing is sent.
"""

import logging
import os
import socket
import struct
import time
import uuid

log = logging.getLogger("stackreflex.systemd")


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``…) to systemd; False if
    there is no notify socket or it could not be reached (said once in the log, never raised)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract socket: not notifying systemd", address)
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.warning("could not notify systemd (%s): %s", state, exc)
            return False
    return True


def watchdog_interval() -> float | None:
    """How often to send ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``, in seconds), or None when
    systemd does not watch this process (no watchdog, or ``WATCHDOG_PID`` names another)."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        log.warning("WATCHDOG_USEC %r is not a number of microseconds: not pinging systemd's watchdog", usec)
        return None
    return seconds / 2 if seconds > 0 else None


class Relay:
    """The notify socket of a supervisor's worker processes (``worker --processes N``), so that
    systemd sees them as the one service it started: ``READY=1`` once every child said it,
    ``WATCHDOG=1`` while every child keeps saying it (one whose thread died, or that exited,
    stops it, and systemd restarts the service)."""

    def __init__(self, children: int):
        self.children = children
        self.address = f"@stackreflex-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind("\0" + self.address[1:])
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who says it: its pid
        self._interval = watchdog_interval()
        self._ready: set[int] = set()
        self._petted: dict[int, float] = {}
        self._said_ready = False
        self._last_pet = 0.0

    def environment(self) -> dict[str, str]:
        """The environment of a child: this relay as its notify socket, systemd's watchdog period."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = self.address
        if self._interval is not None:
            env["WATCHDOG_USEC"] = str(int(self._interval * 2_000_000))
        return env

    def relay(self, timeout: float) -> None:
        """Take what the children say for up to ``timeout`` seconds; tell systemd what it must hear."""
        self._sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except TimeoutError:
            data, ancillary = b"", []
        pid = next((struct.unpack("3i", d[:12])[0] for lvl, kind, d in ancillary if kind == socket.SCM_CREDENTIALS), 0)
        for line in data.decode(errors="replace").splitlines():
            if line == "READY=1":
                self._ready.add(pid)
            elif line == "WATCHDOG=1":
                self._petted[pid] = time.monotonic()
        if not self._said_ready and len(self._ready) >= self.children:
            notify("READY=1")
            self._said_ready = True
        now = time.monotonic()
        if self._interval is not None and now - self._last_pet >= self._interval:
            fresh = [t for t in self._petted.values() if now - t < 2 * self._interval]
            if len(fresh) >= self.children:
                notify("WATCHDOG=1")
                self._last_pet = now

    def close(self) -> None:
        self._sock.close()
