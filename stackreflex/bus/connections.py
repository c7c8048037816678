"""Broker URLs, two AMQP clients: normalise them once for kombu and once for pika.

kombu reads ``amqp://h:5672//`` as virtual host ``/`` while pika reads it as the empty
virtual host (which RabbitMQ refuses). Both read ``/%2F`` as ``/``, so every URL is
rewritten to name its virtual host explicitly and percent-encoded.

``STACKREFLEX_BROKER_URL`` may name several nodes of one cluster, separated by commas: every
client connects to the first it reaches, in that order, and to the next when its node is lost.
"""

import ssl
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kombu.connection import Connection
from kombu.exceptions import OperationalError

from ..core.errors import BrokerUnavailable, ConfigError
from ..core.redaction import redact_text
from ..core.settings import Settings
from . import memory

#: kombu URL of the embedded (in-process) bus.
EMBEDDED_URL = "memory://"

#: Heartbeat interval of consuming connections (seconds); their drain loops must call
#: ``heartbeat_check()``, since py-amqp sends no heartbeat by itself.
CONSUMER_HEARTBEAT = 30

#: The bounded retry policy for (re)connecting and publishing.
RETRY_POLICY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3}


def normalise_amqp_url(url: str) -> str:
    """Return ``url`` with its virtual host spelled ``/%2F``-style for both clients."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"broker URL must start with amqp:// or amqps://, not {parts.scheme or '(none)'}://")
    if not parts.hostname:
        raise ConfigError("broker URL has no host name")
    path = parts.path
    vhost = "/" if path in ("", "/", "//") else unquote(path[1:])
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def broker_urls(settings: Settings) -> list[str]:
    """The broker's URLs, normalised, in the order they are tried (one per node of a cluster)."""
    secret = settings.broker_url.get_secret_value() if settings.broker_url is not None else ""
    given = [u.strip() for u in secret.split(",") if u.strip()]
    if not given:
        raise ConfigError("STACKREFLEX_BROKER_URL is empty: give one amqp:// URL, or several separated by commas")
    urls = [normalise_amqp_url(u) for u in given]
    nodes = [urlsplit(u) for u in urls]
    if len({n.scheme for n in nodes}) > 1:
        raise ConfigError("the broker URLs mix amqp:// and amqps://: the nodes of one broker take the same")
    if len({n.path for n in nodes}) > 1:
        raise ConfigError("the broker URLs name different virtual hosts: one bus lives on one virtual host")
    return urls


def display_url(settings: Settings) -> str:
    """The broker URL(s) with passwords masked, for messages and logs."""
    if settings.broker_url is None:
        return "embedded (in-memory)"
    return redact_text(settings.broker_url.get_secret_value())


def bus_identity(settings: Settings, owner: str) -> str:
    """Which bus a process's handlers are reachable on: the broker (host and port of each node,
    in any order, and the virtual host) and namespace; an embedded bus is this process's
    (``owner``) alone."""
    if settings.embedded:
        return f"embedded:{owner}"[:255]
    nodes = [urlsplit(u) for u in broker_urls(settings)]
    hosts = ",".join(sorted({f"{n.hostname}:{n.port or 5672}" for n in nodes}))
    return f"{hosts}{nodes[0].path}#{settings.namespace}"[:255]


def _ca_file(settings: Settings) -> str | None:
    """The CA bundle the broker's certificate must chain to; None: the system's."""
    return str(settings.broker_ca_file) if settings.broker_ca_file else None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """pika's TLS: the broker's certificate checked against the CA file (or the system's CAs)
    and its name against the host it is reached by."""
    return ssl.create_default_context(cafile=_ca_file(settings))


