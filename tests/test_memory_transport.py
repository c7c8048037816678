"""The embedded bus's transport (kombu's in-memory one, woken by messages instead of polling):
a drain waiting for a message gets the one put by another thread, one a consumer at its
prefetch limit could not take until an acknowledgement, and one put back; an idle drain
ends at its timeout, and one made with none waits for a message."""

import threading
import uuid

import pytest
from kombu import Exchange, Queue

from stackreflex.bus.connections import kombu_connection
from stackreflex.bus.memory import Transport
from stackreflex.core.settings import Settings

#: Long enough to tell a drain woken by a message from one that ran out its timeout.
LONG = 60.0


@pytest.fixture
def channel_names():
    name = f"memory-{uuid.uuid4().hex[:8]}"
    return Exchange(name, type="topic"), Queue(name, Exchange(name, type="topic"), routing_key="x.#")


def drain_in_thread(connection, timeout: float | None) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            connection.drain_events(timeout=timeout)
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread, errors


def woken_by(connection, act, timeout: float | None = LONG) -> None:
    """A drain waiting for a message ends once ``act`` (done from this thread) gives it one."""
    thread, errors = drain_in_thread(connection, timeout)
    act()
    thread.join(LONG / 2)
    assert not thread.is_alive() and not errors


def test_the_embedded_bus_uses_the_woken_transport():
    with kombu_connection(Settings()) as connection:
        assert isinstance(connection.transport, Transport)


def test_a_waiting_drain_gets_a_message_put_by_another_thread(channel_names):
    exchange, queue = channel_names
    got = []
    with (
        kombu_connection(Settings()) as consumer,
        kombu_connection(Settings()) as publisher,
        consumer.Consumer([queue], on_message=lambda m: (got.append(m.body), m.ack())),
    ):
        producer = publisher.Producer(exchange=exchange)
        producer.publish(b"warm", routing_key="x.1", declare=[exchange, queue])
        consumer.drain_events(timeout=5)
        woken_by(consumer, lambda: producer.publish(b"hello", routing_key="x.2"))
    assert got == [b"warm", b"hello"]


def test_an_acknowledgement_lets_a_consumer_at_its_prefetch_limit_take_the_next(channel_names):
    exchange, queue = channel_names
    held = []
    with (
        kombu_connection(Settings()) as connection,
        connection.Consumer([queue], on_message=held.append, prefetch_count=1),
    ):
        producer = connection.Producer(exchange=exchange)
        producer.publish(b"one", routing_key="x.1", declare=[exchange, queue])
        producer.publish(b"two", routing_key="x.2")
        connection.drain_events(timeout=5)
        with pytest.raises(TimeoutError):  # "two" waits for "one" to be acknowledged
            connection.drain_events(timeout=0.2)
        woken_by(connection, held[0].ack)
    assert [m.body for m in held] == [b"one", b"two"]


def test_acknowledging_a_batch_at_once_frees_the_whole_prefetch_window(channel_names):
    exchange, queue = channel_names
    held = []
    with (
        kombu_connection(Settings()) as connection,
        connection.Consumer([queue], on_message=held.append, prefetch_count=3),
    ):
        producer = connection.Producer(exchange=exchange)
        producer.publish(b"0", routing_key="x.0", declare=[exchange, queue])
        for i in range(1, 6):
            producer.publish(str(i).encode(), routing_key=f"x.{i}")
        for _ in range(3):
            connection.drain_events(timeout=5)
        held[-1].ack(multiple=True)  # as the router acknowledges a batch
        for _ in range(3):
            connection.drain_events(timeout=5)  # the window is three again, not one
    assert [m.body for m in held] == [b"0", b"1", b"2", b"3", b"4", b"5"]


def test_a_message_put_back_is_delivered_again(channel_names):
    exchange, queue = channel_names
    seen = []
    with (
        kombu_connection(Settings()) as connection,
        connection.Consumer([queue], on_message=seen.append, prefetch_count=1),
    ):
        producer = connection.Producer(exchange=exchange)
        producer.publish(b"again", routing_key="x.1", declare=[exchange, queue])
        connection.drain_events(timeout=5)
        woken_by(connection, seen[0].requeue)
    assert [m.body for m in seen] == [b"again", b"again"]


def test_an_idle_drain_ends_at_its_timeout_and_one_without_a_timeout_waits_for_a_message(channel_names):
    exchange, queue = channel_names
    with kombu_connection(Settings()) as connection, connection.Consumer([queue], on_message=lambda m: m.ack()):
        connection.Producer(exchange=exchange).declare()
        queue(connection.default_channel).declare()
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.1)
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0)
        producer = connection.Producer(exchange=exchange)
        woken_by(connection, lambda: producer.publish(b"late", routing_key="x.1"), timeout=None)
