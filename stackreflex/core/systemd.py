"""systemd's notify protocol (``sd_notify``): a service says it is ready, alive or stopping.

systemd passes a datagram socket in ``NOTIFY_SOCKET`` (a path, or an abstract socket
spelled with a leading ``@``) to a ``Type=notify`` unit, and ``WATCHDOG_USEC`` when the
unit has ``WatchdogSec=``: the service must send ``WATCHDOG=1`` more often than that, or
systemd restarts it. Outside systemd nothing is set and nothing is sent.
"""

import logging
import os
import socket

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
