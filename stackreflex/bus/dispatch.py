"""dramatiq: one actor and one queue per handler, on RabbitMQ or (embedded) the stub broker."""

import dataclasses
import logging

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from ..errors import ConfigError
from ..handlers.execution import Services, execute
from ..handlers.registry import Handler, Registry
from ..settings import Settings
from .connections import normalise_amqp_url, ssl_context
from .envelope import Envelope

log = logging.getLogger(__name__)


def build_broker(settings: Settings) -> dramatiq.Broker:
    """RabbitMQ with publisher confirms, or the in-process stub broker when embedded."""
    middleware = [m() for m in default_middleware] + [CurrentMessage()]
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


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Dispatcher:
    """Declares an actor per handler and sends it envelopes (or continuation wake-ups)."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker, registry: Registry, services: Services):
        self.settings = settings
        self.broker = broker
        self.services = services
        self.actors: dict[str, dramatiq.Actor] = {h.name: self._declare(self._tuned(h)) for h in registry}

    def _tuned(self, handler: Handler) -> Handler:
        """The handler with the operator's overrides of its retry and time policy applied."""
        overrides = self.settings.handler_overrides.get(handler.name, {})
        unknown = set(overrides) - {"max_retries", "min_backoff", "max_backoff", "time_limit"}
        if unknown:
            raise ConfigError(f"handler_overrides.{handler.name}: unknown keys {', '.join(sorted(unknown))}")
        if "max_retries" in overrides:
            overrides = {**overrides, "max_retries": int(overrides["max_retries"])}
        return dataclasses.replace(handler, **overrides)

    def _declare(self, handler: Handler) -> dramatiq.Actor:
        services = self.services

        def run(envelope: dict, wake: int = 0) -> None:
            message = CurrentMessage.get_current_message()
            final = message.options.get("retries", 0) >= handler.max_retries
            execute(handler, envelope, wake, services, final_attempt=final,
                    resend=lambda next_wake, delay: actor.send_with_options(
                        args=(envelope, next_wake), delay=_ms(delay)))

        run.__name__ = handler.name
        actor = dramatiq.Actor(
            run, broker=self.broker, actor_name=handler.name,
            queue_name=handler_queue(self.settings, handler.name), priority=0,
            options={"max_retries": handler.max_retries, "min_backoff": _ms(handler.min_backoff),
                     "max_backoff": _ms(handler.max_backoff), "time_limit": _ms(handler.time_limit)},
        )
        return actor

    def queues(self) -> set[str]:
        return {actor.queue_name for actor in self.actors.values()}

    def dispatch(self, handler_name: str, envelope: Envelope | dict, *, wake: int = 0) -> None:
        """Enqueue one message for one handler; returns once the broker confirmed it."""
        body = envelope.to_dict() if isinstance(envelope, Envelope) else envelope
        self.actors[handler_name].send_with_options(args=(body, wake))

    def messages_for(self, runs: list[tuple[str, Envelope]]) -> list[dramatiq.Message]:
        """First messages for ``(handler, envelope)`` pairs, made as dramatiq's enqueue makes
        them (its middleware has seen them), to be published on a confirming channel."""
        messages = [self.actors[name].message_with_options(args=(envelope.to_dict(), 0)) for name, envelope in runs]
        for message in messages:
            self.broker.emit_before("enqueue", message, None)
        return messages

    def enqueued(self, messages: list[dramatiq.Message]) -> None:
        """Tell dramatiq's middleware that the broker confirmed ``messages``."""
        for message in messages:
            self.broker.emit_after("enqueue", message, None)
