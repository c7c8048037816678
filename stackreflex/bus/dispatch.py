"""dramatiq: a queue per handler, on RabbitMQ or (embedded) the stub broker, and the messages
that send a run to its handler."""

import logging

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, Retries, ShutdownNotifications, TimeLimit

from ..core.settings import Settings
from .connections import normalise_amqp_url, ssl_context
from ..core.envelope import Envelope

log = logging.getLogger(__name__)


def build_broker(settings: Settings, lifecycle: list[Middleware] = ()) -> dramatiq.Broker:
    """RabbitMQ with publisher confirms, or the in-process stub broker when embedded.

    ``lifecycle`` (the run lifecycle's middleware) goes after ``Retries`` and before
    ``TimeLimit``: see :mod:`stackreflex.runs.middleware` for why.
    """
    middleware = [AgeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries(), *lifecycle, TimeLimit()]
    if settings.embedded:
        return StubBroker(middleware=middleware)
    url = normalise_amqp_url(settings.broker_url.get_secret_value())
    broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=middleware)
    broker.parameters.heartbeat = 30
    if url.startswith("amqps://"):
        broker.parameters.ssl_options = pika.SSLOptions(ssl_context(settings), broker.parameters.host)
    return broker


def handler_queue(settings: Settings, handler_name: str) -> str:
    return f"{settings.namespace}.{handler_name}"


class Dispatcher:
    """Sends a run's messages to its handler's queue: ``(envelope, wake)``, wake 0 the first."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker):
        self.settings = settings
        self.broker = broker

    def message(self, handler_name: str, envelope: Envelope | dict, wake: int = 0) -> dramatiq.Message:
        body = envelope.to_dict() if isinstance(envelope, Envelope) else envelope
        return dramatiq.Message(queue_name=handler_queue(self.settings, handler_name), actor_name=handler_name,
                                args=(body, wake), kwargs={}, options={})

    def dispatch(self, handler_name: str, envelope: Envelope | dict, wake: int = 0, delay: float | None = None) -> None:
        """Enqueue one message (``delay`` seconds from now); returns once the broker confirmed it."""
        self.broker.enqueue(self.message(handler_name, envelope, wake),
                            delay=None if delay is None else int(delay * 1000))

    def messages_for(self, runs: list[tuple[str, Envelope]]) -> list[dramatiq.Message]:
        """First messages for ``(handler, envelope)`` pairs, made as dramatiq's enqueue makes
        them (its middleware has seen them), to be published on a confirming channel."""
        messages = [self.message(name, envelope) for name, envelope in runs]
        for message in messages:
            self.broker.emit_before("enqueue", message, None)
        return messages

    def enqueued(self, messages: list[dramatiq.Message]) -> None:
        """Tell dramatiq's middleware that the broker confirmed ``messages``."""
        for message in messages:
            self.broker.emit_after("enqueue", message, None)
