"""Benchmark: stackreflex's pipeline beside raw kombu and raw dramatiq, on the same broker, in one run.

    .venv/bin/python bench/runtime.py [--broker-url URL] [--messages N] [--latency-samples N]

Prints a table: event → handler-start latency (p50, p99) against the raw kombu
publish → consume round trip, and sustained no-op throughput through publisher → router →
dramatiq → audit log (SQLite) against raw dramatiq enqueue → process. Goals (issue #2):
latency p50 within 3× raw kombu, throughput at least 50% of raw dramatiq.
"""

import argparse
import sys
import tempfile
import threading
import time
import uuid

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, default_middleware
from kombu import Connection, Exchange, Queue

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.bus.envelope import Envelope
from stackreflex.handlers.registry import Registry, handler
from stackreflex.logs import setup_logging
from sqlalchemy import func, select

from stackreflex.models.tables import Run
from stackreflex.runtime import Runtime
from stackreflex.settings import Settings

THREADS = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def raw_kombu_round_trip(url: str, samples: int) -> list[float]:
    """Publish (with confirms) and consume one message at a time; seconds per round trip."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="topic", durable=False, auto_delete=True)
    queue = Queue(name, exchange, routing_key="bench.#", auto_delete=True)
    times = []
    with Connection(url, transport_options={"confirm_publish": True}) as pub, Connection(url) as sub:
        producer = pub.Producer(exchange=exchange)
        received = threading.Event()
        with sub.Consumer([queue], on_message=lambda m: (m.ack(), received.set())):
            producer.publish(b"warm", routing_key="bench.x", declare=[exchange, queue])
            sub.drain_events(timeout=5)
            for _ in range(samples):
                received.clear()
                start = time.perf_counter()
                producer.publish(b"{}", routing_key="bench.x", delivery_mode=2)
                while not received.is_set():
                    sub.drain_events(timeout=5)
                times.append(time.perf_counter() - start)
    return times


def raw_dramatiq_throughput(url: str, messages: int) -> float:
    """Enqueue N no-op messages (confirmed) with a worker running; messages per second."""
    broker = RabbitmqBroker(url=url, confirm_delivery=True,
                            middleware=[m() for m in default_middleware] + [CurrentMessage()])
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    done = threading.Semaphore(0)

    def noop() -> None:
        done.release()

    actor = dramatiq.Actor(noop, broker=broker, actor_name=queue, queue_name=queue, priority=0, options={})
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    try:
        start = time.perf_counter()
        for _ in range(messages):
            actor.send()
        for _ in range(messages):
            done.acquire(timeout=120)
        return messages / (time.perf_counter() - start)
    finally:
        worker.stop()
        for q in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(q)
        broker.close()


def succeeded(runtime: Runtime) -> int:
    """Runs finished in the audit log (a cheap count: the benchmark must not load the system)."""
    with runtime.audit.engine.connect() as c:
        return c.execute(select(func.count()).select_from(Run).where(Run.status == "succeeded")).scalar()


def ours(url: str, samples: int, messages: int) -> tuple[list[float], float]:
    """Latency to handler start, then throughput to finished runs, through the whole pipeline."""
    registry = Registry()
    started: dict[str, float] = {}
    seen = threading.Condition()

    @handler("bench.noop", into=registry)
    def noop(event: Envelope, ctx) -> None:
        with seen:
            started[event.id] = time.perf_counter()
            seen.notify_all()

    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(broker_url=url, database_url=f"sqlite:///{tmp}/audit.db", namespace=namespace,
                            worker_threads=THREADS, log_level="WARNING")
        runtime = Runtime(settings, registry).start()
        try:
            publisher = runtime.publisher
            latencies = []
            for i in range(samples + 5):
                envelope = Envelope.new("bench.noop")
                sent = time.perf_counter()
                publisher.publish(envelope, mandatory=False)
                with seen:
                    seen.wait_for(lambda: envelope.id in started, timeout=30)
                if i >= 5:  # the first few warm connections and caches
                    latencies.append(started[envelope.id] - sent)
            before = succeeded(runtime)
            start = time.perf_counter()
            for _ in range(messages):
                publisher.publish(Envelope.new("bench.noop"), mandatory=False)
            while succeeded(runtime) < before + messages:
                if time.perf_counter() - start > 300:
                    raise RuntimeError("throughput run did not finish in 300 s")
                time.sleep(0.05)
            throughput = messages / (time.perf_counter() - start)
        finally:
            runtime.stop()
            with Connection(url) as c:
                for q in (f"{namespace}.router", f"{namespace}.noop", f"{namespace}.noop.DQ", f"{namespace}.noop.XQ"):
                    c.default_channel.queue_delete(q)
                c.default_channel.exchange_delete(namespace)
    return latencies, throughput


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=1000, help="messages for the throughput runs")
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()
    setup_logging("text", "WARNING")
    url = normalise_amqp_url(args.broker_url)

    kombu_rt = raw_kombu_round_trip(url, args.latency_samples)
    raw_tp = raw_dramatiq_throughput(url, args.messages)
    our_latency, our_tp = ours(url, args.latency_samples, args.messages)

    k50, k99 = percentile(kombu_rt, 0.5) * 1000, percentile(kombu_rt, 0.99) * 1000
    o50, o99 = percentile(our_latency, 0.5) * 1000, percentile(our_latency, 0.99) * 1000
    rows = [
        ("latency p50 (ms)", f"{k50:.2f}", f"{o50:.2f}", f"{o50 / k50:.2f}x", "<= 3x", o50 <= 3 * k50),
        ("latency p99 (ms)", f"{k99:.2f}", f"{o99:.2f}", f"{o99 / k99:.2f}x", "", None),
        ("throughput (msg/s)", f"{raw_tp:.0f}", f"{our_tp:.0f}", f"{our_tp / raw_tp:.2f}x", ">= 0.5x",
         our_tp >= 0.5 * raw_tp),
    ]
    print(f"\nbaselines: raw kombu publish->consume round trip (confirms on); raw dramatiq enqueue->process; "
          f"{THREADS} worker threads; audit log on SQLite; {args.messages} messages, "
          f"{args.latency_samples} latency samples\n")
    header = ("measure", "baseline", "stackreflex", "ratio", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    for row in [header] + rows:
        cells = [("" if c is None else ("yes" if c is True else "no" if c is False else str(c))) for c in row]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
