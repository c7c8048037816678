"""Broker URLs: one URL read the same way by kombu and pika, TLS from the URL, passwords masked.

(TLS is checked as configuration: no TLS listener runs here, so no handshake is tested.)
"""

import ssl

import pika
import pytest
from kombu.utils.url import parse_url

from stackreflex.bus.connections import display_url, kombu_connection, normalise_amqp_url
from stackreflex.bus.dispatch import build_broker
from stackreflex.errors import ConfigError
from stackreflex.settings import Settings


@pytest.mark.parametrize("url, vhost", [
    ("amqp://u:p@h:5672", "/"), ("amqp://u:p@h:5672/", "/"), ("amqp://u:p@h:5672//", "/"),
    ("amqp://u:p@h:5672/%2F", "/"), ("amqp://u:p@h:5672/prod", "prod"), ("amqp://u:p@h/a%2Fb", "a/b"),
])
def test_both_clients_read_the_same_virtual_host(url, vhost):
    normalised = normalise_amqp_url(url)
    assert parse_url(normalised)["virtual_host"] == vhost
    assert pika.URLParameters(normalised).virtual_host == vhost


def test_amqps_urls_configure_tls_for_both_clients(tmp_path):
    settings = Settings(broker_url="amqps://u:p@rabbit.example:5671/")
    connection = kombu_connection(settings)
    assert isinstance(connection.ssl, ssl.SSLContext) and connection.ssl.verify_mode == ssl.CERT_REQUIRED
    broker = build_broker(settings)
    assert broker.parameters.ssl_options is not None and broker.parameters.port == 5671
    assert kombu_connection(Settings(broker_url="amqp://u:p@h/")).ssl is False


@pytest.mark.parametrize("url", ["http://h:5672/", "amqp:///vhost", "rabbit.example"])
def test_bad_broker_urls_are_refused_with_a_reason(url):
    with pytest.raises(ConfigError):
        normalise_amqp_url(url)


def test_display_url_masks_the_password():
    assert display_url(Settings(broker_url="amqp://stack:s3cret@h:5672/")) == "amqp://stack:***@h:5672/"
