"""The Heat watcher: an event source that turns a stack's event stream into envelopes.

It polls incrementally (marker, nested_depth, ascending) and publishes
``heat.resource.<STATUS>`` and ``heat.stack.<STATUS>``. Its cursor lives in the audit
database, and each envelope's id is derived from the Heat event id, so a restarted watcher,
or one whose marker was purged and who reads events again, publishes nothing that acts twice.
"""

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ..bus.publisher import Publisher
from ..core import metrics
from ..core.envelope import Envelope
from ..models.audit import AuditLog
from ..tasks import heat

log = logging.getLogger("stackreflex.watcher")

#: Seconds between polls of a quiet stack, and the ceiling of the backoff after errors.
DEFAULT_INTERVAL = 5.0
MAX_BACKOFF = 60.0
#: Envelope source attribute of what the watcher publishes.
SOURCE = "stackreflex/heat-watcher"


def envelope_id(event_id: str) -> str:
    """The same Heat event always becomes the same envelope id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"heat-event:{event_id}"))


def _owner(event: dict[str, Any]) -> tuple[str, str, str, bool]:
    """The stack an event belongs to (its link, name and id), and whether the event is of the
    stack itself rather than of one of its resources."""
    href = next(link["href"] for link in event["links"] if link["rel"] == "stack")
    name, stack_id = (unquote(part) for part in href.rstrip("/").rsplit("/", 2)[-2:])
    return href, name, stack_id, event["physical_resource_id"] == stack_id and event["resource_name"] == name


class HeatWatcher:
    def __init__(
        self,
        stacks: list[str],
        audit: AuditLog,
        publisher: Publisher,
        cloud_factory: Callable[[], object],
        interval: float = DEFAULT_INTERVAL,
        start_from: str = "now",
    ):
        self.stacks = stacks
        #: for a stack never watched (no cursor): publish its history ("beginning"), or ("now")
        #: only the events of the operations still under way (a deployment paused with its
        #: servers' stacks CREATE_IN_PROGRESS is acted on; one long over is not), then what
        #: happens from now on; a stack with a cursor goes on from it either way
        self.start_from = start_from
        self._first_look = set(stacks)
        self.audit = audit
        self.publisher = publisher
        self.cloud_factory = cloud_factory
        self.interval = interval
        self._types: dict[tuple[str, str], str | None] = {}
        #: the cloud's connection (openstacksdk's, which has no types)
        self._conn: Any = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self.cloud_factory()
        return self._conn

    def poll(self, stack: str) -> int:
        """Publish the stack's new events; returns how many."""
        top = heat.find_stack(self.conn, stack)
        published, cursor = 0, self.audit.cursor(stack)
        if stack in self._first_look:
            self._first_look.discard(stack)
            if cursor is None and self.start_from == "now":
                return self._from_now(stack, top)
            if cursor is not None:
                log.info("%s: going on from the last event published", stack)
        for event in heat.events_after(self.conn, top.name, top.id, cursor):
            self.publisher.publish(self._envelope(top, event), mandatory=False)
            self.audit.save_cursor(stack, event["id"])
            published += 1
        return published

    def _from_now(self, stack: str, top: heat.Stack) -> int:
        earlier = heat.events_after(self.conn, top.name, top.id, None)
        # where each stack's operation under way began (its last own *_IN_PROGRESS event); a
        # stack whose last own event ended its operation has none
        under_way: dict[str, int | None] = {}
        for n, event in enumerate(earlier):
            owner, _, _, is_stack = _owner(event)
            if is_stack:
                under_way[owner] = n if event["resource_status"].endswith("IN_PROGRESS") else None
        pending = []
        for n, event in enumerate(earlier):
            owner = _owner(event)[0]
            if owner in under_way:
                start = under_way[owner]
                if start is not None and n >= start:
                    pending.append(event)
            elif event["resource_status"].endswith("IN_PROGRESS"):  # a stack whose own events are not seen
                pending.append(event)
        for event in pending:
            self.publisher.publish(self._envelope(top, event), mandatory=False)
        if earlier:
            self.audit.save_cursor(stack, earlier[-1]["id"])
        log.info(
            "%s was never watched: watching from now; of its %d earlier event(s), only the %d of operations "
            "still under way are published (--from beginning publishes them all)",
            stack,
            len(earlier),
            len(pending),
        )
        return len(pending)

    def _envelope(self, top: heat.Stack, event: dict[str, Any]) -> Envelope:
        _, owner, owner_id, is_stack = _owner(event)
        status = event["resource_status"]
        # While a resource is created, Heat's events name it by a placeholder, not by its id.
        named_only = not is_stack and status.endswith("IN_PROGRESS")
        data = {
            "stack": top.name,
            "stack_id": top.id,
            "event_id": event["id"],
            "event_time": event["event_time"],
            "resource_name": event["resource_name"],
            "physical_resource_id": None if named_only else event["physical_resource_id"],
            "status": status,
            "reason": event.get("resource_status_reason"),
            "owner_stack": owner,
            "owner_stack_id": owner_id,
        }
        if not is_stack:
            key = (owner_id, event["resource_name"])
            if key not in self._types:
                self._types[key] = heat.resource_type(self.conn, owner, owner_id, event["resource_name"])
            # No role or index: a handler takes those from Heat's nesting, never from an event.
            data["resource_type"] = self._types[key]
        kind = "stack" if is_stack else "resource"
        return Envelope.new(
            f"heat.{kind}.{status}", subject=top.name, data=data, id=envelope_id(event["id"]), source=SOURCE
        )

    def run(self, stop: threading.Event) -> None:
        """Poll every stack until ``stop``, backing off while Heat or the bus fail."""
        backoff = self.interval
        log.info("watching %s every %.1fs", ", ".join(self.stacks), self.interval)
        while not stop.is_set():
            try:
                for stack in self.stacks:
                    count = self.poll(stack)
                    metrics.WATCHER_EVENTS.labels(stack).inc(count)
                    if count:
                        log.info("watcher published %d event(s) of %s", count, stack)
                backoff = self.interval
                metrics.WATCHER_LAST_POLL.set_to_current_time()
            except Exception as exc:  # Heat, the network or the bus: keep watching through outages
                metrics.WATCHER_ERRORS.inc()
                backoff = min(backoff * 2, MAX_BACKOFF)
                self._conn = None
                log.warning("watcher: %s; retrying in %.0fs", exc, backoff)
            stop.wait(backoff)
