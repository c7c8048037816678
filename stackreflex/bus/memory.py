"""The embedded bus's transport: kombu's in-memory one, woken by each message instead of polling.

kombu's memory transport looks for messages every ``polling_interval``. Polled every 10 ms,
an idle embedded process spent ~15 ms of CPU a second on the router's looks alone, and each
hop could wait up to 10 ms. Here every message put (and every acknowledgement, which may let
a consumer at its prefetch limit take another) wakes the threads draining, and an idle drain
sleeps until then or until its timeout.
"""

import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import memory

_arrived = threading.Condition()
#: Counts puts and acknowledgements: a drain that saw it change since it last looked looks again.
_generation = 0


def _wake() -> None:
    global _generation
    with _arrived:
        _generation += 1
        _arrived.notify_all()


class Channel(memory.Channel):
    """kombu's memory channel (the same queues and bindings), waking drains on each put."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]  # kombu: unannotated
        _wake()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str | None = None, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)  # type: ignore[no-untyped-call]  # kombu: unannotated
        _wake()

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge ``delivery_tag``, and with ``multiple`` every earlier delivery of this
        channel too, as AMQP does (kombu's virtual channel acknowledged the one tag only: the
        router's acknowledgement of a batch left the rest held, and its window shrank to one)."""
        qos, tags = self.qos, [delivery_tag]
        if multiple:  # the deliveries held, in the order they were made, up to this one
            held = list(qos._delivered)
            tags = held[: held.index(delivery_tag) + 1] if delivery_tag in held else tags
        for tag in tags:
            if tag not in qos._dirty:
                super().basic_ack(tag)  # type: ignore[no-untyped-call]  # kombu: unannotated
        _wake()

    def basic_reject(self, delivery_tag: int, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]  # kombu: unannotated
        _wake()


class Transport(memory.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message, waiting up to ``timeout`` for one (TimeoutError if none came)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        assert self.cycle is not None  # set up with the transport's first channel
        while True:
            seen = _generation  # read before looking: a put after the look changes it
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            with _arrived:
                while _generation == seen:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError()
                    _arrived.wait(remaining)
