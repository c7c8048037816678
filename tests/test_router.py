"""The router's decision on its own: what it dispatches for a batch, on the embedded bus
(dramatiq's stub broker, whose queues can be counted) and a real audit log."""

from stackreflex.bus.dispatch import Dispatcher, build_broker, handler_queue
from stackreflex.core.envelope import Envelope
from stackreflex.bus.publisher import Publisher
from stackreflex.bus.router import Router
from stackreflex.core.registry import Registry, handler
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import list_envelopes
from stackreflex.runs.subscribers import Subscribers
from stackreflex.core.settings import Settings


def test_copies_of_an_envelope_in_one_batch_share_a_dispatch_and_a_later_copy_only_restarts_unstarted_runs(database_url):
    registry = Registry()

    @handler("test.route", into=registry)
    def first(event, ctx): ...

    @handler("test.route", "test.other", into=registry)
    def second(event, ctx): ...

    settings = Settings(database_url=database_url, namespace="routertest")
    audit = AuditLog.open(database_url)
    broker = build_broker(settings)
    router = Router(settings, registry, Subscribers(registry, audit, "embedded:test"), Dispatcher(settings, broker),
                    audit, Publisher(settings))
    for name in ("first", "second"):
        broker.declare_queue(handler_queue(settings, name))

    def queued() -> dict[str, int]:
        return {name: broker.queues[handler_queue(settings, name)].qsize() for name in ("first", "second")}

    envelope, other = Envelope.new("test.route", subject="a"), Envelope.new("test.other", subject="b")
    batch = [(envelope.to_json().encode(), envelope.type), (other.to_json().encode(), other.type),
             (envelope.to_json().encode(), envelope.type)]
    assert router.route_batch(batch) == ["routed", "routed", "duplicate"]
    assert queued() == {"first": 1, "second": 2}
    # A later copy (a redelivery): runs never started are dispatched again (the first dispatch
    # may be what was lost); once they have started, nothing is.
    assert router.route(envelope.to_json().encode(), envelope.type) == "duplicate"
    assert queued() == {"first": 2, "second": 3}
    for name in ("first", "second"):
        assert audit.claim(envelope.id, name, wake=0, token="worker", lease_seconds=5).granted
    assert router.route(envelope.to_json().encode(), envelope.type) == "duplicate"
    assert queued() == {"first": 2, "second": 3}
    assert sorted(e["status"] for e in list_envelopes(audit)) == ["accepted", "accepted"] + ["duplicate"] * 3
