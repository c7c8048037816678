"""``stackreflex worker``: the router and the handlers' dramatiq workers in one or more processes."""

import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Annotated

import typer

from ..bus import require_broker
from ..bus.publisher import Publisher
from ..core.settings import Settings
from ..runtime import Runtime
from ..sources.heat import DEFAULT_INTERVAL, HeatWatcher
from ..tasks.cloud import connect_cloud
from .common import invocation, load_all_handlers


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
        _supervise(processes, handlers, threads, watch, watch_interval)
        return
    registry = load_all_handlers(handlers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime = Runtime(settings, registry).start()
    watcher = _start_watcher(settings, runtime, watch, watch_interval, stop) if watch else None
    try:
        stop.wait()
    finally:
        if watcher is not None:
            watcher.join(timeout=30)
        runtime.stop()


def _start_watcher(
    settings: Settings, runtime: Runtime, stacks: list[str], interval: float, stop: threading.Event
) -> threading.Thread:
    """The Heat watcher in a thread of this worker, with its own publisher (connections are per thread)."""

    def watch_stacks() -> None:
        publisher = Publisher(settings)
        try:
            HeatWatcher(stacks, runtime.audit, publisher, lambda: connect_cloud(settings), interval).run(stop)
        finally:
            publisher.close()

    thread = threading.Thread(target=watch_stacks, name="heat-watcher", daemon=True)
    thread.start()
    return thread


def _supervise(
    processes: int, handlers: list[str], threads: int | None, watch: list[str], watch_interval: float
) -> None:
    """Run N single-process workers (the first also watching) and pass SIGTERM/SIGINT on to them."""
    argv = [sys.executable, "-m", "stackreflex"]
    if invocation.config:
        argv += ["--config", str(invocation.config)]
    for option, value in invocation.overrides.items():
        argv += [f"--{option.replace('_', '-')}", str(value)]
    argv += ["worker", "--processes", "1"] + [a for h in handlers for a in ("--handlers", h)]
    if threads:
        argv += ["--threads", str(threads)]
    watching = [a for stack in watch for a in ("--watch", stack)] + ["--watch-interval", str(watch_interval)]
    children = [subprocess.Popen(argv + (watching if n == 0 and watch else [])) for n in range(processes)]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise typer.Exit(1)
