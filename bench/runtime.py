"""Benchmark: stackreflex's pipeline beside raw dramatiq and raw kombu, on the same broker, in one run.

    .venv/bin/python bench/runtime.py [--broker-url URL] [--messages N] [--latency-samples N]
                                      [--sustained-seconds S] [--rounds R] [--json]

Every round measures, one after the other:

- **capacity**: ``--messages`` envelopes queued first, then drained: from the moment a
  process starts serving to the last run recorded ``succeeded`` in the audit log, on SQLite
  and on PostgreSQL, beside raw dramatiq draining as many no-op messages queued on the same
  broker (durable queue, persistent messages, publisher confirms, the same worker threads);
- **latency, one at a time**: event → handler start, beside publish → delivery of one
  persistent message on a durable queue (raw kombu, confirms on): the least any broker hop costs;
- **latency under load**: event → handler start while envelopes are offered at a steady
  50% of the capacity just measured on SQLite (open loop: each is sent at its time, whether or
  not the ones before it were handled).

Beside each drain, the CPU it cost per envelope: this process's (its threads but the main
one, which only waits for the end) and the broker's Erlang VM's when it runs on this machine.
On a machine of few cores these, not waiting, set the capacity.

After the rounds, a ``stackreflex worker`` process serving the no-op handler is given
``--messages`` envelopes, and its resident memory is read before and after (``worker_rss_mb``).

The table gives each figure's median over the rounds with its range, and the load average
beside it (this machine's timings wander by a third between minutes). ``--json`` prints one
object instead. Envelopes are published from a process of their own, as the CLI publishes to
a worker. PostgreSQL is reached through ``STACKREFLEX_TEST_PG_URL`` (as in the test suite; a
database of its own per round) and started by ``scripts/services`` when it is not listening.
"""

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import dramatiq
import psycopg
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, default_middleware
from kombu import Connection, Exchange, Queue
from kombu.exceptions import ChannelError
from sqlalchemy import func, select

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.bus.publisher import Publisher
from stackreflex.cli.common import load_all_handlers
from stackreflex.core.envelope import Envelope
from stackreflex.core.logs import setup_logging
from stackreflex.core.registry import Registry, handler
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.tables import Run
from stackreflex.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parent))
from brokers import remove_namespace

THREADS = 8
#: Longest one drain may take before the bench gives up (seconds).
RUN_LIMIT = 600
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parent.parent


class Drained:
    """One drain, timed: envelopes per second, and CPU milliseconds per envelope of this
    process's serving threads and of the broker (None when it does not run on this machine)."""

    def __init__(self, url: str, messages: int):
        self.messages, self.broker_pid = messages, broker_pid(url)

    def __enter__(self) -> "Drained":
        self._cpu, self._broker = serving_cpu(), process_cpu(self.broker_pid)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.rate = self.messages / (time.perf_counter() - self._start)
        self.cpu_ms = (serving_cpu() - self._cpu) / self.messages * 1000
        broker = process_cpu(self.broker_pid)
        self.broker_cpu_ms = None if broker is None else (broker - self._broker) / self.messages * 1000


def serving_cpu() -> float:
    """CPU seconds of this process's threads but the calling (main) one."""
    return time.process_time() - time.thread_time()


