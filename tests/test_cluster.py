"""A highly available bus: quorum queues (declared as the setting and the broker say, a queue of
the other type refused with what to do, a message delivered too often dead-lettered into the
DLQ), several broker URLs, and a three-node cluster losing the node workers are connected to
while 5,000 envelopes go through: each handled exactly once, none lost."""

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Queue

from stackreflex.bus.backend import open_bus
from stackreflex.bus.connections import bus_identity, display_url, kombu_connection, probe_broker
from stackreflex.bus.dispatch import RelayedRabbitmqBroker, handler_queue
from stackreflex.bus.publisher import Publisher
from stackreflex.bus.queues import DELIVERY_LIMIT, resolve
from stackreflex.core.envelope import Envelope
from stackreflex.core.errors import BrokerUnavailable, ConfigError
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_envelopes, list_runs

from .cluster import Cluster
from .conftest import HANDLERS, make_settings, run_cli, wait_for

KEY = b"k" * 32


def declared(namespace: str) -> dict[str, dict[str, Any]]:
    """Every queue of ``namespace``: its type and arguments, as the broker lists them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "--formatter", "json", "name", "type", "arguments"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {
        q["name"]: {"type": q["type"], "arguments": {a[0]: a[2] for a in q["arguments"]}}
        for q in json.loads(listed or "[]")
        if q["name"].startswith(f"{namespace}.")
    }


def declare_all(settings: Settings) -> None:
    """What a worker declares before it starts: the bus's queues and the handler ``note``'s."""
    bus = open_bus(settings, dispatch_key=KEY)
    try:
        bus.broker.declare_queue(handler_queue(settings, "note"))
        bus.declare_queues()
    finally:
        bus.close()


@pytest.mark.parametrize(("setting", "expected"), [("auto", "quorum"), ("quorum", "quorum"), ("classic", "classic")])
def test_queues_are_declared_of_the_type_the_setting_and_the_broker_say(
    broker_url: str, namespace: str, setting: str, expected: str
) -> None:
    declare_all(Settings(broker_url=broker_url, namespace=namespace, queue_type=setting))
    queues = declared(namespace)
    ns = namespace
    names = {f"{ns}.router", f"{ns}.unrouted", f"{ns}.dlq", f"{ns}.note", f"{ns}.note.DQ", f"{ns}.note.XQ"}
    assert set(queues) == names
    assert {q["type"] for q in queues.values()} == {expected}
    args = {name: q["arguments"] for name, q in queues.items()}
    if expected == "classic":  # exactly as before quorum queues were supported
        assert args[f"{ns}.router"] == args[f"{ns}.unrouted"] == args[f"{ns}.dlq"] == {}
        assert (
            args[f"{ns}.note"]
            == args[f"{ns}.note.DQ"]
            == {
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{ns}.note.XQ",
            }
        )
        assert set(args[f"{ns}.note.XQ"]) == {"x-message-ttl"}
        return
    # a delivery limit where a message is consumed, dead-lettering at least once into the DLQ path
    for name, into in ((f"{ns}.router", f"{ns}.dlq"), (f"{ns}.unrouted", f"{ns}.dlq"), (f"{ns}.note", f"{ns}.note.XQ")):
        assert args[name]["x-delivery-limit"] == DELIVERY_LIMIT
        assert args[name]["x-dead-letter-routing-key"] == into and args[name]["x-dead-letter-exchange"] == ""
        assert args[name]["x-dead-letter-strategy"] == "at-least-once"
    # none where messages wait (their time, or an operator): a peek at them counts as a delivery
    for name in (f"{ns}.note.DQ", f"{ns}.note.XQ", f"{ns}.dlq"):
        assert "x-delivery-limit" not in args[name]
    assert args[f"{ns}.note.DQ"]["x-dead-letter-routing-key"] == f"{ns}.note.XQ"
    assert args[f"{ns}.note.XQ"]["x-message-ttl"] > 0


def test_auto_means_classic_on_brokers_without_the_quorum_queues_needed_and_embedded() -> None:
    auto, quorum = Settings(queue_type="auto"), Settings(queue_type="quorum")
    assert resolve(auto, {"product": "RabbitMQ", "version": "3.10.8"}) == "quorum"
    assert resolve(auto, {"product": b"RabbitMQ", "version": b"4.1.0"}) == "quorum"
    assert resolve(auto, {"product": "RabbitMQ", "version": "3.9.29"}) == "classic"
    assert resolve(auto, None) == "classic"  # the embedded bus
    with pytest.raises(ConfigError, match=r"quorum queues need RabbitMQ 3\.10 or later.*QUEUE_TYPE=classic"):
        resolve(quorum, {"product": "RabbitMQ", "version": "3.8.35"})


def test_a_queue_of_the_other_type_stops_the_worker_with_what_to_do(
    broker_url: str, namespace: str, tmp_path: Path
) -> None:
    declare_all(Settings(broker_url=broker_url, namespace=namespace, queue_type="classic"))
    settings = make_settings(broker_url, f"sqlite:///{tmp_path}/audit.db", namespace, queue_type="auto")  # quorum here

    # The worker stops before it consumes anything, saying which queue, what it is, and what to do.
    done = run_cli(settings, tmp_path, "worker", "--handlers", HANDLERS, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert f"queue {namespace}.dlq is a classic queue, and this installation declares quorum queues" in said
    assert "set STACKREFLEX_QUEUE_TYPE=classic to keep using it" in said
    assert f"rabbitmqctl delete_queue {namespace}.dlq" in said
    assert "Traceback" not in done.stderr

    # A handler's queue (declared by dramatiq's client) says the same.
    bus = open_bus(settings.model_copy(update={"queue_type": "quorum"}), dispatch_key=KEY)
    try:
        assert isinstance(bus.broker, RelayedRabbitmqBroker)
        bus.broker.declare_queue(handler_queue(settings, "note"))
        with pytest.raises(ConfigError) as refused:
            bus.broker.declare_queue(handler_queue(settings, "note"), ensure=True)
        assert f"queue {namespace}.note is a classic queue" in str(refused.value)
        assert "STACKREFLEX_QUEUE_TYPE=quorum" in str(refused.value)
    finally:
        bus.close()
    # With the setting that matches, every queue is accepted as it is.
    declare_all(settings.model_copy(update={"queue_type": "classic"}))
    assert {q["type"] for q in declared(namespace).values()} == {"classic"}


def test_a_message_delivered_past_the_limit_is_dead_lettered_into_the_dlq(
    broker_url: str, namespace: str, tmp_path: Path
) -> None:
    """A message the router's queue has delivered DELIVERY_LIMIT times without an acknowledgement
    (a router crashing on it, each time) goes to the DLQ, where `dlq list` shows why."""
    settings = make_settings(broker_url, f"sqlite:///{tmp_path}/audit.db", namespace, queue_type="quorum")
    declare_all(settings)
    envelope = Envelope.new("test.record", subject="poison")
    router_queue = f"{namespace}.router"
    with kombu_connection(settings) as connection:
        connection.Producer().publish(
            envelope.to_json().encode(), exchange="", routing_key=router_queue, delivery_mode=2, headers={}
        )
        deliveries = 0
        while (message := Queue(router_queue, channel=connection.default_channel, no_declare=True).get()) is not None:
            deliveries += 1
            message.requeue()
            assert deliveries <= DELIVERY_LIMIT + 1
    assert deliveries == DELIVERY_LIMIT + 1
    listed = run_cli(settings, tmp_path, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [parked] = json.loads(listed.stdout)
    assert parked["envelope_id"] == envelope.id and parked["type"] == "test.record"
    assert f"dead-lettered it from {router_queue} (delivery_limit)" in parked["reason"]


def test_several_broker_urls_are_one_bus_in_any_order_and_their_passwords_are_masked() -> None:
    first = Settings(broker_url="amqp://u:s3cret@a:5681/, amqp://u:s3cret@b:5682/", namespace="n")
    second = Settings(broker_url="amqp://u:s3cret@b:5682/,amqp://u:s3cret@a:5681/", namespace="n")
    assert bus_identity(first, "me") == bus_identity(second, "me") == "a:5681,b:5682/%2F#n"
    assert bus_identity(Settings(broker_url="amqp://u:p@a:5672/", namespace="n"), "me") == "a:5672/%2F#n"
    assert "s3cret" not in display_url(first) and display_url(first).count("***") == 2
    connection = kombu_connection(first)
    assert [connection.hostname, *[u.split("@")[1] for u in connection.alt]] == ["a", "a:5681/%2F", "b:5682/%2F"]
    with pytest.raises(ConfigError, match="mix amqp:// and amqps://"):
        kombu_connection(Settings(broker_url="amqp://a/,amqps://b/"))


def test_every_client_reaches_the_broker_through_the_next_url_when_the_first_refuses(
    broker_url: str, namespace: str
) -> None:
    refusing = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there
    settings = Settings(broker_url=f"{refusing},{broker_url}", namespace=namespace)
    assert probe_broker(settings) == "connected to 127.0.0.1:5672"
    declare_all(settings)  # kombu's connections and dramatiq's (pika) both
    assert {f"{namespace}.router", f"{namespace}.note"} <= set(declared(namespace))
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1/"):
        Publisher(Settings(broker_url=refusing, namespace=namespace)).publish(Envelope.new("test.record"))


# -- the cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("rabbitmq-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


ENVELOPES = 5000
PUBLISHERS = 4


def publish_until_confirmed(settings: Settings, envelopes: list[Envelope], republished: list[str]) -> None:
    """Publish each envelope until the broker confirms it: one whose publish failed (its node
    lost mid-way) is published again, and the router keeps one of each id."""
    publisher = Publisher(settings)
    try:
        for envelope in envelopes:
            for _attempt in range(20):
                try:
                    publisher.publish(envelope)
                    break
                except BrokerUnavailable:
                    republished.append(envelope.id)
                    time.sleep(0.2)
            else:
                raise AssertionError(f"could not publish {envelope.id}")
    finally:
        publisher.close()


@pytest.mark.slow
@pytest.mark.alone
@pytest.mark.timeout(300)
def test_losing_the_node_a_worker_is_connected_to_loses_nothing_and_runs_nothing_twice(
    rabbitmq_cluster: Cluster, postgres_url: str, workers: Any, tmp_path: Path
) -> None:
    cluster = rabbitmq_cluster
    namespace = f"t{uuid.uuid4().hex[:10]}"
    # Each worker reaches the cluster through another first node: the first through srx-a,
    # the second through srx-b; the publisher through srx-a too.
    on_a, on_b = (
        make_settings(cluster.urls(*order), postgres_url, namespace, worker_threads=8, queue_type="quorum")
        for order in ((0, 1, 2), (1, 2, 0))
    )
    env = {"STACKREFLEX_QUEUE_TYPE": "quorum"}
    for worker in [workers(on_a, env=env, ready=0), workers(on_b, env=env, ready=0)]:  # started side by side
        worker.wait_ready(timeout=90)
    queues = declared_on(cluster, 1, namespace)
    assert queues and set(queues.values()) == {"quorum"}

    mark = tmp_path / "marks"
    envelopes = [Envelope.new("test.record", subject=f"e{i}", data={"mark": str(mark)}) for i in range(ENVELOPES)]
    republished: list[str] = []
    # four publishing threads (a confirm from a quorum queue waits for two nodes' disks)
    publishers = [
        threading.Thread(target=publish_until_confirmed, args=(on_a, envelopes[i::PUBLISHERS], republished))
        for i in range(PUBLISHERS)
    ]
    started = time.monotonic()
    for publisher in publishers:
        publisher.start()
    audit = AuditLog.open(postgres_url)

    def succeeded() -> int:
        return len(list_runs(audit, RunFilter(status=["succeeded"], limit=ENVELOPES + 100)))

    def phase(what: str) -> None:
        print(f"{time.monotonic() - started:5.1f}s {what}: {succeeded()} runs succeeded")

    wait_for(lambda: succeeded() >= ENVELOPES // 4, timeout=60, interval=0.5, message="a quarter handled")
    phase("stopping srx-a")
    cluster.stop_node(0)  # the node the first worker and the publisher are connected to
    lost_at = succeeded()
    phase("srx-a stopped")
    wait_for(lambda: succeeded() >= lost_at + ENVELOPES // 5, timeout=60, interval=0.5, message="going on without it")
    phase("starting srx-a")
    restart = threading.Thread(target=cluster.start_node, args=(0,))  # while the envelopes go on
    restart.start()
    for publisher in publishers:
        publisher.join(120)
        assert not publisher.is_alive()
    phase("published")
    restart.join(120)
    assert "srx-a@localhost port 5681: running" in cluster.status()
    phase("srx-a started")
    wait_for(lambda: succeeded() == ENVELOPES, timeout=120, interval=1, message="every envelope's run succeeded")
    wait_drained_on(cluster, 1, namespace)
    elapsed = time.monotonic() - started

    runs = list_runs(audit, RunFilter(limit=ENVELOPES + 100))
    assert len(runs) == ENVELOPES and {r["status"] for r in runs} == {"succeeded"}
    assert sorted(r["envelope_id"] for r in runs) == sorted(e.id for e in envelopes)
    assert {r["attempts"] for r in runs} == {1}, Counter(r["attempts"] for r in runs)
    executions = Counter(line.split()[1] for line in mark.read_text().splitlines())
    assert len(executions) == ENVELOPES and set(executions.values()) == {1}
    # an envelope delivered again (its router's node lost before the acknowledgement) or
    # published again is recorded as a duplicate of the one accepted, and runs nothing
    statuses = Counter(e["status"] for e in list_envelopes(audit, limit=ENVELOPES * 2))
    assert statuses["accepted"] == ENVELOPES and set(statuses) <= {"accepted", "duplicate"}, statuses
    listed = run_cli(on_b, tmp_path, "dlq", "list", "--json", "--handler", "note")
    assert listed.returncode == 0 and json.loads(listed.stdout or "[]") == [], listed.stdout + listed.stderr
    print(f"{ENVELOPES} envelopes in {elapsed:.0f}s; {len(republished)} publishes made again")


def declared_on(cluster: Cluster, node: int, namespace: str) -> dict[str, str]:
    listed = cluster.ctl(node, "-q", "list_queues", "--formatter", "json", "name", "type")
    return {q["name"]: q["type"] for q in json.loads(listed or "[]") if q["name"].startswith(f"{namespace}.")}


def wait_drained_on(cluster: Cluster, node: int, namespace: str) -> None:
    def drained() -> bool:
        listed = cluster.ctl(
            node, "-q", "list_queues", "--formatter", "json", "name", "messages_ready", "messages_unacknowledged"
        )
        mine = [q for q in json.loads(listed or "[]") if q["name"].startswith(f"{namespace}.")]
        return all(q["messages_ready"] == 0 and q["messages_unacknowledged"] == 0 for q in mine)

    wait_for(drained, timeout=60, interval=0.5, message="every queue drained")
