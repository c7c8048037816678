"""The router's one path, on both backends (RabbitMQ and the embedded bus): its consuming loop
takes envelopes off the exchange, records them, sends each new run its first message and
parks what is not an envelope. Handler queues have no consumer here, so what was dispatched
can be counted."""

import threading

import pytest

from stackreflex.bus.backend import open_bus
from stackreflex.bus.dispatch import handler_queue
from stackreflex.bus.router import Router, router_queue
from stackreflex.core.envelope import Envelope
from stackreflex.core.registry import Registry, handler
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import list_envelopes
from stackreflex.runs.subscribers import Subscribers

from .conftest import listed_queues, wait_for

HANDLERS = ("first", "second")


def _registry() -> Registry:
    registry = Registry()

    @handler("test.route", into=registry)
    def first(event, ctx): ...

    @handler("test.route", "test.other", into=registry)
    def second(event, ctx): ...

    return registry


def _router_idle(namespace: str) -> bool:
    """RabbitMQ holds nothing for the router: every delivery acknowledged."""
    return all(
        q["messages_ready"] == 0 and q["messages_unacknowledged"] == 0
        for q in listed_queues(namespace)
        if q["name"] == f"{namespace}.router"
    )


class RouterUnderTest:
    """A Router on a bus of its own, its loop in a thread, started and stopped by the test."""

    def __init__(self, settings: Settings, audit: AuditLog):
        self.settings, self.audit, self.registry = settings, audit, _registry()
        self.bus = open_bus(settings, dispatch_key=audit.dispatch_key())
        self.router = Router(settings, self.registry, Subscribers(self.registry, audit, "test"), self.bus, audit)
        for name in HANDLERS:
            queue = handler_queue(settings, name)
            self.bus.broker.declare_queue(queue, **({} if settings.embedded else {"ensure": True}))
        with self.bus.connection() as connection:
            router_queue(settings, self.registry, self.bus.queue_type())(connection).declare()
        self._thread = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.router.run, args=(self._stop,), daemon=True)
        self._thread.start()
        assert self.router.ready.wait(20)

    def settle(self) -> None:
        """Until the loop has acknowledged everything it took (then stop it: it finished its batch)."""
        if not self.settings.embedded:
            wait_for(lambda: _router_idle(self.settings.namespace), timeout=30, message="router idle")
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()

    def queued(self) -> dict[str, int]:
        if self.settings.embedded:
            return {n: self.bus.broker.queues[handler_queue(self.settings, n)].qsize() for n in HANDLERS}
        return {n: self.bus.broker.get_queue_message_counts(handler_queue(self.settings, n))[0] for n in HANDLERS}

    def publish_raw(self, body: bytes, routing_key: str) -> None:
        with self.bus.connection() as connection:
            producer = connection.Producer()
            producer.publish(
                body, exchange=self.settings.namespace, routing_key=routing_key, content_type="application/json"
            )


@pytest.fixture(params=["amqp", "embedded"])
def routing(request, broker_url, namespace, database_url):
    settings = Settings(
        broker_url=broker_url if request.param == "amqp" else None, database_url=database_url, namespace=namespace
    )
    under_test = RouterUnderTest(settings, AuditLog.open(database_url))
    yield under_test
    under_test.bus.close()


def test_each_new_run_gets_one_message_a_copy_restarts_only_unstarted_runs_and_garbage_is_parked(routing):
    envelope, other = Envelope.new("test.route", subject="a"), Envelope.new("test.other", subject="b")
    routing.bus.publish(envelope)
    routing.bus.publish(other)
    routing.publish_raw(b"{not json", "test.route")
    routing.start()
    wait_for(lambda: len(list_envelopes(routing.audit)) == 3, message="the three messages recorded")
    routing.settle()
    assert routing.queued() == {"first": 1, "second": 2}
    statuses = sorted(e["status"] for e in list_envelopes(routing.audit))
    assert statuses == ["accepted", "accepted", "rejected"]

    # A later copy (a redelivery): runs never started are dispatched again (the first dispatch
    # may be what was lost); once they have started, nothing is.
    routing.bus.publish(envelope)
    routing.start()
    wait_for(lambda: len(list_envelopes(routing.audit)) == 4, message="the copy recorded")
    routing.settle()
    assert routing.queued() == {"first": 2, "second": 3}
    for name in HANDLERS:
        assert routing.audit.claim(envelope.id, name, wake=0, token="worker", lease_seconds=5).granted
    routing.bus.publish(envelope)
    routing.start()
    wait_for(lambda: len(list_envelopes(routing.audit)) == 5, message="the second copy recorded")
    routing.settle()
    assert routing.queued() == {"first": 2, "second": 3}
    assert sorted(e["status"] for e in list_envelopes(routing.audit)) == (
        ["accepted", "accepted"] + ["duplicate"] * 2 + ["rejected"]
    )


def test_copies_of_an_envelope_in_one_batch_share_a_dispatch(namespace, sqlite_url):
    # The embedded bus hands the loop everything queued as one batch; RabbitMQ may split it.
    routing = RouterUnderTest(Settings(database_url=sqlite_url, namespace=namespace), AuditLog.open(sqlite_url))
    envelope, other = Envelope.new("test.route", subject="a"), Envelope.new("test.other", subject="b")
    for e in (envelope, other, envelope):
        routing.bus.publish(e)
    routing.start()
    wait_for(lambda: len(list_envelopes(routing.audit)) == 3, message="the batch recorded")
    routing.settle()
    assert routing.queued() == {"first": 1, "second": 2}
    assert sorted(e["status"] for e in list_envelopes(routing.audit)) == ["accepted", "accepted", "duplicate"]
    routing.bus.close()
