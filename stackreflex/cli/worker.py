"""``stackreflex worker``: the router and the handlers' dramatiq workers in one or more processes."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer

from ..bus import require_broker
from ..bus.publisher import Publisher
from ..core import systemd
from ..core.settings import Settings
from ..health import DEFAULT_ADDRESS, worker_health
from ..runtime import Runtime
from ..sources.heat import DEFAULT_INTERVAL, HeatWatcher
from ..tasks.cloud import connect_cloud
from .common import invocation, load_all_handlers

#: The options of a service's health endpoint (``worker`` and ``watch``).
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help=(
            "Serve /metrics (Prometheus), /healthz and /readyz over HTTP on this port; unset, nothing is served. "
            "With `worker --processes N`, process n (from 0) serves this port + n."
        ),
    ),
]
MetricsAddress = Annotated[
    str,
    typer.Option("--metrics-address", help="The address the metrics port listens on (0.0.0.0: every interface)."),
]


def worker(
    handlers: Annotated[
        list[str] | None,
        typer.Option(
            "--handlers",
            "-H",
            help=(
                "A module (my_pkg.handlers) or file (./my_handlers.py) whose @handler functions this worker "
                "serves, besides the built-in ones. Repeat for several."
            ),
        ),
    ] = None,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes to run.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, max=256, help="Handler threads per process.")] = None,
    watch: Annotated[
        list[str] | None,
        typer.Option(
            "--watch",
            help=(
                "Also watch this Heat stack's events, as `stackreflex watch` does (in the first process only; a stack "
                "never watched from now). "
                "Repeat for several."
            ),
        ),
    ] = None,
    watch_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between polls of a quiet stack.")
    ] = DEFAULT_INTERVAL,
    metrics_port: MetricsPort = None,
    metrics_address: MetricsAddress = DEFAULT_ADDRESS,
) -> None:
    """Serve handlers: route envelopes from RabbitMQ into dramatiq and run them.

    Needs a broker (STACKREFLEX_BROKER_URL). Stops cleanly on SIGTERM or Ctrl-C: it stops taking envelopes and lets running handlers finish. With --watch it also publishes the stacks' Heat events, so one process does the whole deployed-server flow.
    """
    if watch is None:
        watch = []
    if handlers is None:
        handlers = []
    settings = invocation.settings
    require_broker(
        settings,
        "stackreflex worker serves a broker",
        "without one, `stackreflex publish` and `stackreflex demo` run handlers in-process",
    )
    if threads:
        settings = settings.model_copy(update={"worker_threads": threads})
    if processes > 1:
        metrics = ["--metrics-address", metrics_address] if metrics_port else []
        _supervise(processes, handlers, threads, watch, watch_interval, metrics, metrics_port)
        return
    registry = load_all_handlers(handlers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime = Runtime(settings, registry)
    watcher = (
        threading.Thread(
            target=_watch_stacks(settings, runtime, watch, watch_interval, stop), name="heat-watcher", daemon=True
        )
        if watch
        else None
    )
    health = worker_health(runtime, watcher)
    if metrics_port:
        health.serve(metrics_address, metrics_port)
    runtime.start()
    if watcher is not None:
        watcher.start()
    health.ready()
    try:
        stop.wait()
    finally:
        health.stopping()
        if watcher is not None:
            watcher.join(timeout=30)
        runtime.stop()


def _watch_stacks(
    settings: Settings, runtime: Runtime, stacks: list[str], interval: float, stop: threading.Event
) -> Callable[[], None]:
    """The Heat watcher, for a thread of this worker, with its own publisher (connections are per thread)."""

    def watch_stacks() -> None:
        publisher = Publisher(settings)
        try:
            HeatWatcher(stacks, runtime.audit, publisher, lambda: connect_cloud(settings), interval).run(stop)
        finally:
            publisher.close()

    return watch_stacks


def _supervise(
    processes: int,
    handlers: list[str],
    threads: int | None,
    watch: list[str],
    watch_interval: float,
    metrics: list[str],
    metrics_port: int | None,
) -> None:
    """Run N single-process workers (the first also watching; process n serving its metrics on
    ``metrics_port + n``) and pass SIGTERM/SIGINT on to them."""
    argv = [sys.executable, "-m", "stackreflex"]
    if invocation.config:
        argv += ["--config", str(invocation.config)]
    for option, value in invocation.overrides.items():
        argv += [f"--{option.replace('_', '-')}", str(value)]
    argv += ["worker", "--processes", "1"] + [a for h in handlers for a in ("--handlers", h)]
    if threads:
        argv += ["--threads", str(threads)]
    watching = [a for stack in watch for a in ("--watch", stack)] + ["--watch-interval", str(watch_interval)]
    relay = systemd.Relay(processes) if os.environ.get("NOTIFY_SOCKET") else None
    children = [
        subprocess.Popen(
            argv
            + (watching if n == 0 and watch else [])
            + ([*metrics, "--metrics-port", str(metrics_port + n)] if metrics_port else []),
            env=relay.environment() if relay else None,
        )
        for n in range(processes)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        systemd.notify("STOPPING=1")
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    while any(child.poll() is None for child in children):
        if relay is not None:
            relay.relay(0.1)
        else:
            time.sleep(0.2)
    codes = [child.wait() for child in children]
    if relay is not None:
        relay.close()
    if any(codes):
        raise typer.Exit(1)
