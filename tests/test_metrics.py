"""A service's health endpoint and systemd's notify protocol: real `stackreflex worker` and
`watch` processes on the real RabbitMQ and PostgreSQL (through relays the tests can cut),
scraped over HTTP as Prometheus and Kubernetes would."""

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kombu import Connection, Exchange, Producer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.bus.publisher import Publisher
from stackreflex.cli.common import load_all_handlers
from stackreflex.core import metrics  # noqa: F401 - its families registered
from stackreflex.core.envelope import Envelope
from stackreflex.health import CHECK_TIMEOUT, worker_health
from stackreflex.runtime import Runtime
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .broker_proxy import BrokerProxy
from .conftest import HANDLERS, PG_ADMIN_URL, WorkerProcess, env_for, make_settings, run_cli, wait_for

#: Every family a worker exports, each of which the demo-sized load below makes non-zero.
WORKER_FAMILIES = [
    "stackreflex_envelopes_received",
    "stackreflex_envelopes_rejected",
    "stackreflex_runs_started",
    "stackreflex_runs_finished",
    "stackreflex_run_duration_seconds",
    "stackreflex_step_duration_seconds",
    "stackreflex_runs_waiting",
    "stackreflex_router_batch_size",
    "stackreflex_router_lag_seconds",
    "stackreflex_dead_letters",
    "stackreflex_audit_write_duration_seconds",
    "stackreflex_broker_reconnects",
    "stackreflex_database_reconnects",
]
WATCHER_FAMILIES = [
    "stackreflex_watcher_events_published",
    "stackreflex_watcher_last_poll_timestamp_seconds",
    "stackreflex_audit_write_duration_seconds",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> dict[str, list[tuple[str, dict, float]]]:
    """Our families as Prometheus parses them: name -> [(sample name, labels, value)]."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(body)
        if family.name.startswith("stackreflex_")
    }


def non_zero(families: dict, name: str) -> bool:
    """A sample of ``name`` above zero (a histogram's count, a counter's total, a gauge's value)."""
    return any(value > 0 for sample, _, value in families.get(name, []) if not sample.endswith(("_bucket", "_sum")))


def value(families: dict, name: str, **labels: str) -> float:
    return sum(v for s, sl, v in families.get(name, []) if labels.items() <= sl.items() and not s.endswith("_bucket"))


def publish_raw(broker_url: str, namespace: str, body: bytes, routing_key: str) -> None:
    with Connection(normalise_amqp_url(broker_url)) as connection:
        Producer(connection).publish(
            body, exchange=Exchange(namespace, type="topic", durable=True, passive=True), routing_key=routing_key
        )


def run_counts(db_url: str) -> dict[tuple[str, str], int]:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as c:
            return {(h, s): n for h, s, n in c.execute(text("select handler, status, count(*) from run group by 1, 2"))}
    finally:
        engine.dispose()


class NotifySocket:
    """What systemd listens on: an abstract datagram socket, the messages a service sends it."""

    def __init__(self) -> None:
        self.address = f"@stackreflex-test-{uuid.uuid4().hex[:8]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.received: list[str] = []

    def wait_for(self, message: str, timeout: float = 30) -> list[str]:
        """Every message received until ``message`` (included)."""
        deadline = time.monotonic() + timeout
        while message not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {message} within {timeout}s; received {self.received}")
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass
        return self.received

    def quiet_for(self, seconds: float) -> list[str]:
        """What arrives in the next ``seconds``."""
        got, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        self.received += got
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket():
    listener = NotifySocket()
    yield listener
    listener.close()


@pytest.fixture
def relays(broker_url):
    """Relays to the broker and to PostgreSQL, each of which a test can cut or take down."""
    broker, database = urlsplit(broker_url), urlsplit(PG_ADMIN_URL)
    broker, database = (
        BrokerProxy((broker.hostname, broker.port or 5672)),
        BrokerProxy((database.hostname, database.port or 5432)),
    )
    yield broker, database
    broker.close()
    database.close()


def test_a_worker_exports_every_family_and_its_readiness_follows_the_database(
    workers, namespace, postgres_url, broker_url, relays, tmp_path
):
    broker_relay, database_relay = relays
    # The test's own role, through the relay (a role of another name would own the tables, and
    # the test could not read them); without a password (trust authentication) one is added, which
    # trust ignores: it is there to show it is never shown.
    db = urlsplit(postgres_url)
    password = db.password or "db-secret-1234"
    relayed_db = f"postgresql://{db.username}:{password}@127.0.0.1:{database_relay.port}{db.path}"
    relayed_broker = f"amqp://guest:guest@127.0.0.1:{broker_relay.port}/"
    settings = make_settings(relayed_broker, relayed_db, namespace, database_outage_limit=120)
    port = free_port()
    worker = workers(settings, "--metrics-port", str(port))
    publisher = Publisher(make_settings(broker_url, postgres_url, namespace))
    scrapes = []
    try:
        for n in range(20):
            publisher.publish(Envelope.new("test.record", subject=f"node-{n}", data={"value": n}))
        publisher.publish(Envelope.new("test.fail", subject="broken"))
        publisher.publish(
            Envelope.new(
                "test.wait", subject="slow", data={"path": str(tmp_path / "never"), "every": 5, "deadline": 300}
            )
        )
        publish_raw(broker_url, namespace, b"{not json", "test.record")
        wait_for(
            lambda: (
                (r := run_counts(postgres_url)).get(("note", "succeeded")) == 20
                and r.get(("fail_always", "dead")) == 1
                and r.get(("wait_for_file", "waiting")) == 1
            ),
            timeout=150,
            message="20 notes succeeded, a failing run dead, a run waiting",
        )
        assert get(port, "/healthz") == (200, "alive\n")
        assert get(port, "/readyz") == (200, "ready\n")
        families = wait_for(
            lambda: (
                (f := scrape(port))
                and value(f, "stackreflex_dead_letters", kind="rejected") >= 1
                and value(f, "stackreflex_dead_letters", kind="dead", handler="fail_always") >= 1
                and f
            ),
            message="the dead letters counted",
        )
        scrapes.append(families)
        assert value(families, "stackreflex_runs_finished", handler="note", status="succeeded") == 20
        assert value(families, "stackreflex_runs_finished", handler="fail_always", status="dead") == 1
        assert value(families, "stackreflex_runs_waiting", handler="wait_for_file") == 1
        assert value(families, "stackreflex_envelopes_rejected", type="test.record", reason="malformed") == 1
        assert value(families, "stackreflex_envelopes_received", type="test.record") == 21

        # The broker connection breaks: the router and the handlers' consumers reconnect.
        broker_relay.cut()
        scrapes.append(
            wait_for(
                lambda: (
                    (f := scrape(port))
                    and value(f, "stackreflex_broker_reconnects", connection="router") >= 1
                    and get(port, "/readyz")[0] == 200
                    and f
                ),
                message="the router reconnected",
            )
        )

        # The database goes away: not ready, saying why (and nothing secret); an envelope
        # that comes meanwhile is held by the router, and its lag shows.
        database_relay.go_down()
        _, said = wait_for(lambda: (a := get(port, "/readyz"))[0] == 503 and a, message="/readyz 503")
        assert "audit database unreachable" in said, said
        assert password not in said and "guest:guest" not in said
        assert get(port, "/healthz")[0] == 200, "an outage is waited out: nothing to restart"
        publisher.publish(Envelope.new("test.record", subject="during-the-outage"))
        began = time.monotonic()
        scrapes.append(
            wait_for(
                lambda: (f := scrape(port)) and value(f, "stackreflex_router_lag_seconds") > 0.5 and f,
                message="the router's lag grows",
            )
        )
        started = time.monotonic()
        scrape(port)
        assert time.monotonic() - started < CHECK_TIMEOUT + 2, "a scrape is never held up by the database"
        assert time.monotonic() - began < 30

        database_relay.come_back()
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=60, message="/readyz 200 again")
        wait_for(
            lambda: run_counts(postgres_url).get(("note", "succeeded")) == 21,
            timeout=60,
            message="the envelope held through the outage handled",
        )
        scrapes.append(
            wait_for(
                lambda: (f := scrape(port)) and value(f, "stackreflex_database_reconnects") >= 1 and f,
                message="the database's return counted",
            )
        )
    finally:
        publisher.close()
    missing = [name for name in WORKER_FAMILIES if not any(non_zero(f, name) for f in scrapes)]
    assert missing == []
    assert worker.terminate() == 0


def test_a_worker_tells_systemd_it_is_ready_alive_and_stopping(
    workers, namespace, sqlite_url, broker_url, notify_socket
):
    settings = make_settings(broker_url, sqlite_url, namespace)
    worker = workers(settings, env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "300000"})
    notify_socket.wait_for("READY=1")
    said = notify_socket.quiet_for(0.8)
    assert said.count("WATCHDOG=1") >= 2, said
    assert worker.terminate() == 0
    received = notify_socket.wait_for("STOPPING=1", timeout=5)
    assert received.index("READY=1") < received.index("WATCHDOG=1") < received.index("STOPPING=1")


