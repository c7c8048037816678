"""Property-based tests of the trust boundary: whatever arrives, the parser answers with an
envelope or a one-line reason, and the router records each message exactly once, parks
each rejected one once, and keeps running (on RabbitMQ, on SQLite and PostgreSQL)."""

import json
import string

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kombu import Connection

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.bus.deadletters import describe, visit
from stackreflex.bus.publisher import topic_exchange
from stackreflex.core.envelope import parse_envelope
from stackreflex.core.errors import InvalidEnvelope
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import list_envelopes

from .conftest import listed_queues, wait_for
from .test_router import HANDLERS, RouterUnderTest

#: Routing keys the router's queue is bound to (anything else the broker drops before it).
BOUND = ["test.route", "test.other", "heat.resource.CREATE_IN_PROGRESS", "heat.stack.UPDATE_COMPLETE"]

unicode_text = st.text(st.characters(codec="utf-8"), max_size=40)
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | unicode_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(unicode_text, inner, max_size=4),
    max_leaves=25,
)
#: Nesting well past the limit, written out as text (a tree that deep would not survive json.dumps).
deep = st.integers(60, 5000).map(lambda n: "[" * n + "]" * n)
envelope_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*BOUND, "Test.Route", "HEAT.resource.create_in_progress", "heat.*", "x", ""])},
    optional={
        "subject": st.text(max_size=300),
        "source": st.text(max_size=3),
        "data": json_trees,
        "time": st.sampled_from(
            [
                "2026-01-01T00:00:00Z",
                "1999-01-01T00:00:00Z",
                "9999-12-31T23:59:59-23:59",
                "0001-01-01T00:00:00+01:00",
                "2026-01-01T00:00:00",
                "yesterday",
            ]
        ),
        "correlationid": st.text(max_size=200),
        "notify": st.booleans(),
        "colour": st.integers(),
    },
)
#: One message: its shape (arbitrary bytes, text, an envelope-like object, one with a bad id,
#: a deep body, NUL bytes) and the routing key it is published with.
messages = st.tuples(
    st.one_of(
        st.binary(max_size=300).map(lambda b: ("bytes", b)),
        unicode_text.map(lambda t: ("text", t)),
        envelope_like.map(lambda e: ("envelope", e)),
        st.tuples(envelope_like, st.sampled_from([None, "", 7, "x" * 200])).map(lambda p: ("bad-id", p)),
        deep.map(lambda d: ("deep", d)),
        st.binary(max_size=40).map(lambda b: ("nul", b)),
    ),
    st.sampled_from(BOUND),
)


def _body(shape: tuple, n: int) -> bytes:
    """The bytes of message ``n``: each different from every other (and each valid envelope
    with an id of its own), so each is expected to leave exactly one record."""
    kind, value = shape
    if kind == "bytes":
        return b"%d:" % n + value
    if kind == "text":
        return f"{n}:{value}".encode()
    if kind == "envelope":
        return json.dumps({**value, "id": f"fz-{n}"}).encode()
    if kind == "bad-id":
        envelope, bad = value
        body = {**envelope, "n": n}
        if bad is not None:
            body["id"] = bad
        return json.dumps(body).encode()
    if kind == "deep":
        return json.dumps({"type": "test.route", "id": f"fz-{n}", "data": "@"}).replace('"@"', value).encode()
    return b'{"type": "test.route", "id": "fz-%d\x00", "data": "%s"}' % (n, value.hex().encode())


@given(st.binary(max_size=4000))
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_parser_answers_any_bytes_with_an_envelope_or_one_line(body):
    try:
        parse_envelope(body)
    except InvalidEnvelope as exc:
        assert exc.reason and "\n" not in exc.reason


@given(envelope_like.map(json.dumps) | json_trees.map(json.dumps) | deep)
@hypothesis_settings(max_examples=300, deadline=None)
def test_the_parser_answers_any_json_with_an_envelope_or_one_line(text):
    try:
        envelope = parse_envelope(text.encode("utf-8", "surrogatepass"))
    except InvalidEnvelope as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        assert envelope.id and len(envelope.id) <= 128 and len(envelope.subject or "") <= 255


