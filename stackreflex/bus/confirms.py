"""Publishing batches of messages whose broker confirmations arrive while other work goes on.

A confirm per message costs the router a broker round trip (with its disk flush) per
dispatched run, and waiting for each batch's confirms would hold the next envelope
back. Here a batch is published in one go, and its :class:`Confirmation` settles
later, as the acknowledgements come in on the connection the router drains anyway.
"""

import time
from dataclasses import dataclass, field

from amqp import Message
from kombu.connection import Connection


@dataclass
class Confirmation:
    """The broker's answer for one published batch."""

    unconfirmed: set[int]
    published_at: float = field(default_factory=time.monotonic)
    #: why the broker refused (some of) the batch; empty if it took every message
    refused: list[str] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return not self.unconfirmed


class ConfirmedChannel:
    """A channel of a py-amqp connection in publisher-confirm mode.

    The connection is the caller's: confirmations are processed whenever the caller
    drains it (``connection.drain_events``), alongside its consumers' deliveries.
    """

    def __init__(self, connection: Connection) -> None:
        self.channel = connection.channel()
        self.channel.confirm_select()
        self._next_tag = 1
        self._open: list[Confirmation] = []
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)

    def publish(self, messages: list[tuple[str, bytes]]) -> Confirmation:
        """Publish ``(queue, body)`` pairs as persistent messages to their queues (mandatory:
        a missing queue is a refusal, not a silent drop)."""
        confirmation = Confirmation(set(range(self._next_tag, self._next_tag + len(messages))))
        self._next_tag += len(messages)
        # Open before publishing: py-amqp reads what has arrived before each publish (to
        # notice a blocked connection), so the first confirms can come in during the loop.
        if confirmation.unconfirmed:
            self._open.append(confirmation)
        for queue, body in messages:
            self.channel.basic_publish(Message(body, delivery_mode=2), exchange="", routing_key=queue, mandatory=True)
        return confirmation

    def _settle(self, tag: int, multiple: bool, refusal: str | None = None) -> None:
        for confirmation in self._open:
            before = len(confirmation.unconfirmed)
            if multiple:
                confirmation.unconfirmed = {t for t in confirmation.unconfirmed if t > tag}
            else:
                confirmation.unconfirmed.discard(tag)
            if refusal and len(confirmation.unconfirmed) < before:
                confirmation.refused.append(refusal)
        self._open = [c for c in self._open if not c.settled]

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, "the broker refused the message")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Message) -> None:
        # A return names no delivery tag: every batch still open counts as refused, so
        # its messages are sent again one by one (a run started twice is refused by its
        # claim; a run never started would be lost).
        for confirmation in self._open:
            confirmation.refused.append(f"no queue {routing_key!r} to receive the message")
