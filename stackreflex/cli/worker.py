"""``stackreflex worker``: the router and the handlers' dramatiq workers in one or more processes."""

import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

from ..errors import ConfigError
from ..runtime import Runtime
from .common import invocation, load_all_handlers


def worker(
    handlers: Annotated[list[str], typer.Option("--handlers", "-H", help=(
        "A module (my_pkg.handlers) or file (./my_handlers.py) whose @handler functions this worker "
        "serves, besides the built-in ones. Repeat for several."))] = [],
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes to run.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, max=256, help="Handler threads per process.")] = None,
) -> None:
    """Serve handlers: route envelopes from RabbitMQ into dramatiq and run them.

    Needs a broker (STACKREFLEX_BROKER_URL). Stops cleanly on SIGTERM or Ctrl-C: it
    stops taking envelopes and lets running handlers finish.
    """
    settings = invocation.settings
    if settings.embedded:
        raise ConfigError("stackreflex worker serves a broker, and none is configured: set "
                          "STACKREFLEX_BROKER_URL (e.g. amqp://USER@rabbit.example:5672/); without one, "
                          "`stackreflex publish` and `stackreflex demo` run handlers in-process")
    if threads:
        settings = settings.model_copy(update={"worker_threads": threads})
    if processes > 1:
        _supervise(processes, handlers, threads)
        return
    load_all_handlers(handlers)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runtime = Runtime(settings).start()
    try:
        stop.wait()
    finally:
        runtime.stop()


def _supervise(processes: int, handlers: list[str], threads: int | None) -> None:
    """Run N single-process workers and pass SIGTERM/SIGINT on to them."""
    argv = [sys.executable, "-m", "stackreflex"]
    if invocation.config:
        argv += ["--config", str(invocation.config)]
    for option, value in invocation.overrides.items():
        argv += [f"--{option.replace('_', '-')}", str(value)]
    argv += ["worker", "--processes", "1"] + [a for h in handlers for a in ("--handlers", h)]
    if threads:
        argv += ["--threads", str(threads)]
    children = [subprocess.Popen(argv) for _ in range(processes)]

    def forward(signum, _frame):
        for child in children:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise typer.Exit(1)
