"""Benchmark: stackreflex's pipeline beside raw kombu and raw dramatiq, on the same broker, in one run.

    .venv/bin/python bench/runtime.py [--broker-url URL] [--messages N] [--latency-samples N] [--rounds R]

Prints a table: event → handler-start latency (p50, p99) against the raw kombu
publish → consume round trip, and sustained no-op throughput through publisher → router →
dramatiq → audit log (SQLite) against raw dramatiq enqueue → process. Goals (issue #2):
latency p50 within 3× raw kombu, throughput at least 50% of raw dramatiq.

Each round measures all four, one after the other; the table gives the median over the
rounds (this machine's timings wander by a third between minutes) and each ratio's range.
stackreflex's envelopes, and raw dramatiq's messages, are published from a process of
their own, as the CLI publishes to a worker: published from the worker's process, the
publishing thread handles its confirms while the router and the worker handle its message,
and the measure becomes that contest for the interpreter lock. (The kombu round trip is one
thread publishing and consuming, by definition.)
"""

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
import uuid

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, default_middleware
from kombu import Connection, Exchange, Queue
from sqlalchemy import func, select

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.core.envelope import Envelope
from stackreflex.bus.publisher import Publisher
from stackreflex.core.registry import Registry, handler
from stackreflex.core.logs import setup_logging
from stackreflex.models.tables import Run
from stackreflex.runtime import Runtime
from stackreflex.core.settings import Settings

THREADS = 8
#: Longest a throughput run may take before the bench gives up (seconds).
RUN_LIMIT = 300


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def raw_kombu_round_trip(url: str, samples: int, durable: bool = True) -> list[float]:
    """Publish (with confirms) and consume one message at a time; seconds per round trip.

    The goal's baseline is a durable queue, as the router's: the broker writes a persistent
    message to disk before it confirms it. ``durable=False`` measures a transient queue,
    which skips that write, for information.
    """
    name = f"bench-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="topic", durable=False, auto_delete=True)
    queue = Queue(name, exchange, routing_key="bench.#", durable=durable, auto_delete=True)
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


# -- publishing from a process of its own ------------------------------------------------

def _publisher_process(kind: str, url: str, name: str, messages: int, ready, go, rates) -> None:
    """Connect, say ready, wait for go, publish ``messages`` one by one (each confirmed)."""
    if kind == "dramatiq":
        broker = _raw_broker(url)
        actor = dramatiq.Actor(lambda: None, broker=broker, actor_name=name, queue_name=name, priority=0, options={})
        send = actor.send
    else:
        publisher = Publisher(Settings(broker_url=url, namespace=name))
        send = lambda: publisher.publish(Envelope.new("bench.noop"))  # noqa: E731
    send()  # warm: connections, declarations
    ready.set()
    go.wait()
    start = time.perf_counter()
    for _ in range(messages):
        send()
    rates.put(messages / (time.perf_counter() - start))


def _latency_publisher(url: str, namespace: str, samples: int, connection, sent_at) -> None:
    """For each request: name the next envelope, then note the time (system-wide monotonic
    clock, in shared memory) and publish it.

    The id goes first so that the bench's waiting thread, which shares the worker's process,
    wakes while the envelope is on its way to the broker, not in the middle of its routing.
    """
    publisher = Publisher(Settings(broker_url=url, namespace=namespace))
    for _ in range(samples):
        connection.recv()
        envelope = Envelope.new("bench.noop")
        connection.send(envelope.id)
        sent_at.value = time.monotonic()
        publisher.publish(envelope)