def amqp_ssl_options(settings: Settings, host: str | None) -> dict[str, Any]:
    """py-amqp's TLS, the same checks as :func:`ssl_context`.

    py-amqp takes its own options, not a context: handed an ``SSLContext`` it drops it and
    checks the certificate against the system's CAs only, and not the name at all. A
    """
    return {"ca_certs": _ca_file(settings), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": host}


class FailoverConnection(Connection):
    """A kombu connection over several URLs whose TLS checks the name of the node it switches to
    (kombu would keep checking the first node's name, or none)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # kombu: unannotated

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)  # type: ignore[no-untyped-call]  # kombu: unannotated
        if isinstance(self.ssl, dict):
            self.ssl = {**self.ssl, "server_hostname": self.hostname}


def kombu_connection(settings: Settings, *, consumer: bool = False, confirm: bool = True) -> Connection:
    """A kombu connection, with publisher confirms unless ``confirm=False`` (or the
    in-memory transport when embedded).

    Consumers get heartbeats (their loops call ``heartbeat_check()``); publishers, idle
    between messages, get none and are re-established by kombu's retry when stale. With
    several URLs, each (re)connection tries them in order from the first.
    """
    if settings.embedded:
        return Connection(EMBEDDED_URL, transport=memory.Transport)  # woken by each message
    urls = broker_urls(settings)
    tls = amqp_ssl_options(settings, urlsplit(urls[0]).hostname) if urls[0].startswith("amqps://") else False
    return FailoverConnection(
        ";".join(urls),
        failover_strategy="round-robin",  # the next URL, in order, after the one lost
        ssl=tls,
        heartbeat=CONSUMER_HEARTBEAT if consumer else 0,
        transport_options={"confirm_publish": confirm, **RETRY_POLICY},
    )


def server_properties(connection: Connection) -> dict[str, Any] | None:
    """What the broker said of itself when ``connection`` connected (None: the embedded bus)."""
    if connection.transport.driver_type == "memory":
        return None
    connection.ensure_connection(max_retries=RETRY_POLICY["max_retries"])
    return dict(connection.connection.server_properties)


def memory_routed(channel: Any, exchange: str, routing_key: str) -> bool:
    """The in-memory transport drops a message no queue is bound to receive, silently: whether
    its binding table has a queue for ``routing_key``."""
    try:
        return bool(channel.typeof(exchange).lookup(channel.get_table(exchange), exchange, routing_key, None))
    except KeyError:
        return False


def connect(connection: Connection, settings: Settings) -> None:
    """Connect under the bounded retry policy, or raise :class:`BrokerUnavailable` saying why.

    A certificate that fails verification is not retried: it would fail the same way.
    """

    def give_up_on_certificates(exc: Exception, _interval: float) -> None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise exc

    try:
        connection.ensure_connection(errback=give_up_on_certificates, **RETRY_POLICY)
    except OperationalError as exc:
        hint = (
            "; if a private CA signed the broker's certificate, set STACKREFLEX_BROKER_CA_FILE to it"
            if isinstance(exc.__cause__, ssl.SSLCertVerificationError) and settings.broker_ca_file is None
            else ""
        )
        raise BrokerUnavailable(f"cannot reach the broker at {display_url(settings)}: {exc}{hint}") from None


def probe_broker(settings: Settings) -> str:
    """One connection to the broker, for ``doctor``: what it found, or an exception saying why not."""
    if settings.embedded:
        return "embedded (no broker configured)"
    with kombu_connection(settings) as connection:
        connection.ensure_connection(max_retries=len(broker_urls(settings)))
        return f"connected to {connection.hostname}:{connection.port or 5672}"


class Delivery(Protocol):
    """What stackreflex reads of a message kombu delivers (a ``kombu.message.Message``)."""

    #: bytes, or text when py-amqp decoded a body that declares a content encoding
    body: Any
    delivery_info: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]

    def ack(self, multiple: bool = False) -> None: ...

    def requeue(self) -> None: ...


def drain(connection: Connection, timeout: float) -> bool:
    """Wait up to ``timeout`` for messages, keeping the heartbeat alive; True if one came."""
    try:
        connection.drain_events(timeout=timeout)
        received = True
    except TimeoutError:
        received = False
    if connection.heartbeat:
        connection.heartbeat_check()
    return received
