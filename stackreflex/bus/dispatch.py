"""dramatiq: a queue per handler, on RabbitMQ or (embedded) the stub broker, and the messages
that send a run to its handler.

On RabbitMQ every message to a handler goes out through one client, the bus's own (py-amqp,
persistent, confirmed, mandatory): the router's batches on its confirming channel, and every
other dispatch (wake-ups, retries, a reconciler's, ``runs resume``) through the publisher.
dramatiq's pika connections only consume, and declare a handler's queues the way dramatiq
lays them out, as quorum or classic queues (see :mod:`stackreflex.bus.queues`).
"""

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
import pika
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name, xq_name
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications, TimeLimit
from kombu.connection import Connection

from ..core import metrics
from ..core.envelope import Envelope
from ..core.settings import Settings
from .confirms import Confirmation, ConfirmedChannel
from .connections import broker_urls, ssl_context
from .queues import QueueType, Role, arguments, is_mismatch, mismatch_error, resolve

log = logging.getLogger(__name__)

#: ``send(queue, body)``: put one encoded message on a queue, confirmed.
Send = Callable[[str, bytes], None]

#: The message option holding the HMAC that says this installation sent the message.
AUTH_OPTION = "stackreflex_auth"


def _authenticator(key: bytes, message: dramatiq.Message[Any] | MessageProxy) -> str:
    """HMAC over the message's id, actor, envelope (its id and every byte of what it says) and
    wake-up: the run is (envelope id, actor), so the HMAC names the run it may act on."""
    body = message.args[0] if message.args else None
    wake = message.args[1] if len(message.args) > 1 else 0
    envelope_id = body.get("id") if isinstance(body, dict) else None
    content = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    signed = json.dumps([message.message_id, message.actor_name, envelope_id, wake, content])
    return hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()


def authentic(key: bytes, message: dramatiq.Message[Any] | MessageProxy) -> bool:
    """Whether this installation's router or lifecycle sent ``message``, as it is."""
    given = message.options.get(AUTH_OPTION)
    return isinstance(given, str) and hmac.compare_digest(given, _authenticator(key, message))


class RelayedRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker, whose messages go out through ``send`` (the bus's client),
    and whose queues are of the installation's type."""

    def __init__(self, *, send: Send | None, settings: Settings, **options: Any):
        super().__init__(**options)
        self._send = send
        self.settings = settings
        self._queue_type: QueueType | None = None
        self._consumed: set[str] = set()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.broker.Consumer:
        # dramatiq's consumer thread calls this again for its queue after its connection broke
        if queue_name in self._consumed:
            metrics.BROKER_RECONNECTS.labels("handler_consumer").inc()
        self._consumed.add(queue_name)
        return super().consume(queue_name, prefetch, timeout)

    def queue_type(self) -> QueueType:
        """The type this broker's queues are declared with (asked of the broker once)."""
        if self._queue_type is None:
            self._queue_type = resolve(self.settings, self.connection._impl.server_properties)
        return self._queue_type

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declared(queue_name, "handler", xq_name(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declared(dq_name(queue_name), "delay", xq_name(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        return self._declared(xq_name(queue_name), "dead")

    def _declared(self, name: str, role: Role, dead_letters_to: str | None = None) -> Any:
        """Declare one queue; one that exists with the other type is a ConfigError saying what to do."""

        def declare(queue_type: QueueType) -> Any:
            args = arguments(queue_type, role, dead_letters_to=dead_letters_to)
            return self.channel.queue_declare(queue=name, durable=True, arguments=args)

        wanted = self.queue_type()
        try:
            return declare(wanted)
        except pika.exceptions.ChannelClosedByBroker as exc:
            del self.channel  # the broker closed it
            if not is_mismatch(exc.reply_code, exc.reply_text):
                raise

            def is_of_type(candidate: QueueType) -> bool:
                try:
                    declare(candidate)
                    return True
                except pika.exceptions.ChannelClosedByBroker:
                    del self.channel
                    return False

            raise mismatch_error(self.settings, name, wanted, exc.reply_text, is_of_type) from None

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        canonical = message.queue_name
        if delay is not None:
            message = message.copy(queue_name=dq_name(canonical), options={"eta": current_millis() + delay})
        self.declare_queue(canonical, ensure=True)  # once per queue and process
        if self._send is None:
            raise RuntimeError("this broker was built without a send function: it cannot enqueue")
        self.emit_before("enqueue", message, delay)
        if self._send is None:
            raise RuntimeError("this broker was built without a send function: it only consumes")
        self._send(message.queue_name, message.encode())
        self.emit_after("enqueue", message, delay)
        return message


def build_broker(
    settings: Settings, lifecycle: Sequence[Middleware] = (), *, send: Send | None = None
) -> dramatiq.Broker:
    """RabbitMQ (its messages sent through ``send``), or the in-process stub broker when embedded.

    ``lifecycle`` (the run lifecycle's middleware) goes after ``Retries`` and before
    ``TimeLimit``: see :mod:`stackreflex.runs.middleware` for why.
    """
    middleware = [AgeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries(), *lifecycle, TimeLimit()]
    if settings.embedded:
        return StubBroker(middleware=middleware)
    # several URLs: pika tries each in order, and a consumer that lost its node reconnects from the first
    urls = broker_urls(settings)
    broker = RelayedRabbitmqBroker(
        send=send,
        settings=settings,
        url=urls if len(urls) > 1 else urls[0],
        confirm_delivery=True,
        middleware=middleware,
    )
    nodes = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    for parameters in nodes:
        parameters.heartbeat = 30
        if urls[0].startswith("amqps://"):
            parameters.ssl_options = pika.SSLOptions(ssl_context(settings), parameters.host)
    return broker


def handler_queue(settings: Settings, handler_name: str) -> str:
    return f"{settings.namespace}.{handler_name}"


class Dispatcher:
    """Sends a run's messages to its handler's queue: ``(envelope, wake)``, wake 0 the first,
    each authenticated with the installation's dispatch ``key`` (see :func:`authentic`)."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, key: bytes):
        self.settings = settings
        self.broker = broker
        self.key = key

    def message(self, handler_name: str, envelope: Envelope | dict[str, Any], wake: int = 0) -> dramatiq.Message[Any]:
        body = envelope.to_dict() if isinstance(envelope, Envelope) else envelope
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=handler_queue(self.settings, handler_name),
            actor_name=handler_name,
            args=(body, wake),
            kwargs={},
            options={},
        )
        return message.copy(options={AUTH_OPTION: _authenticator(self.key, message)})

    def dispatch(
        self, handler_name: str, envelope: Envelope | dict[str, Any], wake: int = 0, delay: float | None = None
    ) -> None:
        """Enqueue one message (``delay`` seconds from now); returns once the broker confirmed it."""
        self.broker.enqueue(
            self.message(handler_name, envelope, wake), delay=None if delay is None else int(delay * 1000)
        )

    def channel(self, connection: Connection) -> "DispatchChannel":
        """Where the router sends its batches: a confirming channel of its own consuming
        connection, or (embedded) the stub broker's queues."""
        if isinstance(self.broker, StubBroker):
            return StubChannel(self.broker)
        return AmqpChannel(ConfirmedChannel(connection), self.broker)


class DispatchChannel:
    """A batch of first messages out, confirmed later (:meth:`confirmed` once they are)."""

    def publish(self, messages: list[dramatiq.Message[Any]]) -> Confirmation:
        raise NotImplementedError

    def confirmed(self, messages: list[dramatiq.Message[Any]]) -> None:
        """Tell dramatiq's middleware that the broker took ``messages``."""


class AmqpChannel(DispatchChannel):
    def __init__(self, channel: ConfirmedChannel, broker: dramatiq.Broker):
        self.channel, self.broker = channel, broker

    def publish(self, messages: list[dramatiq.Message[Any]]) -> Confirmation:
        for message in messages:
            self.broker.emit_before("enqueue", message, None)
        return self.channel.publish([(m.queue_name, m.encode()) for m in messages])

    def confirmed(self, messages: list[dramatiq.Message[Any]]) -> None:
        for message in messages:
            self.broker.emit_after("enqueue", message, None)


class StubChannel(DispatchChannel):
    """The embedded bus: the stub broker takes each message at once."""

    def __init__(self, broker: StubBroker):
        self.broker = broker

    def publish(self, messages: list[dramatiq.Message[Any]]) -> Confirmation:
        for message in messages:
            self.broker.enqueue(message)
        return Confirmation(set())
