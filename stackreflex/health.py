"""The health of a service process (``worker``, ``watch``): ``/metrics``, ``/healthz`` and
``/readyz`` on one HTTP port, and systemd's notify protocol.

- ``/metrics``: every ``stackreflex_*`` family (:mod:`stackreflex.core.metrics`) in Prometheus's
  text format (OpenMetrics if asked); the gauges read from the audit log and the broker are
  read on each scrape, each within :data:`CHECK_TIMEOUT` (one that does not answer in time is
  left out of that scrape, never holding it up).
- ``/healthz``: 200 while every thread the process runs is alive; 503 naming the dead ones
  (a restart is what helps).
- ``/readyz``: 200 when the broker and the audit database answer and the schema is current;
  503 with the reasons otherwise (waiting helps; no credential is in them).
- systemd: ``READY=1`` once serving, ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while
  ``/healthz`` would say 200 (a dead thread stops it, and systemd restarts the service),
  ``STOPPING=1`` on the way out.
"""

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from .bus.health import BrokerProbe
from .core import metrics, systemd
from .core.errors import ConfigError
from .core.settings import Settings
from .models.audit import AuditLog
from .models.health import check_engine, schema_problem, waiting_runs
from .runtime import Runtime

log = logging.getLogger("stackreflex.health")

#: How long one check (of the broker, of the database) may take before it counts as not answering (seconds).
CHECK_TIMEOUT = 2.0
#: Where the metrics port listens unless told otherwise: this host only.
DEFAULT_ADDRESS = "127.0.0.1"

#: A check: None if all is well, else why not.
Check = Callable[[], str | None]


class _Bounded:
    """Runs a check in a thread of its own and waits for it at most :data:`CHECK_TIMEOUT`; a
    check whose previous run has not returned yet is not started again (no pile-up of threads
    stuck on an unreachable host)."""

    def __init__(self, name: str, work: Callable[[], Any]):
        self.name, self.work = name, work
        self._done: threading.Event | None = None
        self._lock = threading.Lock()

    def start(self) -> tuple[threading.Event, dict[str, Any]] | None:
        with self._lock:
            if self._done is not None and not self._done.is_set():
                return None
            done, outcome = threading.Event(), {}
            self._done = done

        def run() -> None:
            try:
                outcome["value"] = self.work()
            except Exception as exc:
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name=f"stackreflex-check-{self.name}", daemon=True).start()
        return done, outcome


def _all_at_once(checks: dict[str, _Bounded]) -> dict[str, Any]:
    """Run the checks side by side; each one's value, or the exception it raised (a
    :class:`TimeoutError` if it did not answer within :data:`CHECK_TIMEOUT`)."""
    started = {name: check.start() for name, check in checks.items()}
    outcomes: dict[str, Any] = {}
    for name, handle in started.items():
        if handle is None:
            outcomes[name] = TimeoutError(f"its previous check has not answered yet (over {CHECK_TIMEOUT:.0f}s)")
            continue
        done, outcome = handle
        if not done.wait(CHECK_TIMEOUT):  # the checks run meanwhile: all of them wait about this long at most
            outcomes[name] = TimeoutError(f"no answer within {CHECK_TIMEOUT:.0f}s")
        else:
            outcomes[name] = outcome.get("error", outcome.get("value"))
    return outcomes


