"""Publishing envelopes on the topic exchange: durable, persistent, confirmed, never silently dropped."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import PreconditionFailed
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.messaging import Producer
from kombu.transport import virtual

from ..core.envelope import Envelope
from ..core.errors import BrokerUnavailable, ConfigError, UnroutableError
from ..core.settings import Settings
from ..core.signing import Signer
from .connections import RETRY_POLICY, connect, display_url, kombu_connection, memory_routed
from .queues import QueueType, intake_arguments, unrouted_queue_name

log = logging.getLogger(__name__)

#: AMQP's default exchange, which routes to the queue named by the routing key.
DEFAULT_EXCHANGE = Exchange("")

#: Content type of envelopes on the wire (CloudEvents structured mode).
CONTENT_TYPE = "application/cloudevents+json"


def topic_exchange(settings: Settings) -> Exchange:
    """The exchange every envelope is published on. What no queue is bound to receive goes to
    its alternate exchange, and from there to the router, which records it as having no
    subscriber: nobody's message vanishes without a record."""
    return Exchange(
        settings.namespace,
        type="topic",
        durable=True,
        arguments={"alternate-exchange": unrouted_exchange(settings).name},
    )


def unrouted_exchange(settings: Settings) -> Exchange:
    return Exchange(f"{settings.namespace}.unrouted", type="fanout", durable=True)


def unrouted_queue(settings: Settings, queue_type: QueueType) -> Queue:
    """Where envelopes of a type no queue is bound to receive wait for the router."""
    return Queue(
        unrouted_queue_name(settings),
        unrouted_exchange(settings),
        durable=True,
        queue_arguments=intake_arguments(settings, queue_type),
    )


def declare_exchange(channel: virtual.Channel, settings: Settings) -> None:
    """Declare the exchange (with its alternate), or say what to do when an older stackreflex
    declared it without one (RabbitMQ refuses a declaration that differs)."""
    try:
        topic_exchange(settings)(channel).declare()
    except PreconditionFailed:
        raise ConfigError(
            f"the exchange {settings.namespace} exists without the alternate exchange this version declares "
            f"({settings.namespace}.unrouted): with every stackreflex process stopped, delete it once "
            f"(rabbitmqctl delete_exchange {settings.namespace}) and start them again"
        ) from None


