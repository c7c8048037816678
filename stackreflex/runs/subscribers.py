"""Which handlers an envelope goes to, whichever process's router took it: the handlers this
process serves, and those other live processes serve (each renews its subscriptions in the
audit log with its heartbeat).

A handler served elsewhere is matched by its patterns; if it also has a predicate, which only
a process that loads it can check, the worker that serves it checks it and skips the run
when it declines (:meth:`~.lifecycle.Lifecycle.call`).
"""

import logging
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from ..core.envelope import Envelope
from ..core.records import Served
from ..core.registry import Handler
from ..core.topics import topic_matches
from ..models.audit import AuditLog
from ..models.stats import SERVED_WITHIN

log = logging.getLogger("stackreflex.router")

#: How long a router trusts what it last read of the other processes' subscriptions (seconds).
REFRESH_EVERY = 1.0
#: An envelope no handler matched makes the router look again if its view is older than this
#: (seconds): a worker that has just started serves its handlers' very first envelopes.
REFRESH_ON_MISS = 0.2


def served_by(handlers: Iterable[Any]) -> list[Served]:
    """What a process serving ``handlers`` registers."""
    return [Served(h.name, tuple(h.patterns), h.when is not None) for h in handlers]


class Subscribers:
    """The union of live subscriptions, as this process's router sees it."""

    def __init__(self, handlers: Iterable[Any], audit: AuditLog, bus: str, *, served_within: float = SERVED_WITHIN):
        self.local = {h.name: h for h in handlers}
        self.audit, self.bus, self.served_within = audit, bus, served_within
        self._remote: list[Served] = []
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def matching(self, envelope: Envelope) -> list[str]:
        """The handlers ``envelope`` goes to (a local predicate that fails counts as declining)."""
        names = self._matching(envelope)
        if not names and self._age() > REFRESH_ON_MISS:
            self.refresh()
            names = self._matching(envelope)
        return names

    def refresh(self) -> None:
        """Read the live subscriptions now (on failure the last view stands, and is logged)."""
        clock = self.audit.clock
        try:
            remote = self.audit.live_subscriptions(self.bus, clock.now() - timedelta(seconds=self.served_within))
        except Exception as exc:
            log.warning("could not read which handlers other processes serve: %s", exc)
            remote = self._remote
        with self._lock:
            self._remote = [s for s in remote if s.handler not in self.local]
            self._read_at = clock.monotonic()

    def _age(self) -> float:
        return float("inf") if self._read_at is None else self.audit.clock.monotonic() - self._read_at

    def _matching(self, envelope: Envelope) -> list[str]:
        if self._age() > REFRESH_EVERY:
            self.refresh()
        names = [name for name, h in self.local.items() if _accepts(h, envelope)]
        names += [s.handler for s in self._remote if any(topic_matches(p, envelope.type) for p in s.patterns)]
        return names


def _accepts(handler: Handler, envelope: Envelope) -> bool:
    try:
        return handler.matches(envelope)
    except Exception as exc:
        log.error("predicate of handler %s failed on %s %s: %s", handler.name, envelope.type, envelope.id, exc)
        return False
