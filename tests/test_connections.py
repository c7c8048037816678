"""Broker connections: one URL read the same way by kombu and pika, TLS from the URL with the
broker's certificate and name verified, connections that break re-established, passwords
masked.

The broker here has no TLS listener and never drops a connection by itself: a relay in front
of it (``broker_proxy``) terminates TLS with a certificate from a private CA, and cuts
connections on demand.
"""

import json
import ssl
import time

import pika
import pytest
from kombu import Connection, Queue
from kombu.utils.url import parse_url

from stackreflex.bus.connections import display_url, kombu_connection, normalise_amqp_url
from stackreflex.bus.dispatch import build_broker
from stackreflex.bus.publisher import Publisher, topic_exchange
from stackreflex.core.envelope import Envelope
from stackreflex.core.errors import BrokerUnavailable, ConfigError
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs

from .broker_proxy import BrokerProxy, make_certificates
from .conftest import make_settings, run_cli


@pytest.mark.parametrize(
    "url, vhost",
    [
        ("amqp://u:p@h:5672", "/"),
        ("amqp://u:p@h:5672/", "/"),
        ("amqp://u:p@h:5672//", "/"),
        ("amqp://u:p@h:5672/%2F", "/"),
        ("amqp://u:p@h:5672/prod", "prod"),
        ("amqp://u:p@h/a%2Fb", "a/b"),
    ],
)
def test_both_clients_read_the_same_virtual_host(url, vhost):
    normalised = normalise_amqp_url(url)
    assert parse_url(normalised)["virtual_host"] == vhost
    assert pika.URLParameters(normalised).virtual_host == vhost


def test_amqps_urls_configure_tls_for_both_clients(tmp_path):
    settings = Settings(broker_url="amqps://u:p@rabbit.example:5671/")
    connection = kombu_connection(settings)
    assert connection.ssl == {"ca_certs": None, "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "rabbit.example"}
    broker = build_broker(settings)
    assert broker.parameters.ssl_options is not None and broker.parameters.port == 5671
    assert kombu_connection(Settings(broker_url="amqp://u:p@h/")).ssl is False


@pytest.mark.parametrize("url", ["http://h:5672/", "amqp:///vhost", "rabbit.example"])
def test_bad_broker_urls_are_refused_with_a_reason(url):
    with pytest.raises(ConfigError):
        normalise_amqp_url(url)


def test_display_url_masks_the_password():
    assert display_url(Settings(broker_url="amqp://stack:s3cret@h:5672/")) == "amqp://stack:***@h:5672/"


def _upstream(broker_url: str) -> tuple[str, int]:
    parts = parse_url(normalise_amqp_url(broker_url))
    return parts["hostname"], parts["port"] or 5672


def test_amqps_verifies_the_brokers_certificate_against_the_ca_file_and_its_name(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    """A worker and the CLI over amqps://, kombu's side and pika's: a command runs end to end.
    Without the private CA, or reached by a name its certificate does not carry, the broker
    is refused with the reason in one line."""
    ca_file, server_tls = make_certificates(tmp_path, hostname="localhost")
    proxy = BrokerProxy(_upstream(broker_url), tls=server_tls)
    try:
        settings = make_settings(f"amqps://guest:guest@localhost:{proxy.port}/", sqlite_url, namespace)
        with_ca = {"STACKREFLEX_BROKER_CA_FILE": str(ca_file)}
        workers(settings, env=with_ca)
        done = run_cli(
            settings, tmp_path, "publish", "test.record", "-s", "over-tls", "--wait", "--timeout", "30", env=with_ca
        )
        assert done.returncode == 0, done.stderr + done.stdout
        [run] = list_runs(AuditLog.open(sqlite_url), RunFilter(subject="over-tls"))
        assert run["status"] == "succeeded"

        unknown_ca = run_cli(settings, tmp_path, "publish", "test.record", "-s", "no-ca", timeout=90)
        by_ip = run_cli(
            make_settings(f"amqps://guest:guest@127.0.0.1:{proxy.port}/", sqlite_url, namespace),
            tmp_path,
            "publish",
            "test.record",
            "-s",
            "by-ip",
            env=with_ca,
            timeout=90,
        )
        for refused, reason in ((unknown_ca, "certificate verify failed"), (by_ip, "mismatch")):
            assert refused.returncode == 2, refused.stdout
            assert refused.stderr.count("\n") == 1 and reason in refused.stderr, refused.stderr
            assert "guest:guest" not in refused.stderr
        assert "set STACKREFLEX_BROKER_CA_FILE" in unknown_ca.stderr
        assert len(list_runs(AuditLog.open(sqlite_url), RunFilter())) == 1
    finally:
        proxy.close()


def test_a_publisher_whose_connection_broke_reconnects_and_an_unreachable_broker_is_a_clear_error(
    broker_url, namespace
):
    proxy = BrokerProxy(_upstream(broker_url))
    exchange = topic_exchange(Settings(namespace=namespace))
    inbox = Queue(f"{namespace}.inbox", exchange, routing_key="test.#", exclusive=True, auto_delete=True)
    publisher = Publisher(Settings(broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/", namespace=namespace))
    try:
        with Connection(normalise_amqp_url(broker_url)) as c:
            channel = c.channel()
            inbox(channel).declare()
            sent = [Envelope.new("test.record", subject=f"n{i}") for i in range(3)]
            publisher.publish(sent[0])
            proxy.cut()
            publisher.publish(sent[1])  # on a new connection: kombu's bounded retry re-established it
            proxy.cut()
            publisher.notify(sent[2])
            time.sleep(0.5)  # the notice is not confirmed
            received = []
            while (message := inbox(channel).get(no_ack=True)) is not None:
                received.append(json.loads(message.body)["id"])
            assert received == [e.id for e in sent]

            proxy.close()
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable) as refused:
                publisher.publish(Envelope.new("test.record"))
            assert time.monotonic() - started < 30  # the retry policy is bounded
            assert f"127.0.0.1:{proxy.port}" in str(refused.value) and "guest:guest" not in str(refused.value)
    finally:
        publisher.close()
