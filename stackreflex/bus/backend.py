"""The bus one process is on, behind one interface: publish, notify, dispatch (now or later),
consume, dead letters. Two backends, chosen by settings alone: RabbitMQ (a broker URL) or the
embedded in-memory bus of this process (none); the router, the lifecycle and the CLI use this
interface and never ask which it is, except through :func:`stackreflex.bus.in_process` (an
embedded bus has no worker elsewhere, so a command must serve its handlers itself).
"""

from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from kombu.connection import Connection
from kombu.entity import Queue

from ..core.envelope import Envelope
from ..core.settings import Settings
from .connections import kombu_connection
from .dispatch import DispatchChannel, Dispatcher, build_broker
from .publisher import Publisher

#: How often idle dramatiq consumers poll, which bounds how late a delayed message starts (ms).
WORKER_POLL_MS = 100

#: Headers a parked message carries.
REASON_HEADER = "x-stackreflex-reason"
ROUTING_KEY_HEADER = "x-stackreflex-routing-key"


def dead_letter_queue(settings: Settings) -> Queue:
    return Queue(f"{settings.namespace}.dlq", durable=True)  # type: ignore[no-untyped-call]  # kombu: unannotated


class Bus:
    """Envelopes on the topic exchange, and handler messages through dramatiq, authenticated
    with the installation's ``dispatch_key``."""

    def __init__(self, settings: Settings, lifecycle: Sequence[Middleware] = (), *, dispatch_key: bytes):
        self.settings = settings
        self.publisher = Publisher(settings)
        self.broker = build_broker(settings, list(lifecycle), send=self.publisher.send_message)
        self.dispatcher = Dispatcher(settings, self.broker, dispatch_key)

    def publish(self, envelope: Envelope) -> None:
        """Confirmed; an envelope no queue is bound to receive raises ``UnroutableError``."""
        self.publisher.publish(envelope)

    def notify(self, envelope: Envelope) -> None:
        """An advisory notice (progress, routing news), not confirmed."""
        self.publisher.notify(envelope)

    def dispatch(self, handler: str, body: dict[str, Any], wake: int = 0, delay: float | None = None) -> None:
        """A run's message to its handler's queue, ``delay`` seconds from now (None: now)."""
        self.dispatcher.dispatch(handler, body, wake, delay)

    def park(self, body: bytes, routing_key: str, reason: str, key: str) -> None:
        """A message that cannot be accepted, with why, in the dead-letter queue (``key``, the
        digest its record holds, is its message id there)."""
        self.publisher.send_to_queue(
            body,
            dead_letter_queue(self.settings),
            {REASON_HEADER: reason, ROUTING_KEY_HEADER: routing_key[:255]},
            message_id=key,
        )

    def connection(self, *, consumer: bool = False, confirm: bool = True) -> Connection:
        """A connection to consume on (the router's, a follower's)."""
        return kombu_connection(self.settings, consumer=consumer, confirm=confirm)

    def dispatch_channel(self, connection: Connection) -> DispatchChannel:
        """Where a consumer on ``connection`` sends batches of first messages."""
        return self.dispatcher.channel(connection)

    def worker(self, threads: int) -> dramatiq.Worker:
        """dramatiq's worker threads for the handlers declared on this bus's broker."""
        return dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=WORKER_POLL_MS)

    def close(self) -> None:
        self.broker.close()
        self.publisher.close()


def open_bus(settings: Settings, lifecycle: Sequence[Middleware] = (), *, dispatch_key: bytes) -> Bus:
    return Bus(settings, lifecycle, dispatch_key=dispatch_key)
