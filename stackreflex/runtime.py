"""The runtime of one process serving handlers: router, dramatiq worker threads, the run
lifecycle (leases, reconciliation), and the SQLite audit log's checkpoints.

Embedded or distributed is decided by settings alone (no broker URL: in-memory bus
and stub broker in this process), so the same handlers and audit log serve both.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import dramatiq

from .bus.backend import open_bus
from .bus.connections import bus_identity
from .bus.router import Router
from .core.envelope import Envelope
from .core.errors import BrokerUnavailable
from .core.registry import Registry
from .core.settings import Settings
from .handlers.context import RunContext
from .models.audit import AuditLog
from .runs.execution import Execution
from .runs.keeper import Keeper
from .runs.lifecycle import Lifecycle
from .runs.middleware import RunLifecycle, declare_actor
from .runs.policy import policy_for
from .runs.reconciler import Reconciler
from .runs.subscribers import Subscribers, served_by
from .tasks.cloud import cloud_identity, connect_cloud
from .tasks.ssh import open_ssh

log = logging.getLogger("stackreflex.worker")

#: How long start() waits for the router to be consuming (seconds).
STARTUP_TIMEOUT = 20.0
#: How often an SQLite audit log's WAL is copied back into the database file (seconds),
#: from a thread of its own instead of by whichever write passes 1,000 pages.
CHECKPOINT_INTERVAL = 0.25
#: How long stop() lets running handlers finish (seconds); they park at their next wait.
SHUTDOWN_GRACE = 30.0


class Runtime:
    """Everything a process serving handlers runs; use as a context manager or start()/stop()."""

    def __init__(self, settings: Settings, registry: Registry, *, audit: AuditLog | None = None):
        self.settings = settings
        self.registry = registry
        self.audit = audit or AuditLog.open(settings.database(), outage_limit=settings.database_outage_limit)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.bus_id = bus_identity(settings, self.owner)
        self.cloud = cloud_identity(settings)
        self._clouds = threading.local()
        self.lifecycle = Lifecycle(
            audit=self.audit,
            owner=self.owner,
            lease_seconds=settings.lease_seconds,
            dispatch=self._dispatch,
            context_factory=self._context,
            notify=self._notify,
            announces=settings.announces,
        )
        key = self.audit.dispatch_key(settings.dispatch_key)
        self.middleware = RunLifecycle(self.lifecycle, dispatch_key=key)
        self.bus = open_bus(settings, [self.middleware], dispatch_key=key)
        self.actors = {
            h.name: declare_actor(
                self.bus.broker, settings, h, policy_for(h, settings.handler_overrides), self.middleware
            )
            for h in self.registry
        }
        self.reconciler = Reconciler(
            self.audit, self._dispatch, self.actors, grace=settings.reconcile_grace, cloud=self.cloud
        )
        self.middleware.keeper = Keeper(
            self.lifecycle,
            self.reconciler,
            self.audit,
            served_by(self.registry),
            bus=self.bus_id,
            reconcile_interval=settings.reconcile_interval,
        )
        self.router = Router(
            settings,
            self.registry,
            Subscribers(self.registry, self.audit, self.bus_id),
            self.bus,
            self.audit,
            cloud=self.cloud,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.worker: dramatiq.Worker | None = None

    def start(self) -> "Runtime":
        # dramatiq's own CLI emits this; middleware such as TimeLimit starts its watchdog on it.
        self.bus.broker.emit_after("process_boot")
        self.worker = self.bus.worker(self.settings.worker_threads)
        self.worker.start()  # the lifecycle's keeper starts with it: leases, subscriptions, reconciliation
        loops = [("router", self.router.run)]
        if self.audit.defer_checkpoints():
            loops.append(("checkpoints", self._checkpoints))
        for name, target in loops:
            thread = threading.Thread(target=target, args=(self._stop,), name=f"stackreflex-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self.router.ready.wait(STARTUP_TIMEOUT):
            self.stop()
            raise BrokerUnavailable(
                f"the router could not start consuming within {STARTUP_TIMEOUT:.0f}s; is the broker reachable?"
            )
        log.info(
            "worker ready: %d handlers (%s), owner %s",
            len(self.registry),
            ", ".join(h.name for h in self.registry) or "none",
            self.owner,
        )
        return self

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop taking envelopes; running handlers park at their next wait or finish; close connections."""
        self.lifecycle.stopping.set()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.worker is not None:
            self.worker.stop(timeout=int(grace * 1000))
        self.bus.close()
        log.info("worker stopped")

    def dead_threads(self) -> list[str]:
        """The threads this process runs that have stopped (its ``/healthz``): none while all is well."""
        if self.worker is None:
            return []  # not started yet, or starting
        named = [(t.name, t) for t in self._threads]
        named += [("dramatiq worker", t) for t in self.worker.workers]
        named += [(f"dramatiq consumer of {q}", t) for q, t in self.worker.consumers.items()]
        keeper = self.middleware.keeper
        dead = [] if keeper is None or keeper.alive else ["stackreflex-keeper"]
        return dead + sorted({name for name, thread in named if not thread.is_alive()})

    def router_lag(self) -> float:
        """How long the oldest envelope the router holds unacknowledged has been held (seconds)."""
        since = self.router.held_since
        return 0.0 if since is None else max(time.monotonic() - since, 0.0)

    def _dispatch(self, handler: str, body: dict[str, Any], wake: int, delay: float | None) -> None:
        self.bus.dispatch(handler, body, wake, delay)

    def _notify(self, envelope: Envelope) -> None:
        self.bus.notify(envelope)

    def _context(self, execution: Execution) -> RunContext:
        notify = self.bus.notify if self.settings.announces(execution.envelope) else _unheard
        return RunContext(
            execution,
            publish=self.bus.publish,
            notify=_never_failing(notify),
            cloud_factory=self._cloud,
            ssh_factory=partial(open_ssh, self.settings),
            settings=self.settings,
        )

    def _cloud(self) -> Any:
        """One openstacksdk connection per worker thread, kept across runs: a new one per run
        would authenticate to Keystone (and rediscover every service) for each node."""
        conn = getattr(self._clouds, "conn", None)
        if conn is None:
            conn = self._clouds.conn = connect_cloud(self.settings)
        return conn

    def _checkpoints(self, stop: threading.Event) -> None:
        while not stop.wait(CHECKPOINT_INTERVAL):
            try:
                self.audit.checkpoint()
            except Exception as exc:
                log.warning("could not checkpoint the audit log's WAL: %s", exc)

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _unheard(envelope: Envelope) -> None:
    """The notices of a run nobody follows: not sent (see ``Settings.run_notices``)."""


def _never_failing(notify: Callable[[Envelope], None]) -> Callable[[Envelope], None]:
    """Progress notices must never fail a run: log and go on."""

    def send(envelope: Envelope) -> None:
        try:
            notify(envelope)
        except Exception as exc:
            log.warning("could not publish %s: %s", envelope.type, exc)

    return send
