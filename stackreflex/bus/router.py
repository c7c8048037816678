"""The router: the only bridge from envelopes on the exchange to handler runs in dramatiq.

It acknowledges an envelope only after every matching handler's message is
confirmed by the broker, and it parks what it cannot accept, with the reason, in
the dead-letter queue ``<namespace>.dlq``. One path on either backend: a batch is
validated, recorded in one audit transaction, its first messages published on the
bus's dispatch channel, and acknowledged once they are confirmed (at once, embedded).
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
from amqp.exceptions import AMQPError
from kombu.entity import Queue, binding
from kombu.exceptions import OperationalError

from ..core import metrics
from ..core.envelope import Envelope, normalise_type, parse_envelope
from ..core.errors import BrokerUnavailable, ConfigError, DatabaseUnavailable, InvalidEnvelope
from ..core.records import Accepted
from ..core.redaction import redact_text
from ..core.registry import Registry
from ..core.settings import Settings
from ..core.topics import topic_matches
from .backend import Bus, dead_letter_queue
from .confirms import Confirmation
from .connections import Delivery, drain, server_properties
from .dispatch import DispatchChannel
from .follow import NOTICE_PATTERNS
from .publisher import declare_exchange, topic_exchange, unrouted_queue
from .queues import QueueType, declare, intake_arguments, resolve, router_queue_name

log = logging.getLogger("stackreflex.router")

#: How long to wait before consuming again after the broker connection broke (seconds).
RECONNECT_DELAY = 1.0
#: How long to wait before trying again when the broker's set-up must be changed by an operator (seconds).
MISCONFIGURED_DELAY = 30.0
#: How long the broker may take to confirm a batch's dispatches before the connection
#: counts as broken (seconds).
CONFIRM_TIMEOUT = 30.0

#: What ends a consuming connection: the router reconnects, and the broker redelivers what
#: was not acknowledged (py-amqp's own errors, a channel closed by the broker among them,
#: derive from none of the built-in ones). An audit database unreachable for longer than a
#: write waits is one too: what the router holds goes back to the broker, never to the
#: dead-letter queue.
CONNECTION_TROUBLE = (OperationalError, ConnectionError, OSError, AMQPError, BrokerUnavailable, DatabaseUnavailable)


def raw_body(message: Delivery) -> bytes:
    """The message body as bytes (py-amqp decodes bodies that declare a content encoding)."""
    body = message.body
    return bytes(body) if isinstance(body, (bytes, bytearray)) else str(body).encode("utf-8")


def _delivered(message: Delivery) -> tuple[bytes, str]:
    """What the router routes from an AMQP delivery: its body and its routing key."""
    return raw_body(message), message.delivery_info.get("routing_key", "")


def _dispatches(accepted: list[tuple[int, Envelope, Accepted]]) -> list[tuple[str, Envelope]]:
    """The first messages to send: for runs created now, and for runs never started (a
    redelivered envelope whose dispatch may have been lost); one per run, though two copies
    of an envelope in one batch share their runs."""
    due = {
        run.id: (name, envelope)
        for _, envelope, answer in accepted
        for name, run in answer.runs.items()
        if run.created or (run.status == "pending" and run.attempts == 0)
    }
    return list(due.values())


class EnvelopeLog(Protocol):
    """What the router records in: the audit log (:class:`~stackreflex.models.audit.AuditLog`)."""

    def accept_many(
        self,
        accepted: list[tuple[Envelope, list[str]]],
        *,
        cloud: str | None,
        wait: Callable[[float], None] | None = None,
    ) -> list[Accepted]: ...

    def record_rejection(
        self,
        raw: bytes,
        routing_key: str,
        reason: str,
        *,
        envelope_id: str | None = None,
        wait: Callable[[float], None] | None = None,
    ) -> str | None: ...

    def parked(self, digest: str) -> None: ...


class HandlerIndex(Protocol):
    """Which handlers an envelope goes to (:class:`~stackreflex.runs.subscribers.Subscribers`)."""

    def matching(self, envelope: Envelope) -> list[str]: ...


@dataclass
class InFlight:
    """A routed batch whose dispatches the broker has yet to confirm."""

    #: the AMQP deliveries, acknowledged once the dispatches are confirmed
    deliveries: list[Delivery]
    accepted: list[tuple[int, Envelope, Accepted]]
    #: the dramatiq messages published
    sent: list[dramatiq.Message[Any]]
    confirmation: Confirmation
    #: indexes of the deliveries rejected (parked and recorded already)
    rejected: set[int]


def _rejected(count: int, accepted: list[tuple[int, Envelope, Accepted]] | None) -> set[int]:
    """The indexes of a batch that were rejected (none if routing did not get that far)."""
    return set(range(count)) - {index for index, _, _ in accepted} if accepted is not None else set()


#: What the router takes whatever the handlers subscribe to: every Heat event is recorded in the
#: audit log (a failed deployment's event belongs in a stack's timeline with nobody reacting to it).
RECORDED_ALWAYS = ("heat.#",)


def router_queue(settings: Settings, registry: Registry, queue_type: QueueType) -> Queue:
    exchange = topic_exchange(settings)
    return Queue(
        router_queue_name(settings),
        durable=True,
        queue_arguments=intake_arguments(settings, queue_type),
        bindings=[binding(exchange, routing_key=p) for p in sorted(registry.patterns() | set(RECORDED_ALWAYS))],
    )


class Router:
    """Consumes envelopes and turns each into one dramatiq message per matching handler."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        subscribers: HandlerIndex,
        bus: Bus,
        audit: EnvelopeLog,
        *,
        cloud: str | None = None,
    ) -> None:
        self.settings = settings
        #: the handlers this process serves: the router queue's bindings
        self.registry = registry
        #: which handlers an envelope goes to, in any live process (a :class:`~stackreflex.runs.subscribers.Subscribers`)
        self.subscribers = subscribers
        self.bus = bus
        self.audit = audit
        #: the cloud the runs it creates act on
        self.cloud = cloud
        #: with a signing key, every envelope must be signed by a key of the ring
        self.signer = bus.publisher.signer
        self.ready = threading.Event()
        #: how this thread pauses while the audit database is unreachable or a confirm is due
        #: (the consuming connection must keep reading, or the broker drops it for missed heartbeats)
        self._pause: Callable[[float], None] | None = None
        self._channel: DispatchChannel | None = None
        #: since when (monotonic) the oldest envelope it holds unacknowledged has been held; None: it holds none
        self.held_since: float | None = None

    # -- the decision ---------------------------------------------------------------

    def _messages(self, accepted: list[tuple[int, Envelope, Accepted]]) -> list[dramatiq.Message[Any]]:
        return [self.bus.dispatcher.message(name, envelope) for name, envelope in _dispatches(accepted)]

    def _record(
        self, valid: list[tuple[int, Envelope, list[str]]], messages: list[tuple[bytes, str]]
    ) -> list[tuple[int, Envelope, Accepted]]:
        """Record the valid envelopes and their runs; one whose id was accepted before with
        other content is rejected as a conflict."""
        answers = (
            self.audit.accept_many(
                [(envelope, matching) for _, envelope, matching in valid], cloud=self.cloud, wait=self._pause
            )
            if valid
            else []
        )
        accepted = []
        for (index, envelope, _), answer in zip(valid, answers, strict=False):
            if answer.conflict:
                self._reject(*messages[index], InvalidEnvelope(answer.conflict, envelope_id=envelope.id))
            else:
                accepted.append((index, envelope, answer))
        return accepted

    def _validate(self, messages: list[tuple[bytes, str]]) -> list[tuple[int, Envelope, list[str]]]:
        """Reject (record and park) what is not a valid envelope, or not signed when a key is
        configured; the others, by index, with their handlers."""
        valid: list[tuple[int, Envelope, list[str]]] = []
        for index, (body, routing_key) in enumerate(messages):
            try:
                envelope = self._envelope(body, routing_key)
            except InvalidEnvelope as exc:
                self._reject(body, routing_key, exc)
                continue
            valid.append((index, envelope, self.subscribers.matching(envelope)))
        return valid

    def _envelope(self, body: bytes, routing_key: str) -> Envelope:
        envelope = parse_envelope(
            body, max_bytes=self.settings.envelope_max_bytes, max_depth=self.settings.envelope_max_depth
        )
        if routing_key and normalise_type(routing_key) != envelope.type:
            raise InvalidEnvelope(
                f"published with routing key {routing_key[:255]!r}, which is not its type {envelope.type}",
                envelope_id=envelope.id,
            )
        if self.signer is not None:
            self.signer.verify(envelope)
        return envelope

    def _routed(self, envelope: Envelope, answer: Accepted) -> str:
        runs = [{"handler": name, "run_id": run.id, "status": run.status} for name, run in answer.runs.items()]
        outcome = "duplicate" if answer.duplicate else "routed"
        log.info(
            "envelope %s: %s %s subject=%s to %s",
            outcome,
            envelope.type,
            envelope.id,
            envelope.subject,
            ", ".join(r["handler"] for r in runs) or "no handler",
            extra={"envelope_id": envelope.id, "type": envelope.type},
        )
        if self.settings.announces(envelope):
            self._notify(
                Envelope.new(
                    "envelope.routed",
                    subject=envelope.subject,
                    cause=envelope,
                    data={"envelope_id": envelope.id, "duplicate": answer.duplicate, "runs": runs},
                )
            )
        return outcome

    def _no_subscriber(self, messages: list[Delivery]) -> None:
        """Envelopes no queue was bound to receive (the exchange's alternate sent them here):
        recorded and parked, to be replayed once a worker serves their type. Our own notices
        that nobody follows any more are advisory, and are let go."""
        for message in messages:
            body, routing_key = _delivered(message)
            if any(topic_matches(p, routing_key) for p in NOTICE_PATTERNS):
                message.ack()
                continue
            metrics.count_received([routing_key])
            try:
                envelope = self._envelope(body, routing_key)
            except InvalidEnvelope as exc:
                self._reject(body, routing_key, exc)
            else:
                self._reject(
                    body,
                    routing_key,
                    InvalidEnvelope(
                        f"no queue is bound to receive {envelope.type}: no worker subscribes to it (parked: "
                        "replay it with `stackreflex dlq replay` once one does)",
                        envelope_id=envelope.id,
                    ),
                    unrouted=True,
                )
            message.ack()

    def _reject(self, body: bytes, routing_key: str, error: InvalidEnvelope, *, unrouted: bool = False) -> None:
        reason = redact_text(str(error))
        # Recorded first, parked second, once: a message whose record fails goes back to the
        # broker unparked, and a redelivery of one recorded and parked before is acknowledged.
        digest = self.audit.record_rejection(body, routing_key, reason, envelope_id=error.envelope_id, wait=self._pause)
        if digest is None:
            log.info("envelope rejected and parked before (routing key %s): acknowledged again", routing_key[:255])
            return
        self.bus.park(body, routing_key, reason, digest)
        self.audit.parked(digest)
        metrics.count_rejected(routing_key, error, unrouted=unrouted)
        log.warning(
            "envelope rejected (routing key %s): %s", routing_key, reason, extra={"envelope_id": error.envelope_id}
        )
        if error.envelope_id:
            self._notify(
                Envelope.new(
                    "envelope.rejected",
                    subject=None,
                    correlationid=error.envelope_id,
                    causationid=error.envelope_id,
                    data={
                        "envelope_id": error.envelope_id,
                        "reason": reason,
                        **({"unrouted": True} if unrouted else {}),
                    },
                )
            )

    def _notify(self, envelope: Envelope) -> None:
        try:
            self.bus.notify(envelope)
        except Exception as exc:
            log.warning("could not publish %s: %s", envelope.type, exc)

    # -- consuming ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting when the broker connection breaks."""
        while not stop.is_set():
            try:
                self._consume(stop)
            except CONNECTION_TROUBLE as exc:
                self.ready.clear()
                metrics.BROKER_RECONNECTS.labels("router").inc()
                log.warning("router lost the broker connection (%s); reconnecting", exc)
                stop.wait(RECONNECT_DELAY)
            except ConfigError as exc:  # the broker holds what an operator must change: say so, and try again
                self.ready.clear()
                log.error("router cannot consume: %s", exc)
                stop.wait(MISCONFIGURED_DELAY)

    def _consume(self, stop: threading.Event) -> None:
        # This connection publishes nothing but the dispatches of its channel.
        with self.bus.connection(consumer=True, confirm=False) as connection:
            declare_exchange(connection.default_channel, self.settings)
            queue_type = resolve(self.settings, server_properties(connection))
            dlq = dead_letter_queue(self.settings, queue_type)
            queue = router_queue(self.settings, self.registry, queue_type)
            intake = unrouted_queue(self.settings, queue_type)
            # the dead-letter queue first: a quorum queue dead-letters into it
            declare(connection, dlq, self.settings, queue_type, "parking")
            for q in (queue, intake):
                declare(connection, q, self.settings, queue_type, "intake", dlq.name)
            received: list[Delivery] = []
            unrouted: list[Delivery] = []
            prefetch = self.settings.router_prefetch
            with (
                connection.Consumer([queue], on_message=received.append, prefetch_count=prefetch),
                connection.Consumer([intake], on_message=unrouted.append, prefetch_count=prefetch),
            ):
                self._channel = self.bus.dispatch_channel(connection)

                def pause(seconds: float) -> None:
                    drain(connection, seconds)

                self._pause = pause
                in_flight: deque[InFlight] = deque()
                self.ready.set()
                while not stop.is_set():
                    # Block only while idle (a delivery or a confirm ends the wait); then take
                    # what else has arrived, up to a batch.
                    if received or drain(connection, 0.2):
                        while len(received) < self.settings.router_prefetch and drain(connection, 0):
                            pass
                    if received:
                        batch = received[:]
                        received.clear()
                        self.held_since = self.held_since or time.monotonic()
                        self._send(batch, in_flight)
                    if unrouted:
                        batch = unrouted[:]
                        unrouted.clear()
                        self._no_subscriber(batch)
                    self._settle(in_flight)
                    self.held_since = in_flight[0].confirmation.published_at if in_flight else None

    def _send(self, batch: list[Delivery], in_flight: deque[InFlight]) -> None:
        """Accept a batch and publish its dispatches; it is acknowledged once they are confirmed."""
        log.debug("routing a batch of %d messages", len(batch))
        accepted: list[tuple[int, Envelope, Accepted]] | None = None
        try:
            messages = [_delivered(m) for m in batch]
            metrics.count_received([key for _, key in messages])
            metrics.ROUTER_BATCH_SIZE.observe(len(batch))
            accepted = self._record(self._validate(messages), messages)
            sent = self._messages(accepted)
            assert self._channel is not None  # _consume opened it before taking deliveries
            confirmation = self._channel.publish(sent)
        except CONNECTION_TROUBLE:
            raise  # the connection is gone: the broker redelivers what is unacknowledged
        except Exception:
            log.exception("router could not route a batch of %d messages; routing them one by one", len(batch))
            self._one_by_one(batch, _rejected(len(batch), accepted))
            return
        in_flight.append(InFlight(batch, accepted, sent, confirmation, _rejected(len(batch), accepted)))

    def _settle(self, in_flight: deque[InFlight]) -> None:
        """Acknowledge the confirmed batches, oldest first (one acknowledgement covers a batch)."""
        while in_flight and in_flight[0].confirmation.settled:
            done = in_flight.popleft()
            if done.confirmation.refused:
                log.warning(
                    "broker refused dispatches (%s); routing those %d messages one by one",
                    done.confirmation.refused[0],
                    len(done.deliveries),
                )
                self._one_by_one(done.deliveries, done.rejected)
                continue
            assert self._channel is not None  # _consume opened it before taking deliveries
            self._channel.confirmed(done.sent)
            for _, envelope, answer in done.accepted:
                self._routed(envelope, answer)
            done.deliveries[-1].ack(multiple=True)
        if in_flight and time.monotonic() - in_flight[0].confirmation.published_at > CONFIRM_TIMEOUT:
            raise BrokerUnavailable(f"the broker did not confirm dispatches within {CONFIRM_TIMEOUT:.0f}s")

    def _one_by_one(self, batch: list[Delivery], rejected: set[int]) -> None:
        """A batch that failed: route its messages one by one, each confirmed before the next,
        so a bad message or a passing fault costs only that message a retry. What was
        rejected is recorded and parked already (a redelivery of it would be acknowledged)."""
        for index, message in enumerate(batch):
            if index in rejected:
                message.ack()
            else:
                self._on_message(message)

    def _on_message(self, message: Delivery) -> None:
        body, routing_key = _delivered(message)
        try:
            accepted = self._record(self._validate([(body, routing_key)]), [(body, routing_key)])
            if accepted:
                sent = self._messages(accepted)
                assert self._channel is not None  # _consume opened it before taking deliveries
                self._confirm(self._channel.publish(sent))
                self._channel.confirmed(sent)
                for _, envelope, answer in accepted:
                    self._routed(envelope, answer)
        except CONNECTION_TROUBLE:
            raise  # not the message's fault: the broker redelivers it once the router reconnects
        except Exception as exc:
            # Infrastructure trouble (database, broker) passes: keep the message and try again.
            # A message that fails again after redelivery is parked with the error instead of looping.
            log.exception("router could not handle a message")
            if message.delivery_info.get("redelivered"):
                try:
                    self._reject(body, routing_key, InvalidEnvelope(f"router failed on it twice: {exc}"))
                    message.ack()
                    return
                except Exception:
                    log.exception("could not park the message either")
            time.sleep(RECONNECT_DELAY)
            message.requeue()
            return
        message.ack()

    def _confirm(self, confirmation: Confirmation) -> None:
        """Wait for one message's dispatches to be confirmed (reading the connection meanwhile)."""
        while not confirmation.settled:
            if time.monotonic() - confirmation.published_at > CONFIRM_TIMEOUT:
                raise BrokerUnavailable(f"the broker did not confirm dispatches within {CONFIRM_TIMEOUT:.0f}s")
            assert self._pause is not None  # _consume set it before taking deliveries
            self._pause(0.05)
        if confirmation.refused:
            raise RuntimeError(f"the broker refused its dispatches: {confirmation.refused[0]}")