def test_the_router_records_each_fuzzed_message_once_parks_each_rejection_once_and_keeps_running(
    broker_url, namespace, database_url
):
    """1,000 generated messages: each leaves one audit row (accepted or rejected), the
    dead-letter queue holds one copy of each rejected one, a redelivered rejection adds
    neither, ``dlq list`` reads every parked message, and the router is still consuming."""
    settings = Settings(broker_url=broker_url, database_url=database_url, namespace=namespace, envelope_max_bytes=16384)
    routing = RouterUnderTest(settings, AuditLog.open(database_url))
    routing.start()
    published: list[tuple[bytes, str]] = []
    connection = Connection(normalise_amqp_url(broker_url), transport_options={"confirm_publish": True})
    producer = connection.Producer(exchange=topic_exchange(settings))

    @hypothesis_settings(
        max_examples=5,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(messages, min_size=200, max_size=200))
    def publish(batch):
        for shape, routing_key in batch:
            body = _body(shape, len(published))
            producer.publish(body, routing_key=routing_key, content_type="application/json")
            published.append((body, routing_key))

    try:
        publish()
        count = len(published)
        rows = wait_for(
            lambda: len(r := list_envelopes(routing.audit, limit=count + 10)) >= count and r,
            timeout=120,
            message=f"{count} messages recorded",
        )
        statuses = [r["status"] for r in rows]
        assert len(rows) == count and set(statuses) <= {"accepted", "rejected"}
        rejected = statuses.count("rejected")
        assert 0 < rejected < count

        # the same rejected bytes again (what a redelivery looks like): nothing new anywhere
        again = [(b, k) for b, k in published if not _valid(b, k)][:50]
        for body, routing_key in again:
            producer.publish(body, routing_key=routing_key, content_type="application/json")
        routing.settle()
        assert len(list_envelopes(routing.audit, limit=count + 100)) == count
        # what the queue reports (rabbitmqctl) may trail what the router parked: waited for, up to 30 s
        wait_for(
            lambda: {q["name"]: q["messages_ready"] for q in listed_queues(namespace)}[f"{namespace}.dlq"] == rejected,
            timeout=30,
            message=f"{rejected} rejections parked in the dead-letter queue",
        )
        listed = visit(settings, [], choose=lambda item: False, before_send=lambda item: None)
        assert len(listed) == rejected and all(item.reason and item.excerpt is not None for item in listed)
        routing.start()  # it stopped only because it was asked to: it consumes again
        valid = json.dumps({"type": "test.route", "id": "after-the-fuzz", "specversion": "1.0"}).encode()
        routing.publish_raw(valid, "test.route")
        wait_for(
            lambda: any(r["envelope_id"] == "after-the-fuzz" for r in list_envelopes(routing.audit, limit=5)),
            message="the router still routes",
        )
        routing.settle()
    finally:
        routing.bus.close()
        _delete_handler_queues(connection, namespace)
        connection.release()


def _valid(body: bytes, routing_key: str) -> bool:
    try:
        return parse_envelope(body).type == routing_key
    except InvalidEnvelope:
        return False


def _delete_handler_queues(connection, namespace: str) -> None:
    """The handlers here have no worker: their queues are this test's to delete."""
    for name in HANDLERS:
        for suffix in ("", ".DQ", ".XQ"):
            channel = connection.channel()
            try:
                channel.queue_delete(f"{namespace}.{name}{suffix}")
            finally:
                channel.close()


@given(
    st.binary(max_size=500)
    | deep.map(str.encode)
    | json_trees.map(
        lambda t: json.dumps({"message_id": t, "actor_name": t, "args": [t], "options": {"traceback": t}}).encode()
    ),
    st.none()
    | st.dictionaries(
        st.sampled_from(["x-stackreflex-reason", "x-stackreflex-routing-key"]),
        json_trees | st.text(string.printable + "\x1b\x00"),
    )
    | st.text(),
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_what_dlq_list_shows_survives_any_parked_content(body, headers):
    """Built from whatever was parked, under headers of any shape: one line, no control characters."""
    for queue in ("ns.dlq", "ns.handler.XQ"):
        item = describe(queue, body, headers)
        shown = " ".join(str(v) for v in (item.key, item.reason, item.excerpt, item.type, item.handler))
        assert item.key and not any(c in shown for c in "\n\r\x1b\x00")
