"""What a process serving handlers does between messages: keep its executions' leases alive,
say which handlers it serves, and reconcile runs nothing else accounts for."""

import logging
import threading
from collections.abc import Callable

from ..core.records import Served
from ..models.audit import AuditLog
from .lifecycle import Lifecycle
from .reconciler import Reconciler

log = logging.getLogger("stackreflex.worker")


class Keeper:
    """A thread of the process: heartbeats every third of a lease, a reconcile pass at start and
    every ``reconcile_interval`` seconds."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        reconciler: Reconciler,
        audit: AuditLog,
        served: list[Served],
        *,
        bus: str,
        reconcile_interval: float,
    ):
        self.lifecycle, self.reconciler, self.audit = lifecycle, reconciler, audit
        self.served, self.bus, self.reconcile_interval = served, bus, reconcile_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._guarded(
            "register this process's handlers",
            lambda: self.audit.register_subscriptions(self.lifecycle.owner, self.served, self.bus),
        )
        self._thread = threading.Thread(target=self._loop, name="stackreflex-keeper", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Its thread runs (started and not stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._guarded("unregister this process's handlers", lambda: self.audit.drop_subscriptions(self.lifecycle.owner))

    def _loop(self) -> None:
        beat = self.lifecycle.lease_seconds / 3
        clock = self.lifecycle.clock
        next_reconcile = clock.monotonic()
        while not self._stop.is_set():
            self._guarded("extend run leases", self.lifecycle.heartbeat)
            self._guarded("renew this process's handlers", lambda: self.audit.renew_subscriptions(self.lifecycle.owner))
            if clock.monotonic() >= next_reconcile:
                self._guarded("reconcile runs", self.reconciler.once)
                next_reconcile = clock.monotonic() + self.reconcile_interval
            self._stop.wait(min(beat, max(next_reconcile - clock.monotonic(), 0.05)))

    @staticmethod
    def _guarded(what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:
            log.warning("could not %s: %s", what, exc)