def test_worker_processes_are_one_service_to_systemd(
    namespace, sqlite_url, broker_url, notify_socket, tmp_path, request
):
    """With --processes 2: ready once both are, the watchdog petted while both are alive."""
    settings = make_settings(broker_url, sqlite_url, namespace)
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"}
    # two processes starting at once on a busy machine take longer than the fixture waits
    supervisor = WorkerProcess(env_for(settings, tmp_path, env), tmp_path / "supervisor.log", "--processes", "2")
    request.addfinalizer(lambda: supervisor.proc.poll() is None and supervisor.kill())
    supervisor.wait_ready(2, timeout=120)
    notify_socket.wait_for("READY=1")
    said = notify_socket.quiet_for(1.0)
    assert said.count("WATCHDOG=1") >= 2 and "READY=1" not in said, said
    children = [
        int(line.split()[-1].split(":")[1])
        for line in supervisor.log_path.read_text().splitlines()
        if "worker ready" in line
    ]
    assert len(children) == 2
    os.kill(children[1], signal.SIGKILL)  # one process dies: systemd must restart the service
    notify_socket.quiet_for(1.0)  # what was on its way, and the dead one's last word going stale
    assert "WATCHDOG=1" not in notify_socket.quiet_for(1.0)
    supervisor.terminate()
    notify_socket.wait_for("STOPPING=1", timeout=5)


