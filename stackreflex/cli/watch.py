"""``stackreflex watch``: publish a Heat stack's events as envelopes, as its own process."""

import signal
import threading
from typing import Annotated

import typer

from ..bus import require_broker
from ..bus.publisher import Publisher
from ..health import DEFAULT_ADDRESS, watcher_health
from ..sources.heat import DEFAULT_INTERVAL, HeatWatcher
from ..tasks.cloud import connect_cloud
from .common import invocation
from .worker import MetricsAddress, MetricsPort


def watch(
    stacks: Annotated[list[str], typer.Argument(help="Heat stacks to watch, e.g. overcloud.")],
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between polls of a quiet stack.")
    ] = DEFAULT_INTERVAL,
    start_from: Annotated[
        str,
        typer.Option(
            "--from",
            help=(
                "For a stack never watched: `now` publishes only what happens from now on; `beginning` publishes "
                "its whole event history first (its handlers react to it all). A stack watched before goes on from "
                "its last event either way."
            ),
        ),
    ] = "now",
    metrics_port: MetricsPort = None,
    metrics_address: MetricsAddress = DEFAULT_ADDRESS,
) -> None:
    """Poll Heat's events for the stacks and publish them (heat.resource.<STATUS>, heat.stack.<STATUS>).

    The cursor is kept in the audit database: a restarted watcher goes on where it stopped.
    Credentials come from clouds.yaml/OS_CLOUD or the OS_* variables of a sourced stackrc.
    """
    if start_from not in ("now", "beginning"):
        raise typer.BadParameter("use now or beginning", param_hint="--from")
    settings = invocation.settings
    require_broker(settings, "stackreflex watch publishes to a broker", "the demo shows the watcher in embedded mode")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    publisher = Publisher(settings)
    audit = invocation.audit()
    watcher = HeatWatcher(stacks, audit, publisher, lambda: connect_cloud(settings), interval, start_from=start_from)
    thread = threading.Thread(target=watcher.run, args=(stop,), name="heat-watcher", daemon=True)
    health = watcher_health(settings, audit, thread)
    if metrics_port:
        health.serve(metrics_address, metrics_port)
    thread.start()
    health.ready()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        health.stopping()
        stop.set()
        thread.join(30)
        publisher.close()
    if not stop.is_set():
        raise typer.Exit(1)  # the watcher stopped by itself: its error is in the log