class Publisher:
    """Publishes envelopes; each thread gets its own connection (kombu's are not thread-safe).

    With ``mandatory=True`` (the default) a message that no queue is bound to receive
    raises :class:`UnroutableError` where the broker returns it: embedded, or before any router
    declared the queue behind the alternate exchange (after, the router records it). With a signing key configured,
    every envelope is signed here, whoever publishes it (the CLI, the watcher, a handler).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.signer = Signer.from_settings(settings)
        #: whether a queue took a published envelope: the broker returns those none did, but the
        #: in-memory transport drops them, so its binding table is asked
        self._routed = memory_routed if settings.embedded else _returned_if_not
        self.exchange = topic_exchange(settings)
        self._local = threading.local()
        #: every connection any thread opened, for :meth:`close`; a thread's links from before
        #: the last close (an older generation) are made again
        self._opened: list[Connection] = []
        self._generation = 0
        self._lock = threading.Lock()

    def _link(self, confirm: bool = True) -> tuple[Producer, Callable[..., None]]:
        """This thread's producer (confirming, or not for notices), with its send function
        wrapped in kombu's bounded retry: a broken connection is re-established and the
        send made again."""
        slot = "confirming" if confirm else "notifying"
        if getattr(self._local, "generation", None) != self._generation:
            self._local.__dict__.clear()
            self._local.generation = self._generation
        link = getattr(self._local, slot, None)
        if link is None:
            connection = kombu_connection(self.settings, confirm=confirm)
            with self._lock:
                self._opened.append(connection)
            self._local.connections = [*getattr(self._local, "connections", []), connection]
            connect(connection, self.settings)
            if not hasattr(self._local, "returned"):
                self._local.returned = []
            producer = Producer(
                connection,
                exchange=self.exchange,
                auto_declare=False,
                on_return=lambda exc, exchange, routing_key, message: self._local.returned.append(routing_key),
            )
            declare_exchange(producer.channel, self.settings)

            def send(envelope: Envelope, *, persistent: bool, mandatory: bool) -> None:
                self._send(producer, envelope, persistent=persistent, mandatory=mandatory)

            link = (producer, connection.ensure(producer, send, **RETRY_POLICY))
            setattr(self._local, slot, link)
        return link

    def _send(self, producer: Producer, envelope: Envelope, *, persistent: bool, mandatory: bool) -> None:
        """Put one envelope on the exchange through the producer's channel of the moment.

        This is the lower half of kombu's ``Producer.publish``, which first looks up
        serializers and compression for a body that is already JSON text: that costs four
        times the publish itself, on every event, progress notice and result.
        """
        if self.signer is not None:
            envelope = self.signer.sign(envelope)
        channel = producer.channel
        message = channel.prepare_message(
            envelope.to_json().encode("utf-8"),
            0,
            CONTENT_TYPE,
            "utf-8",
            {},
            {"delivery_mode": 2 if persistent else 1, "message_id": envelope.id},
        )
        channel.basic_publish(
            message, exchange=self.exchange.name, routing_key=envelope.routing_key, mandatory=mandatory
        )

    @contextmanager
    def _publishing(self) -> Iterator[None]:
        """A publish whose retries ran out: this thread's connections are dropped, and the
        broker is reported unavailable."""
        try:
            yield
        except OperationalError as exc:
            self._drop_this_thread()
            raise BrokerUnavailable(f"cannot publish to the broker at {display_url(self.settings)}: {exc}") from None

    def publish(self, envelope: Envelope, *, mandatory: bool = True) -> None:
        """Publish and wait for the broker's confirm."""
        producer, send = self._link()
        self._local.returned.clear()
        with self._publishing():
            send(envelope, persistent=True, mandatory=mandatory)
        if mandatory and (
            self._local.returned or not self._routed(producer.channel, self.exchange.name, envelope.routing_key)
        ):
            raise UnroutableError(
                f"no queue is bound to receive {envelope.type} on exchange {self.exchange.name}: "
                "start a worker whose handlers subscribe to it (stackreflex worker), or check the type"
            )
        log.debug("published %s id=%s", envelope.type, envelope.id)

    def notify(self, envelope: Envelope) -> None:
        """Publish an advisory notice (progress, routing news) without waiting for a confirm.

        Nobody may be listening, and a lost notice only delays a ``--wait`` until its
        timeout: the audit log holds the truth.
        """
        _, send = self._link(confirm=False)
        with self._publishing():
            send(envelope, persistent=False, mandatory=False)

    def send_to_queue(self, body: bytes, queue: Queue, headers: dict[str, Any], message_id: str | None = None) -> None:
        """Put raw bytes straight onto a durable queue (the dead-letter queue), confirmed."""
        producer, _ = self._link()
        with self._publishing():
            # an Exchange object: kombu reads a plain "" as "use the producer's exchange"
            producer.publish(
                body,
                exchange=DEFAULT_EXCHANGE,
                routing_key=queue.name,
                declare=[queue],
                delivery_mode=2,
                content_type="application/octet-stream",
                content_encoding="binary",
                headers=headers,
                message_id=message_id,
                retry=True,
                retry_policy=RETRY_POLICY,
            )

    def send_message(self, queue: str, body: bytes) -> None:
        """A handler's message (dramatiq-encoded) to its queue, persistent and confirmed; a queue
        that does not exist is an error, not a silent drop."""
        producer, _ = self._link()
        self._local.returned.clear()
        with self._publishing():
            producer.publish(
                body,
                exchange=DEFAULT_EXCHANGE,
                routing_key=queue,
                delivery_mode=2,
                mandatory=True,
                content_type="application/json",
                content_encoding="utf-8",
                retry=True,
                retry_policy=RETRY_POLICY,
            )
        if self._local.returned:
            raise UnroutableError(f"no queue {queue} to receive the message: no worker has served its handler yet")

    def _drop_this_thread(self) -> None:
        """Release this thread's connections (broken ones): its next publish connects anew."""
        mine = getattr(self._local, "connections", [])
        with self._lock:
            self._opened = [c for c in self._opened if c not in mine]
        for connection in mine:
            _release(connection)
        self._local.__dict__.clear()
        self._local.generation = self._generation

    def close(self) -> None:
        """Close every connection this publisher opened, in any thread (a later publish opens anew)."""
        with self._lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for connection in opened:
            _release(connection)


def _returned_if_not(channel: virtual.Channel, exchange: str, routing_key: str) -> bool:
    """A broker returns a mandatory message no queue took: what was not returned was routed."""
    return True


def _release(connection: Connection) -> None:
    try:
        connection.release()
    except Exception as exc:
        log.debug("closing a publisher connection: %s", exc)