def test_a_dead_thread_fails_healthz_by_name_and_stops_the_watchdog(
    namespace, sqlite_url, broker_url, notify_socket, monkeypatch
):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    runtime = Runtime(make_settings(broker_url, sqlite_url, namespace), load_all_handlers([HANDLERS]))
    health = worker_health(runtime)
    port = free_port()
    health.serve("127.0.0.1", port)
    runtime.start()
    health.ready()
    try:
        notify_socket.wait_for("WATCHDOG=1")
        assert get(port, "/healthz") == (200, "alive\n")
        runtime._stop.set()  # the router's loop ends, as if it had died; everything else goes on
        for thread in runtime._threads:
            thread.join(10)
        status, said = get(port, "/healthz")
        assert status == 503 and "stackreflex-router" in said, said
        notify_socket.quiet_for(0.3)  # what was on its way
        assert "WATCHDOG=1" not in notify_socket.quiet_for(1.0), "systemd is let to restart the service"
    finally:
        health.stopping()
        runtime.stop()
    assert "STOPPING=1" in notify_socket.wait_for("STOPPING=1", timeout=5)


def test_watch_serves_its_metrics_and_tells_systemd(
    workers, namespace, sqlite_url, broker_url, notify_socket, tmp_path
):
    scenario = Scenario(deployment_time=0.1, roles=[Role("ComputeDeployedServer", 1, ["127.0.0.21"])])
    oc = Overcloud.start(scenario, state_dir=tmp_path / "hostkeys")
    try:
        settings = make_settings(broker_url, sqlite_url, namespace)
        port = free_port()
        watcher = workers(
            settings,
            "overcloud",
            "--interval",
            "0.3",
            "--from",
            "beginning",
            "--metrics-port",
            str(port),
            command="watch",
            env={**oc.environment(), "NOTIFY_SOCKET": notify_socket.address},
        )
        notify_socket.wait_for("READY=1")
        families = wait_for(
            lambda: (f := scrape(port)) and all(non_zero(f, n) for n in WATCHER_FAMILIES) and f,
            message="the watcher's families",
        )
        assert value(families, "stackreflex_watcher_events_published", stack="overcloud") > 0
        assert get(port, "/healthz") == (200, "alive\n")
        assert get(port, "/readyz") == (200, "ready\n")
        os.killpg(watcher.proc.pid, signal.SIGTERM)
        assert watcher.proc.wait(30) == 0
        notify_socket.wait_for("STOPPING=1", timeout=5)
    finally:
        oc.stop()


def test_a_port_in_use_is_a_clear_error(workers, namespace, sqlite_url, broker_url, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(settings, tmp_path, "worker", "--handlers", HANDLERS, "--metrics-port", str(port))
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr + done.stdout


def test_the_grafana_dashboard_charts_every_family_and_only_those():
    dashboard = json.loads((Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json").read_text())
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bstackreflex_[a-z_]+", expr)}
    exported = {
        sample.name: family.name
        for family in REGISTRY.collect()
        if family.name.startswith("stackreflex_")
        for sample in family.samples
    } | {
        f"{f.name}{suffix}": f.name
        for f in REGISTRY.collect()
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    assert used <= exported.keys(), used - exported.keys()
    assert {exported[name] for name in used} >= {
        f.name for f in REGISTRY.collect() if f.name.startswith("stackreflex_")
    }
    assert all('job=~"$job"' in expr for expr in exprs)
