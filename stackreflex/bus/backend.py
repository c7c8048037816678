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
from .connections import connect, kombu_connection, server_properties
from .dispatch import DispatchChannel, Dispatcher, RelayedRabbitmqBroker, build_broker
from .publisher import Publisher, unrouted_queue
from .queues import (
    QueueType,
    arguments,
    dead_letter_queue_name,
    declare,
    intake_arguments,
    resolve,
    router_queue_name,
)

#: How often idle dramatiq consumers poll, which bounds how late a delayed message starts (ms).
WORKER_POLL_MS = 100

#: Headers a parked message carries.
REASON_HEADER = "x-stackreflex-reason"
ROUTING_KEY_HEADER = "x-stackreflex-routing-key"


def dead_letter_queue(settings: Settings, queue_type: QueueType) -> Queue:
    return Queue(
        dead_letter_queue_name(settings), durable=True, queue_arguments=arguments(queue_type, "parking") or None
    )


class Bus:
    """Envelopes on the topic exchange, and handler messages through dramatiq, authenticated
    with the installation's ``dispatch_key``."""

    def __init__(self, settings: Settings, lifecycle: Sequence[Middleware] = (), *, dispatch_key: bytes):
        self.settings = settings
        self.publisher = Publisher(settings)
        self.broker = build_broker(settings, list(lifecycle), send=self.publisher.send_message)
        self.dispatcher = Dispatcher(settings, self.broker, dispatch_key)
        self._queue_type: QueueType | None = None

    def queue_type(self) -> QueueType:
        """The type of the queues declared on this bus (``STACKREFLEX_QUEUE_TYPE`` on this broker)."""
        if self._queue_type is None:
            if self.settings.embedded:
                self._queue_type = resolve(self.settings, None)
            else:
                with kombu_connection(self.settings) as connection:
                    connect(connection, self.settings)
                    self._queue_type = resolve(self.settings, server_properties(connection))
        return self._queue_type

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
            dead_letter_queue(self.settings, self.queue_type()),
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
        """dramatiq's worker threads for the handlers declared on this bus's broker, once their
        queues and the router's are declared (a queue of the other type stops the start here
        with what to do, rather than in consumer threads that would retry it for ever)."""
        self.declare_queues()
        return dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=WORKER_POLL_MS)

    def declare_queues(self) -> None:
        """Declare the bus's queues and every handler's (``.DQ`` and ``.XQ`` with it)."""
        if self.settings.embedded:
            return
        queue_type = self.queue_type()
        dlq = dead_letter_queue(self.settings, queue_type)
        router = Queue(
            router_queue_name(self.settings), durable=True, queue_arguments=intake_arguments(self.settings, queue_type)
        )
        with kombu_connection(self.settings) as connection:
            connect(connection, self.settings)
            declare(connection, dlq, self.settings, queue_type, "parking")
            for queue in (router, unrouted_queue(self.settings, queue_type)):
                declare(connection, queue, self.settings, queue_type, "intake", dlq.name)
        if isinstance(self.broker, RelayedRabbitmqBroker):
            for name in sorted(self.broker.get_declared_queues()):
                self.broker.declare_queue(name, ensure=True)

    def close(self) -> None:
        self.broker.close()
        self.publisher.close()


def open_bus(settings: Settings, lifecycle: Sequence[Middleware] = (), *, dispatch_key: bytes) -> Bus:
    return Bus(settings, lifecycle, dispatch_key=dispatch_key)
