"""The dead-letter queues: envelopes the router refused (``<ns>.dlq``) and handler messages
dramatiq gave up on (``<ns>.<handler>.XQ``). Listing peeks and puts everything back;
replay sends a message where it came from, then removes it.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from amqp.exceptions import NotFound
from kombu.entity import Queue
from kombu.transport import virtual

from ..core.envelope import parse_envelope
from ..core.errors import InvalidEnvelope
from ..core.redaction import redact, redact_text
from ..core.settings import Settings
from ..core.signing import Signer
from .backend import REASON_HEADER, ROUTING_KEY_HEADER
from .connections import Delivery, kombu_connection
from .dispatch import AUTH_OPTION
from .publisher import CONTENT_TYPE, topic_exchange
from .queues import dead_letter_queue_name
from .router import raw_body

#: Most messages looked at per queue in one pass.
PEEK_LIMIT = 1000


@dataclass
class DeadLetter:
    """One parked message, described without secrets."""

    key: str  # what to pass to ``dlq replay``
    queue: str
    kind: str  # ``rejected`` (by the router) or ``dead`` (handler retries exhausted)
    reason: str
    type: str | None
    handler: str | None
    envelope_id: str | None
    excerpt: str
    #: the parked message's id: for a rejected one, the digest its record in the audit log holds
    message_id: str | None = None


def describe(queue_name: str, body: bytes, headers: dict[str, Any] | None, message_id: str | None = None) -> DeadLetter:
    """What an operator is shown of a parked message; never fails, whatever it holds."""
    message_id = message_id if isinstance(message_id, str) else None
    try:
        return _describe(queue_name, body, headers if isinstance(headers, dict) else {}, message_id)
    except Exception as exc:
        return DeadLetter(
            key=(message_id or hashlib.sha256(body).hexdigest())[:12],
            queue=queue_name,
            kind="dead" if queue_name.endswith(".XQ") else "rejected",
            reason=f"unreadable parked message ({type(exc).__name__})",
            type=None,
            handler=None,
            envelope_id=None,
            excerpt=_excerpt(body),
            message_id=message_id,
        )


@overload
def _shown(text: str, limit: int = 200) -> str: ...
@overload
def _shown(text: str | None, limit: int = 200) -> str | None: ...
def _shown(text: str | None, limit: int = 200) -> str | None:
    """Text as an operator's terminal is shown it: redacted, every control character escaped."""
    if text is None:
        return None
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in redact_text(text[: 4 * limit]))[:limit]


def _excerpt(body: bytes) -> str:
    return _shown(body[:4096].decode("utf-8", "replace"))


