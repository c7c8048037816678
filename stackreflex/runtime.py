"""The runtime of one worker process: router, dramatiq worker threads, lease heartbeats, and
the SQLite audit log's checkpoints.

Embedded or distributed is decided by settings alone (no broker URL: in-memory bus
and stub broker in this process), so the same handlers and audit log serve both.
"""

import logging
import os
import socket
import threading
import uuid
from functools import partial

import dramatiq

from .bus.dispatch import Dispatcher, build_broker
from .bus.publisher import Publisher
from .bus.router import Router
from .errors import BrokerUnavailable
from .handlers.execution import ActiveRuns, Services
from .handlers.registry import Registry, registry as default_registry
from .models.audit import AuditLog
from .settings import Settings
from .tasks.cloud import connect_cloud
from .tasks.ssh import open_ssh

log = logging.getLogger("stackreflex.worker")

#: How long start() waits for the router to be consuming (seconds).
STARTUP_TIMEOUT = 20.0
#: How often idle dramatiq consumers poll, which bounds how late a delayed message starts (ms).
WORKER_POLL_MS = 100
#: How often an SQLite audit log's WAL is copied back into the database file (seconds),
#: from a thread of its own instead of by whichever write passes 1,000 pages.
CHECKPOINT_INTERVAL = 0.25
#: How long stop() lets running handlers finish (seconds).
SHUTDOWN_GRACE = 30.0


class Runtime:
    """Everything a worker process runs; use as a context manager or start()/stop()."""

    def __init__(self, settings: Settings, registry: Registry | None = None, *,
                 audit: AuditLog | None = None):
        self.settings = settings
        self.registry = registry if registry is not None else default_registry
        self.audit = audit or AuditLog.open(settings.database())
        self.publisher = Publisher(settings)
        self.active = ActiveRuns()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.services = Services(
            audit=self.audit, publish=self.publisher.publish, notify=self.publisher.notify, owner=self.owner,
            lease_seconds=settings.lease_seconds, active=self.active,
            cloud_factory=self._cloud, ssh_factory=partial(open_ssh, settings),
            settings=settings)
        self.broker = build_broker(settings)
        dramatiq.set_broker(self.broker)
        self.dispatcher = Dispatcher(settings, self.broker, self.registry, self.services)
        self.router = Router(settings, self.registry, self.dispatcher, self.audit, self.publisher)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clouds = threading.local()
        self.worker: dramatiq.Worker | None = None

    def start(self) -> "Runtime":
        # dramatiq's own CLI emits this; middleware such as TimeLimit starts its watchdog on it.
        self.broker.emit_after("process_boot")
        for queue in self.dispatcher.queues():
            self.broker.declare_queue(queue)
        self.worker = dramatiq.Worker(self.broker, worker_threads=self.settings.worker_threads,
                                      worker_timeout=WORKER_POLL_MS)
        self.worker.start()
        loops = [("router", self.router.run), ("heartbeat", self._heartbeat)]
        if self.audit.defer_checkpoints():
            loops.append(("checkpoints", self._checkpoints))
        for name, target in loops:
            thread = threading.Thread(target=target, args=(self._stop,), name=f"stackreflex-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self.router.ready.wait(STARTUP_TIMEOUT):
            self.stop()
            raise BrokerUnavailable("the router could not start consuming within "
                                    f"{STARTUP_TIMEOUT:.0f}s; is the broker reachable?")
        log.info("worker ready: %d handlers (%s), owner %s", len(self.registry),
                 ", ".join(h.name for h in self.registry) or "none", self.owner)
        return self

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop taking envelopes, let running handlers finish, close connections."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.worker is not None:
            self.worker.stop(timeout=int(grace * 1000))
        self.broker.close()
        self.publisher.close()
        log.info("worker stopped")

    def join(self, queue_timeout: float = 30.0) -> None:
        """Embedded mode: wait until every handler queue is drained (for the CLI and the demo)."""
        for queue in self.dispatcher.queues():
            self.broker.join(queue, timeout=int(queue_timeout * 1000))

    def _cloud(self):
        """One openstacksdk connection per worker thread, kept across runs: a new one per run
        would authenticate to Keystone (and rediscover every service) for each node."""
        conn = getattr(self._clouds, "conn", None)
        if conn is None:
            conn = self._clouds.conn = connect_cloud(self.settings)
        return conn

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = self.settings.lease_seconds / 3
        while not stop.wait(interval):
            try:
                self.audit.heartbeat(self.active.snapshot(), self.owner, self.settings.lease_seconds)
            except Exception as exc:
                log.warning("could not extend run leases: %s", exc)

    def _checkpoints(self, stop: threading.Event) -> None:
        while not stop.wait(CHECKPOINT_INTERVAL):
            try:
                self.audit.checkpoint()
            except Exception as exc:
                log.warning("could not checkpoint the audit log's WAL: %s", exc)

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
