"""Publishing a batch of messages and waiting once until the broker confirmed them all.

A confirm per message costs the router a broker round trip (with its disk flush) per
dispatched run; publishing the whole batch first and then collecting the
confirmations costs one, and the broker flushes the batch together.
"""

import socket
import time

from amqp import Message

from ..errors import BrokerUnavailable, UnroutableError

#: How long to wait for the broker to confirm a batch (seconds).
CONFIRM_TIMEOUT = 30.0


class ConfirmedChannel:
    """A channel of a py-amqp connection in publisher-confirm mode.

    The connection is the caller's: waiting for confirmations drains it, so the
    caller's consumers on it keep receiving while a batch is confirmed.
    """

    def __init__(self, connection):
        self.connection = connection
        self.channel = connection.channel()
        self.channel.confirm_select()
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._refused: list[str] = []
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish ``(queue, body)`` pairs persistently to their queues; return once all are confirmed.

        Raises :class:`UnroutableError` when a queue is missing and
        :class:`BrokerUnavailable` when the broker refuses a message or does not answer.
        """
        self._refused.clear()
        for queue, body in messages:
            self.channel.basic_publish(Message(body, delivery_mode=2), exchange="", routing_key=queue,
                                       mandatory=True)
            self._unconfirmed.add(self._next_tag)
            self._next_tag += 1
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(f"the broker did not confirm {len(self._unconfirmed)} messages "
                                        f"within {CONFIRM_TIMEOUT:.0f}s")
            try:
                self.connection.drain_events(timeout=remaining)
            except socket.timeout:
                pass
        if self._refused:
            first = self._refused[0]
            if first.startswith("no queue"):
                raise UnroutableError(f"{first} ({len(self._refused)} of {len(messages)} messages)")
            raise BrokerUnavailable(f"the broker refused {len(self._refused)} of {len(messages)} messages")

    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._refused.append("nack")
        self._settle(tag, multiple)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        # A returned message is also acknowledged, after its return.
        self._refused.append(f"no queue {routing_key!r} to receive a message")

    def close(self) -> None:
        try:
            self.channel.close()
        except Exception:
            pass
