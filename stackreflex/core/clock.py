"""The one clock: timezone-aware UTC for what is stored, a monotonic clock and sleep for waits.

A :class:`Clock` is passed in rather than read from the system everywhere, so the handler
test kit (:mod:`stackreflex.testing`) can run time forward instead of sleeping.
"""

import threading
import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock:
    """The system's time."""

    def now(self) -> datetime:
        """Now, in UTC (what the audit log stores and compares)."""
        return utcnow()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for measuring waits."""
        return time.monotonic()

    def stopped(self) -> bool:
        """Whether waiting in place should end now (a run's clock says so when its process stops)."""
        return False

    def sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        """Pause for ``seconds``, or less if ``until`` is set meanwhile."""
        if until is not None:
            until.wait(max(seconds, 0.0))
        else:
            time.sleep(max(seconds, 0.0))


#: The clock every process uses unless told otherwise.
SYSTEM_CLOCK = Clock()