def broker_pid(url: str) -> int | None:
    """The process listening on the broker URL's port on this machine, if any (asked of ``ss``)."""
    port = urlsplit(url).port or 5672
    try:
        listening = subprocess.run(
            ["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"pid=(\d+)", listening)
    return int(found.group(1)) if found else None


def process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- baselines -----------------------------------------------------------------------------


def raw_kombu_round_trip(url: str, samples: int) -> list[float]:
    """Publish one persistent message (confirmed) to a durable queue and consume it, one at a
    time; seconds per round trip. The broker writes the message to disk before it confirms."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="topic", durable=False, auto_delete=True)
    queue = Queue(name, exchange, routing_key="bench.#", durable=True, auto_delete=True)
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


def _raw_broker(url: str) -> RabbitmqBroker:
    return RabbitmqBroker(
        url=url, confirm_delivery=True, middleware=[m() for m in default_middleware] + [CurrentMessage()]
    )


def raw_dramatiq_drain(url: str, messages: int) -> Drained:
    """``messages`` no-op messages queued (persistent, confirmed), then drained by a dramatiq
    worker of THREADS threads; timed from the worker's start to the last one processed."""
    broker = _raw_broker(url)
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    done = threading.Semaphore(0)
    actor = dramatiq.Actor(
        lambda: done.release(), broker=broker, actor_name=queue, queue_name=queue, priority=0, options={}
    )
    broker.declare_queue(queue)
    try:
        for _ in range(messages):
            actor.send()
        with Drained(url, messages) as drained:
            worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
            worker.start()
            try:
                for _ in range(messages):
                    if not done.acquire(timeout=RUN_LIMIT):
                        raise RuntimeError(f"raw dramatiq did not drain in {RUN_LIMIT} s")
            finally:
                worker.stop()
        return drained
    finally:
        for q in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(q)
        broker.close()


# -- stackreflex ---------------------------------------------------------------------------


class Bench:
    """A namespace with a no-op handler that notes when each envelope reached it."""

    def __init__(self, url: str):
        self.url = url
        self.namespace = f"bench{uuid.uuid4().hex[:8]}"
        self.registry = Registry()
        self.started: dict[str, float] = {}
        self.seen = threading.Condition()

        @handler("bench.noop", into=self.registry)
        def noop(event: Envelope, ctx) -> None:
            with self.seen:
                self.started[event.id] = time.monotonic()  # the publishing process's clock too
                self.seen.notify_all()

    def settings(self, database_url: str) -> Settings:
        return Settings(
            broker_url=self.url,
            database_url=database_url,
            namespace=self.namespace,
            worker_threads=THREADS,
            log_level="WARNING",
        )

    def runtime(self, database_url: str) -> Runtime:
        return Runtime(self.settings(database_url), self.registry).start()

    def clean_up(self) -> None:
        remove_namespace(self.url, self.namespace, [h.name for h in self.registry])


def succeeded(audit: AuditLog) -> int:
    """Runs recorded succeeded (a cheap count: the benchmark must not load the system)."""
    with audit.engine.connect() as c:
        return c.execute(select(func.count()).select_from(Run).where(Run.status == "succeeded")).scalar()


def ours_drain(bench: Bench, database_url: str, messages: int) -> Drained:
    """``messages`` envelopes queued on the router's queue while no process serves, then
    drained: timed from the runtime's start to the last run recorded succeeded."""
    bench.runtime(database_url).stop()  # the queues, their bindings and the schema
    publisher = Publisher(bench.settings(database_url))
    for _ in range(messages):
        publisher.publish(Envelope.new("bench.noop"))
    with Drained(bench.url, messages) as drained:
        runtime = bench.runtime(database_url)
        try:
            deadline = time.monotonic() + RUN_LIMIT
            while (done := succeeded(runtime.audit)) < messages:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stackreflex drained {done} of {messages} in {RUN_LIMIT} s")
                time.sleep(0.02)
        finally:
            runtime.stop()
    return drained


def _paced_publisher(url: str, namespace: str, rate: float, count: int, connection) -> None:
    """Publish ``count`` envelopes, the i-th at start + i/rate (or at once if late); send back
    each envelope's id and the time its publishing began."""
    publisher = Publisher(Settings(broker_url=url, namespace=namespace))
    publisher.publish(Envelope.new("bench.noop"))  # warm: connection, declarations
    connection.send("ready")
    connection.recv()
    sent = []
    start = time.monotonic()
    for i in range(count):
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        envelope = Envelope.new("bench.noop")
        sent.append((envelope.id, time.monotonic()))
        publisher.publish(envelope)
    connection.send(sent)


def _offered(bench: Bench, rate: float, count: int) -> list[float]:
    """Event → handler start for ``count`` envelopes offered at ``rate`` per second."""
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    process = context.Process(target=_paced_publisher, args=(bench.url, bench.namespace, rate, count, theirs))
    process.start()
    try:
        if not mine.poll(60) or mine.recv() != "ready":
            raise RuntimeError("the publishing process did not start")
        mine.send("go")
        if not mine.poll(count / rate + 120):
            raise RuntimeError("the publishing process did not finish")
        sent = mine.recv()
        with bench.seen:
            if not bench.seen.wait_for(lambda: all(i in bench.started for i, _ in sent), timeout=120):
                raise RuntimeError("not every envelope reached its handler in 120 s")
        return [bench.started[i] - at for i, at in sent]
    finally:
        process.join(timeout=30)


def ours_latency(bench: Bench, samples: int, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    """Event → handler start one at a time (a rate slow enough that each is handled before
    the next is sent), then under a steady ``rate``; on SQLite."""
    with tempfile.TemporaryDirectory() as tmp:
        runtime = bench.runtime(f"sqlite:///{tmp}/audit.db")
        try:
            one_at_a_time = _offered(bench, 50.0, samples + 5)[5:]  # the first few warm connections
            sustained = _offered(bench, rate, max(50, int(rate * seconds)))
        finally:
            runtime.stop()
    return one_at_a_time, sustained


def worker_rss(url: str, messages: int) -> tuple[float, float]:
    """(MB resident at start, MB resident after ``messages`` envelopes) of a `stackreflex
    worker` process serving the no-op handler on SQLite."""
    bench = Bench(url)
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/audit.db"
        env = {
            **os.environ,
            "STACKREFLEX_BROKER_URL": url,
            "STACKREFLEX_DATABASE_URL": database_url,
            "STACKREFLEX_NAMESPACE": bench.namespace,
            "STACKREFLEX_WORKER_THREADS": str(THREADS),
            "STACKREFLEX_LOG_LEVEL": "WARNING",
            "XDG_STATE_HOME": tmp,
        }
        noop = str(Path(__file__).with_name("noop_handlers.py"))
        worker = subprocess.Popen([sys.executable, "-m", "stackreflex", "worker", "-H", noop], env=env)
        try:
            publisher = Publisher(bench.settings(database_url))
            _until(lambda: _router_consuming(url, bench.namespace), worker)
            publisher.publish(Envelope.new("bench.noop"))
            audit = AuditLog.open(database_url)
            _until(lambda: succeeded(audit) >= 1, worker)
            start = _rss_mb(worker.pid)
            for _ in range(messages):
                publisher.publish(Envelope.new("bench.noop"))
            _until(lambda: succeeded(audit) >= messages + 1, worker)
            return start, _rss_mb(worker.pid)
        finally:
            worker.terminate()
            worker.wait(60)
            # the worker serves the built-in handlers too, and declared their queues
            remove_namespace(url, bench.namespace, [h.name for h in load_all_handlers([noop])])


def _router_consuming(url: str, namespace: str) -> bool:
    """The worker's router consumes its queue, so its bindings are declared: an envelope
    published before then would go to the unrouted queue and be parked."""
    with Connection(url) as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=f"{namespace}.router", passive=True)
        except ChannelError:  # not declared yet (the channel is closed with it)
            return False
    return declared.consumer_count > 0


def _until(done, worker: subprocess.Popen) -> None:
    deadline = time.monotonic() + RUN_LIMIT
    while not done():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker process stopped or did not finish")
        time.sleep(0.1)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """The test suite's PostgreSQL, started by scripts/services when nothing listens."""
    url = os.environ.get("STACKREFLEX_TEST_PG_URL", PG_DEFAULT)
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url
    except psycopg.OperationalError:
        print("bench: PostgreSQL not reachable; starting it with scripts/services", file=sys.stderr)
    out = subprocess.run(
        ["bash", "-c", f'. "{ROOT}/scripts/services" >&2 && echo "$STACKREFLEX_TEST_PG_URL"'],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out


class PostgresDatabase:
    """A database of its own, dropped afterwards."""

    def __init__(self, admin_url: str):
        self.admin_url, self.name = admin_url, f"srx_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        return f"{self.admin_url.rsplit('/', 1)[0]}/{self.name}"

    def __exit__(self, *exc) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- the round and the table -------------------------------------------------------------------


def one_round(url: str, pg_admin: str, args) -> dict:
    load = os.getloadavg()[0]
    raw = raw_dramatiq_drain(url, args.messages)
    kombu = raw_kombu_round_trip(url, args.latency_samples)
    bench = Bench(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = ours_drain(bench, f"sqlite:///{tmp}/audit.db", args.messages)
        with PostgresDatabase(pg_admin) as database_url:
            postgresql = ours_drain(bench, database_url, args.messages)
        rate = 0.5 * sqlite.rate
        latency, sustained = ours_latency(bench, args.latency_samples, rate, args.sustained_seconds)
    finally:
        bench.clean_up()
    cpu = {}
    for name, drained in (("raw", raw), ("sqlite", sqlite), ("postgresql", postgresql)):
        cpu[f"{name}_cpu_ms"] = drained.cpu_ms
        if drained.broker_cpu_ms is not None:
            cpu[f"{name}_broker_cpu_ms"] = drained.broker_cpu_ms
    return {
        "raw_drain": raw.rate,
        "sqlite_drain": sqlite.rate,
        "postgresql_drain": postgresql.rate,
        "capacity_ratio_sqlite": sqlite.rate / raw.rate,
        "capacity_ratio_postgresql": postgresql.rate / raw.rate,
        **cpu,
        "kombu_p50_ms": percentile(kombu, 0.5) * 1000,
        "kombu_p99_ms": percentile(kombu, 0.99) * 1000,
        "latency_p50_ms": percentile(latency, 0.5) * 1000,
        "latency_p99_ms": percentile(latency, 0.99) * 1000,
        "latency_p50_ratio": percentile(latency, 0.5) / percentile(kombu, 0.5),
        "sustained_rate": rate,
        "sustained_p50_ms": percentile(sustained, 0.5) * 1000,
        "sustained_p99_ms": percentile(sustained, 0.99) * 1000,
        "load_average": (load + os.getloadavg()[0]) / 2,
    }


def summary(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds, and its range under ``<figure>_range``."""
    out: dict = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        out[key] = statistics.median(values)
        out[f"{key}_range"] = [min(values), max(values)]
    return out


TARGETS = {
    "capacity_ratio_sqlite": (">=", 0.6),
    "capacity_ratio_postgresql": (">=", 0.5),
    "latency_p50_ratio": ("<=", 2.5),
    "sustained_p99_ms": ("<=", 25.0),
}


def table(s: dict, args) -> str:
    def fig(key: str, unit: str = "") -> str:
        low, high = s[f"{key}_range"]
        return f"{s[key]:.2f}{unit} ({low:.2f}-{high:.2f})"

    def met(key: str) -> str:
        op, goal = TARGETS[key]
        ok = s[key] >= goal if op == ">=" else s[key] <= goal
        return f"{op} {goal:g}: {'yes' if ok else 'no'}"

    rows = [
        (
            "capacity, SQLite (envelopes/s)",
            f"{s['raw_drain']:.0f}",
            f"{s['sqlite_drain']:.0f}",
            fig("capacity_ratio_sqlite", "x"),
            met("capacity_ratio_sqlite"),
        ),
        (
            "capacity, PostgreSQL (envelopes/s)",
            f"{s['raw_drain']:.0f}",
            f"{s['postgresql_drain']:.0f}",
            fig("capacity_ratio_postgresql", "x"),
            met("capacity_ratio_postgresql"),
        ),
        (
            "latency p50, one at a time (ms)",
            f"{s['kombu_p50_ms']:.2f}",
            f"{s['latency_p50_ms']:.2f}",
            fig("latency_p50_ratio", "x"),
            met("latency_p50_ratio"),
        ),
        ("latency p99, one at a time (ms)", f"{s['kombu_p99_ms']:.2f}", fig("latency_p99_ms"), "", ""),
        (f"latency p50 at {s['sustained_rate']:.0f}/s (ms)", "", fig("sustained_p50_ms"), "", ""),
        (f"latency p99 at {s['sustained_rate']:.0f}/s (ms)", "", fig("sustained_p99_ms"), "", met("sustained_p99_ms")),
    ]
    for who, key in (("this process's threads", "cpu_ms"), ("the broker", "broker_cpu_ms")):
        if f"raw_{key}" in s:
            rows.append(
                (
                    f"CPU per envelope drained, {who} (ms)",
                    f"{s[f'raw_{key}']:.2f}",
                    f"{s[f'sqlite_{key}']:.2f} SQLite, {s[f'postgresql_{key}']:.2f} PostgreSQL",
                    "",
                    "",
                )
            )
    rows.append(
        (
            f"worker RSS after {args.messages} envelopes (MB)",
            f"{s['worker_rss_start_mb']:.0f} (at start)",
            f"{s['worker_rss_mb']:.0f}",
            "",
            f"<= 100: {'yes' if s['worker_rss_mb'] <= 100 else 'no'}",
        )
    )
    header = ("measure", "baseline", "stackreflex", "ratio (range)", "target")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(len(header))]
    lines = [
        f"baselines: raw dramatiq draining {args.messages} queued no-op messages (same broker, durable queue, "
        f"persistent messages, confirms, {THREADS} threads); raw kombu publish->consume of one persistent "
        f"message on a durable queue. Median of {args.rounds} rounds "
        f"(range in brackets); load average {s['load_average']:.2f} "
        f"({s['load_average_range'][0]:.2f}-{s['load_average_range'][1]:.2f}); {os.cpu_count()} CPUs.",
        "",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in [header, *rows]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker-url", default=os.environ.get("STACKREFLEX_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--messages", type=int, default=10000, help="envelopes queued for each drain")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--sustained-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    setup_logging("text", "WARNING")
    url = normalise_amqp_url(args.broker_url)
    pg_admin = postgres_admin_url()

    rounds = []
    for n in range(args.rounds):
        figures = one_round(url, pg_admin, args)
        rounds.append(figures)
        print(
            f"round {n + 1}: drain raw {figures['raw_drain']:.0f}, SQLite {figures['sqlite_drain']:.0f}, "
            f"PostgreSQL {figures['postgresql_drain']:.0f}/s; latency p50 {figures['kombu_p50_ms']:.2f} / "
            f"{figures['latency_p50_ms']:.2f} ms; at {figures['sustained_rate']:.0f}/s p99 "
            f"{figures['sustained_p99_ms']:.1f} ms; load {figures['load_average']:.2f}",
            file=sys.stderr,
        )
    s = summary(rounds)
    s["worker_rss_start_mb"], s["worker_rss_mb"] = worker_rss(url, args.messages)
    print(json.dumps(s, indent=2) if args.json else table(s, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
