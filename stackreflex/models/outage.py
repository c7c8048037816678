"""A database outage is waited out, never turned into an error about the work.

When the audit database cannot be reached (PostgreSQL restarting, a network cut, SQLite
locked for long), a write is tried again with backoff until it goes through or the outage
has lasted longer than a bound. The outage is logged once when it begins and once when it
ends, however many threads wait through it; a failure that the first try again heals (a
pooled connection the server dropped while it sat idle, replaced) is not an outage. Errors
that are not about reaching the database (a constraint, a bad value) pass through at once.
"""

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import DatabaseUnavailable
from ..core.metrics import DATABASE_RECONNECTS
from ..core.redaction import redact_text

log = logging.getLogger("stackreflex.audit")

T = TypeVar("T")

#: How long a write waits for the database to come back before giving up (seconds).
DEFAULT_OUTAGE_LIMIT = 600.0
#: Pauses between tries (seconds); the last one repeats.
BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0)

#: Failures this soon after an outage ended belong to it (seconds): a write whose attempt began
#: during the outage may fail just after another write went through.
AFTERSHOCK = 5.0
#: SQLite errors that pass when another process lets go of the file.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def is_outage(error: BaseException) -> bool:
    """True if ``error`` says the database could not be reached, not that the work was wrong."""
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, (sa.InterfaceError, sa.TimeoutError)):
        return True
    if isinstance(error, sa.OperationalError):
        if type(error.orig).__module__.startswith("sqlite3"):
            return any(word in str(error.orig).lower() for word in _SQLITE_TRANSIENT)
        return True  # psycopg: connection refused or lost, server shutting down, serialization
    return False


class OutageGuard:
    """Runs database work, waiting through outages (one guard per audit log, shared by threads)."""

    def __init__(self, limit: float = DEFAULT_OUTAGE_LIMIT, clock: Clock = SYSTEM_CLOCK):
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        #: the outage began as an aftershock of the one before, and has not been said
        self._quiet = False
        self._last_failure = 0.0
        #: when the last outage ended (monotonic seconds), for work that must let the system settle first
        self.ended_at: float | None = None

    def run(
        self, work: Callable[[], T], *, wait: Callable[[float], None] | None = None, limit: float | None = None
    ) -> T:
        """``work()``, tried again through an outage (for up to ``limit`` seconds, default the
        guard's); ``wait(seconds)`` pauses between tries (a consumer passes one that keeps its
        broker connection's heartbeats going)."""
        limit = self.limit if limit is None else limit
        started: float | None = None
        tries = 0
        while True:
            try:
                result = work()
            except Exception as error:
                if not is_outage(error):
                    raise
                now = self.clock.monotonic()
                started = now if started is None else started
                if tries == 0:
                    with self._lock:
                        self._last_failure = now  # said only if the next try fails too
                else:
                    self._began(error, now, started)
                if now - started >= limit:
                    raise DatabaseUnavailable(
                        f"the audit database has been unreachable for {now - started:.0f}s: "
                        f"{redact_text(str(getattr(error, 'orig', error)))}"
                    ) from None
                (wait or self.clock.sleep)(BACKOFF[min(tries, len(BACKOFF) - 1)])
                tries += 1
                continue
            if self._since is not None:
                self._ended()
            return result

    def _began(self, error: BaseException, now: float, started: float) -> None:
        with self._lock:
            self._last_failure = now
            if self._since is not None:
                # A failure just after an outage ended (a write tried on a connection made during
                # it) is that outage going on: said only if it lasts.
                if not self._quiet or now - self._since < AFTERSHOCK:
                    return
                self._quiet = False
            else:
                self._since = started
                self._quiet = self.ended_at is not None and started - self.ended_at < AFTERSHOCK
                if self._quiet:
                    return
        reason = redact_text(str(getattr(error, "orig", error))).strip().splitlines()
        log.warning(
            "audit database unreachable (%s); writes wait for it, for up to %.0fs",
            reason[0] if reason else type(error).__name__,
            self.limit,
        )

    def _ended(self) -> None:
        now = self.clock.monotonic()
        with self._lock:
            # A write that went through while others still fail (a connection made just before
            # the cut) does not end the outage: it ends once the failures have stopped.
            if self._since is None or now - self._last_failure < BACKOFF[0]:
                return
            since, quiet, self._since, self.ended_at = self._since, self._quiet, None, now
        DATABASE_RECONNECTS.inc()
        if not quiet:
            log.warning("audit database reachable again after %.1fs", now - since)

    @property
    def last_failure(self) -> float:
        """When a try last failed for want of the database (monotonic seconds; 0 if never)."""
        return self._last_failure

    def settled(self, seconds: float) -> bool:
        """Neither in an outage nor out of one for less than ``seconds``."""
        with self._lock:
            if self._since is not None:
                return False
        return self.ended_at is None or self.clock.monotonic() - self.ended_at >= seconds
