"""What a health check asks the broker: is it answering, and how deep are the dead-letter queues.

One connection, kept between checks (a readiness probe every few seconds must not open and
close a connection each time: the broker logs both), made again when it broke. Checks run
one at a time; callers bound how long they wait for one (see :mod:`stackreflex.health`).
"""

import threading
from typing import Any

from amqp.exceptions import NotFound

from ..core.redaction import redact_text
from ..core.settings import Settings
from .connections import display_url, kombu_connection
from .queues import dead_letter_queue_name

#: How long connecting to the broker may take for a check (seconds).
CONNECT_TIMEOUT = 2.0


class BrokerProbe:
    """Answers health checks about the broker of ``settings``."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._connection: Any = None  # a kombu Connection (untyped)
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why the broker is not usable now (no password in it), or None if it answers."""
        with self._lock:
            for kept in (self._connection is not None, False):
                try:
                    self._connected().channel().close()  # a round trip: it answers
                    return None
                except Exception as exc:
                    self._drop()
                    if not kept:  # a kept connection may have broken since: one fresh try
                        return f"broker unreachable at {display_url(self.settings)}: {redact_text(str(exc))}"
        return None

    def dead_letters(self, handlers: list[str]) -> dict[tuple[str, str], int]:
        """Messages parked, by (kind, handler): ``("rejected", "")`` for the router's queue,
        ``("dead", handler)`` for each handler's; a queue not declared yet holds none."""
        queues = {("rejected", ""): dead_letter_queue_name(self.settings)} | {
            ("dead", h): f"{self.settings.namespace}.{h}.XQ" for h in handlers
        }
        depths = {}
        with self._lock:
            try:
                connection = self._connected()
                channel = connection.channel()
                for key, name in queues.items():
                    try:
                        depths[key] = channel.queue_declare(name, passive=True).message_count
                    except NotFound:  # the broker closed the channel
                        depths[key] = 0
                        channel = connection.channel()
                channel.close()
            except Exception:
                self._drop()
                raise
        return depths

    def _connected(self) -> Any:
        if self._connection is None:
            connection: Any = kombu_connection(self.settings, confirm=False)
            connection.connect_timeout = CONNECT_TIMEOUT
            connection.transport_options.update(read_timeout=CONNECT_TIMEOUT, write_timeout=CONNECT_TIMEOUT)
            connection.connect()  # one try: a check says what it finds, it does not wait it out
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:
                pass
            self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()