def _text(value: object, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _describe(queue_name: str, body: bytes, headers: dict[str, Any], message_id: str | None) -> DeadLetter:
    if queue_name.endswith(".XQ"):
        decoded = json.loads(body)
        envelope = (decoded.get("args") or [{}])[0]
        envelope = envelope if isinstance(envelope, dict) else {}
        traceback = (_text(decoded.get("options", {}).get("traceback"), 100_000) or "").strip().splitlines()
        return DeadLetter(
            key=_shown(_text(decoded.get("message_id"), 64)) or hashlib.sha256(body).hexdigest()[:12],
            queue=queue_name,
            kind="dead",
            reason=_shown(traceback[-1] if traceback else "retries exhausted"),
            type=_shown(_text(envelope.get("type"))),
            handler=_shown(_text(decoded.get("actor_name"))),
            envelope_id=_shown(_text(envelope.get("id"), 128)),
            excerpt=_shown(json.dumps(redact(envelope))),
        )
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        parsed = None
    parsed = parsed if isinstance(parsed, dict) else {}
    envelope_id = _shown(_text(parsed.get("id"), 128), 128)
    return DeadLetter(
        key=envelope_id or (message_id or hashlib.sha256(body).hexdigest())[:12],
        queue=queue_name,
        kind="rejected",
        reason=_shown(_text(headers.get(REASON_HEADER), 2000) or _death(headers), 2000) or "?",
        type=_shown(_text(parsed.get("type")) or routing_key_of(headers) or None),
        handler=None,
        envelope_id=envelope_id,
        excerpt=_excerpt(body),
        message_id=message_id,
    )


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    return deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


def _death(headers: dict[str, Any]) -> str | None:
    """Why the broker dead-lettered a message (a quorum queue's delivery limit), if it did."""
    death = _first_death(headers)
    if not death:
        return None
    return (
        f"the broker dead-lettered it from {_text(death.get('queue'))} ({_text(death.get('reason'))}): "
        "delivered that often without being acknowledged"
    )


def routing_key_of(headers: dict[str, Any] | None) -> str:
    """The routing key a parked envelope was published with (the broker's record of it, for one it dead-lettered)."""
    headers = headers or {}
    given = headers.get(ROUTING_KEY_HEADER)
    if isinstance(given, str):
        return given
    keys = _first_death(headers).get("routing-keys")
    return keys[0] if isinstance(keys, list) and keys and isinstance(keys[0], str) else ""


def _queue_names(settings: Settings, handlers: list[str]) -> list[str]:
    return [dead_letter_queue_name(settings)] + [f"{settings.namespace}.{h}.XQ" for h in handlers]


def _take_all(channel: virtual.Channel, queue_name: str) -> list[Delivery]:
    """Fetch a queue's messages unacknowledged (none if the queue does not exist)."""
    try:
        Queue(queue_name, channel=channel, no_declare=True).queue_declare(passive=True)
    except NotFound:
        return []
    held: list[Delivery] = []
    while len(held) < PEEK_LIMIT:
        message = Queue(queue_name, channel=channel, no_declare=True).get(no_ack=False)
        if message is None:
            break
        held.append(message)
    return held


def _resigned(signer: Signer | None, body: bytes) -> bytes:
    """A refused envelope sent back: signed anew if a key of the ring signed it and it was
    refused only for being late (held back past the window); any other body as it was, to be
    refused again if it is still not acceptable."""
    if signer is None:
        return body
    try:
        envelope = parse_envelope(body)
        signer.verify(envelope, fresh=False)
    except InvalidEnvelope:
        return body
    return signer.sign(envelope).to_json().encode("utf-8")


def visit(
    settings: Settings,
    handlers: list[str],
    choose: Callable[[DeadLetter], bool],
    before_send: Callable[[DeadLetter], None],
) -> list[DeadLetter]:
    """Look at every parked message; send back the chosen ones, put the rest back.

    Returns every message seen, chosen or not. Listing is ``choose=lambda item: False``.
    """
    seen = []
    exchange = topic_exchange(settings)
    signer = Signer.from_settings(settings)
    with kombu_connection(settings) as connection:
        producer = connection.Producer()
        for queue_name in _queue_names(settings, handlers):
            channel = connection.channel()
            for message in _take_all(channel, queue_name):
                item = describe(queue_name, raw_body(message), message.headers, message.properties.get("message_id"))
                seen.append(item)
                if not choose(item):
                    message.requeue()
                    continue
                before_send(item)
                if item.kind == "dead":
                    decoded = json.loads(raw_body(message))
                    # a fresh set of retries; the router's authentication stays
                    decoded["options"] = {k: v for k, v in decoded.get("options", {}).items() if k == AUTH_OPTION}
                    producer.publish(
                        json.dumps(decoded).encode(),
                        exchange="",
                        routing_key=decoded["queue_name"],
                        delivery_mode=2,
                        content_type="application/json",
                        content_encoding="utf-8",
                    )
                else:
                    producer.publish(
                        _resigned(signer, raw_body(message)),
                        exchange=exchange,
                        declare=[exchange],
                        routing_key=routing_key_of(message.headers),
                        delivery_mode=2,
                        content_type=CONTENT_TYPE,
                        content_encoding="utf-8",
                    )
                message.ack()
            channel.close()
    return seen