def _latencies(url: str, namespace: str, samples: int, started: dict, seen: threading.Condition) -> list[float]:
    """Event → handler start, for envelopes published one at a time from another process."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    sent_at = context.Value("d", 0.0, lock=False)
    process = context.Process(target=_latency_publisher, args=(url, namespace, samples + 5, theirs, sent_at))
    process.start()
    latencies = []
    try:
        for i in range(samples + 5):
            mine.send("next")
            if not mine.poll(60):
                raise RuntimeError("the publishing process did not answer")
            envelope_id = mine.recv()
            with seen:
                if not seen.wait_for(lambda: envelope_id in started, timeout=30):
                    raise RuntimeError(f"envelope {envelope_id} did not reach its handler in 30 s")
            if i >= 5:  # the first few warm connections and caches
                latencies.append(started[envelope_id] - sent_at.value)
        return latencies
    finally:
        process.join(timeout=30)


def _timed_publishing(kind: str, url: str, name: str, messages: int, finished) -> tuple[float, float]:
    """Publish ``messages`` (+1 to warm) from another process; return (processed/s, published/s)
    once ``finished(n)`` says n of them were processed."""
    context = multiprocessing.get_context("spawn")
    ready, go, rates = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=_publisher_process, args=(kind, url, name, messages, ready, go, rates))
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the publishing process did not start")
        finished(1)  # the warm-up message, before the clock starts
        go.set()
        start = time.perf_counter()
        finished(messages + 1)
        elapsed = time.perf_counter() - start
        return messages / elapsed, rates.get(timeout=60)
    finally:
        process.join(timeout=30)


def _raw_broker(url: str) -> RabbitmqBroker:
    return RabbitmqBroker(url=url, confirm_delivery=True,
                          middleware=[m() for m in default_middleware] + [CurrentMessage()])


def raw_dramatiq_throughput(url: str, messages: int) -> float:
    """No-op messages enqueued (confirmed) from another process into a dramatiq worker; messages/s."""
    broker = _raw_broker(url)
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    done = threading.Semaphore(0)

    def noop() -> None:
        done.release()

    dramatiq.Actor(noop, broker=broker, actor_name=queue, queue_name=queue, priority=0, options={})
    broker.declare_queue(queue)
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    taken = 0

    def finished(n: int) -> None:
        nonlocal taken
        while taken < n:
            if not done.acquire(timeout=RUN_LIMIT):
                raise RuntimeError(f"raw dramatiq did not finish in {RUN_LIMIT} s")
            taken += 1

    try:
        return _timed_publishing("dramatiq", url, queue, messages, finished)[0]
    finally:
        worker.stop()
        for q in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(q)
        broker.close()


# -- stackreflex ---------------------------------------------------------------------------

def succeeded(runtime: Runtime) -> int:
    """Runs finished in the audit log (a cheap count: the benchmark must not load the system)."""
    with runtime.audit.engine.connect() as c:
        return c.execute(select(func.count()).select_from(Run).where(Run.status == "succeeded")).scalar()


def ours(url: str, samples: int, messages: int) -> tuple[list[float], float]:
    """Latency to handler start (one envelope at a time), then throughput to finished runs in
    the audit log; both published from another process."""
    registry = Registry()
    started: dict[str, float] = {}
    seen = threading.Condition()

    @handler("bench.noop", into=registry)
    def noop(event: Envelope, ctx) -> None:
        with seen:
            started[event.id] = time.monotonic()  # the publishing process's clock too
            seen.notify_all()

    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(broker_url=url, database_url=f"sqlite:///{tmp}/audit.db", namespace=namespace,
                            worker_threads=THREADS, log_level="WARNING")
        runtime = Runtime(settings, registry).start()
        try:
            latencies = _latencies(url, namespace, samples, started, seen)
            before = succeeded(runtime)

            def finished(n: int) -> None:
                deadline = time.monotonic() + RUN_LIMIT
                while succeeded(runtime) < before + n:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"stackreflex did not finish in {RUN_LIMIT} s")
                    time.sleep(0.05)

            throughput = _timed_publishing("stackreflex", url, namespace, messages, finished)[0]
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
    parser.add_argument("--messages", type=int, default=3000, help="messages for each throughput run")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all four measures")
    args = parser.parse_args()
    setup_logging("text", "WARNING")
    url = normalise_amqp_url(args.broker_url)

    rounds = []
    for n in range(args.rounds):
        kombu_rt = raw_kombu_round_trip(url, args.latency_samples)
        transient_rt = raw_kombu_round_trip(url, args.latency_samples, durable=False)
        raw_tp = raw_dramatiq_throughput(url, args.messages)
        our_latency, our_tp = ours(url, args.latency_samples, args.messages)
        figures = {"k50": percentile(kombu_rt, 0.5) * 1000, "k99": percentile(kombu_rt, 0.99) * 1000,
                   "t50": percentile(transient_rt, 0.5) * 1000,
                   "o50": percentile(our_latency, 0.5) * 1000, "o99": percentile(our_latency, 0.99) * 1000,
                   "raw": raw_tp, "ours": our_tp}
        rounds.append(figures)
        print(f"round {n + 1}: latency p50 {figures['k50']:.2f} / {figures['o50']:.2f} ms, "
              f"throughput {raw_tp:.0f} / {our_tp:.0f} msg/s", file=sys.stderr)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def spread(top: str, bottom: str) -> str:
        ratios = [r[top] / r[bottom] for r in rounds]
        return f"{min(ratios):.2f}-{max(ratios):.2f}x"

    k50, k99, t50, o50, o99, raw_tp, our_tp = (median(k) for k in ("k50", "k99", "t50", "o50", "o99", "raw", "ours"))
    rows = [
        ("latency p50 (ms)", f"{k50:.2f}", f"{o50:.2f}", f"{o50 / k50:.2f}x", spread("o50", "k50"), "<= 3x",
         o50 <= 3 * k50),
        ("latency p99 (ms)", f"{k99:.2f}", f"{o99:.2f}", f"{o99 / k99:.2f}x", spread("o99", "k99"), "", None),
        ("latency p50, vs a transient queue (ms)", f"{t50:.2f}", f"{o50:.2f}", f"{o50 / t50:.2f}x",
         spread("o50", "t50"), "", None),
        ("throughput (msg/s)", f"{raw_tp:.0f}", f"{our_tp:.0f}", f"{our_tp / raw_tp:.2f}x", spread("ours", "raw"),
         ">= 0.5x", our_tp >= 0.5 * raw_tp),
    ]
    print(f"\nbaselines: raw kombu publish->consume round trip (confirms on; a durable queue, and for "
          f"information a transient one); raw dramatiq enqueue->process; "
          f"{THREADS} worker threads; audit log on SQLite; median of {args.rounds} rounds of "
          f"{args.latency_samples} latency samples and {args.messages} messages\n")
    header = ("measure", "baseline", "stackreflex", "ratio", "range", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        cells = [("" if c is None else ("yes" if c is True else "no" if c is False else str(c))) for c in row]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