class ServiceHealth:
    """The checks of one service process, served over HTTP and told to systemd.

    ``dead()`` names the threads that should run and do not; ``checks`` are the readiness
    checks by name; ``gauges`` the gauges read on each scrape, each with what sets it (a gauge
    whose read fails or does not answer in time is cleared: absent from that scrape, not stale).
    """

    def __init__(
        self,
        dead: Callable[[], list[str]],
        checks: dict[str, Check],
        gauges: dict[str, tuple[Any, Callable[[], None]]] | None = None,
        close: Callable[[], None] = lambda: None,
    ):
        self.dead = dead
        self._checks = {name: _Bounded(name, check) for name, check in checks.items()}
        self._gauges = {name: (gauge, _Bounded(name, read)) for name, (gauge, read) in (gauges or {}).items()}
        self._close = close
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- what the endpoints answer -----------------------------------------------------

    def healthz(self) -> tuple[int, str]:
        dead = self.dead()
        if dead:
            return 503, f"not alive: thread {', '.join(dead)} stopped\n"
        return 200, "alive\n"

    def readyz(self) -> tuple[int, str]:
        problems = []
        for name, outcome in _all_at_once(self._checks).items():
            if isinstance(outcome, BaseException):
                problems.append(f"{name}: {outcome if isinstance(outcome, TimeoutError) else type(outcome).__name__}")
            elif outcome:
                problems.append(outcome)
        if problems:
            return 503, "not ready: " + "; ".join(problems) + "\n"
        return 200, "ready\n"

    def metrics(self, accept: str | None) -> tuple[bytes, str]:
        reads = {name: read for name, (_, read) in self._gauges.items()}
        for name, outcome in _all_at_once(reads).items():
            if isinstance(outcome, BaseException):
                self._gauges[name][0].clear()
                log.debug("%s left out of this scrape: %s", name, outcome)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(REGISTRY), content_type

    # -- serving -------------------------------------------------------------------------

    def serve(self, address: str, port: int) -> None:
        """Serve the endpoints on ``address:port`` from a thread of their own."""
        server = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in address else socket.AF_INET})
        try:
            self._server = server((address, port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}") from None
        threading.Thread(target=self._server.serve_forever, name="stackreflex-metrics", daemon=True).start()
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", address, self._server.server_port)

    def ready(self) -> None:
        """Tell systemd the service is ready, and pet its watchdog from now on if it has one."""
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._watchdog = threading.Thread(
                target=self._pet, args=(interval,), name="stackreflex-watchdog", daemon=True
            )
            self._watchdog.start()

    def _pet(self, interval: float) -> None:
        said = False
        while not self._stop.is_set():
            dead = self.dead()
            if not dead:
                systemd.notify("WATCHDOG=1")
            elif not said:
                said = True
                log.error("thread %s stopped: no longer petting systemd's watchdog (it restarts us)", ", ".join(dead))
            self._stop.wait(interval)

    def stopping(self) -> None:
        """Tell systemd the service is stopping; stop the watchdog and the endpoints."""
        systemd.notify("STOPPING=1")
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _handler_for(health: ServiceHealth) -> type[BaseHTTPRequestHandler]:
    class Endpoints(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = health.metrics(self.headers.get("Accept"))
                self._answer(200, body, content_type)
            elif path in ("/healthz", "/readyz"):
                status, text = health.healthz() if path == "/healthz" else health.readyz()
                self._answer(status, text.encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics endpoint: " + format, *args)

    return Endpoints


# -- the two services -------------------------------------------------------------------


def worker_health(runtime: Runtime, watcher: threading.Thread | None = None) -> ServiceHealth:
    """A worker's: its router, dramatiq threads, keeper (and watcher); the broker and the
    audit log; runs waiting and dead letters read on scrape."""
    broker = BrokerProbe(runtime.settings)
    engine = check_engine(runtime.audit.engine)
    handlers = [h.name for h in runtime.registry]

    def dead() -> list[str]:
        return runtime.dead_threads() + ([watcher.name] if watcher is not None and not watcher.is_alive() else [])

    def router() -> str | None:
        return None if runtime.router.ready.is_set() else "the router is not consuming (reconnecting to the broker)"

    def runs_waiting() -> None:
        waiting = waiting_runs(engine)
        for name in {*handlers, *waiting}:
            metrics.RUNS_WAITING.labels(name).set(waiting.get(name, 0))

    def dead_letters() -> None:
        for (kind, handler), depth in broker.dead_letters(handlers).items():
            metrics.DEAD_LETTERS.labels(kind, handler).set(depth)

    def close() -> None:
        broker.close()
        engine.dispose()

    metrics.ROUTER_LAG.set_function(runtime.router_lag)
    return ServiceHealth(
        dead,
        {"router": router, "broker": broker.problem, "database": lambda: schema_problem(engine)},
        {"runs waiting": (metrics.RUNS_WAITING, runs_waiting), "dead letters": (metrics.DEAD_LETTERS, dead_letters)},
        close,
    )


def watcher_health(settings: Settings, audit: AuditLog, watcher: threading.Thread) -> ServiceHealth:
    """A watcher's: its watching thread; the broker it publishes to and the audit log that holds its cursors."""
    broker = BrokerProbe(settings)
    engine = check_engine(audit.engine)

    def close() -> None:
        broker.close()
        engine.dispose()

    return ServiceHealth(
        lambda: [] if watcher.is_alive() else [watcher.name],
        {"broker": broker.problem, "database": lambda: schema_problem(engine)},
        close=close,
    )
