"""Which type the durable queues are (quorum or classic), and the arguments each is declared with.

Quorum queues are replicated across a cluster's nodes: a node lost loses no message. Each
queue keeps today's semantics on either type:

* the router's and the unrouted queue take ``x-delivery-limit``: a message delivered that often
  without being acknowledged (a router crashing on it, every time) is dead-lettered into
  ``<ns>.dlq``; a handler queue's go to its ``.XQ``, as dramatiq's refusals already do;
* the delay queues (``.DQ``) hold a message unacknowledged until its time comes, and it goes
  back each time its worker stops: no delivery limit there, as none in the ``.dlq`` and
  ``.XQ`` (a peek at the dead letters puts them back, and that counts as a delivery);
* dead-lettering is ``at-least-once`` (RabbitMQ 3.10; it needs ``x-overflow: reject-publish``,
  which without a length limit refuses nothing): a message is only let go of once its
  dead-letter queue confirmed it. The default, at-most-once, may drop it on the way;
* ``.XQ`` keeps dramatiq's message TTL (quorum queues have it since 3.10).

Nothing stackreflex declares uses priorities or per-message TTLs. A classic queue is declared
exactly as before quorum queues were supported, so an installation that keeps them sees no change.
"""

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from amqp.exceptions import PreconditionFailed
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from kombu.connection import Connection
from kombu.entity import Queue

from ..core.errors import ConfigError
from ..core.settings import Settings

QueueType = Literal["quorum", "classic"]

#: Deliveries a message of the router's or a handler's queue may have (each lost consumer, a
#: broker node lost among them, counts one) before it is dead-lettered instead.
DELIVERY_LIMIT = 20

#: The oldest RabbitMQ whose quorum queues do what stackreflex needs (at-least-once
#: dead-lettering and message TTL arrived in 3.10).
QUORUM_SINCE = (3, 10)

#: What a queue of each type is: the roles a queue plays.
Role = Literal["intake", "handler", "delay", "dead", "parking"]


def broker_version(server_properties: Mapping[str, Any]) -> tuple[str, tuple[int, ...]]:
    """The broker's product and version (from the connection's ``server_properties``)."""

    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    product, version = text(server_properties.get("product")), text(server_properties.get("version"))
    return product, tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def resolve(settings: Settings, server_properties: Mapping[str, Any] | None) -> QueueType:
    """The queue type to declare on the broker that sent ``server_properties`` (None: embedded)."""
    if server_properties is None or settings.queue_type == "classic":
        return "classic"
    product, version = broker_version(server_properties)
    supported = product == "RabbitMQ" and version >= QUORUM_SINCE
    if settings.queue_type == "auto":
        return "quorum" if supported else "classic"
    if not supported:
        shown = ".".join(map(str, version)) or "unknown version"
        raise ConfigError(
            f"STACKREFLEX_QUEUE_TYPE=quorum, but the broker is {product or 'unknown'} {shown}: stackreflex's "
            "quorum queues need RabbitMQ 3.10 or later (at-least-once dead-lettering): upgrade the broker, "
            "or set STACKREFLEX_QUEUE_TYPE=classic (or auto)"
        )
    return "quorum"


def arguments(queue_type: QueueType, role: Role, *, dead_letters_to: str | None = None) -> dict[str, Any]:
    """The ``x-`` arguments of a queue with ``role``, dead-lettering (if it does) into ``dead_letters_to``."""
    classic: dict[str, Any] = {}
    if role in ("handler", "delay"):  # dramatiq's own
        classic = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letters_to}
    elif role == "dead":
        classic = {"x-message-ttl": DEAD_MESSAGE_TTL}
    if queue_type == "classic":
        return classic
    quorum = {**classic, "x-queue-type": "quorum"}
    if role in ("intake", "handler"):
        quorum["x-delivery-limit"] = DELIVERY_LIMIT
    if role == "intake":
        quorum.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letters_to})
    if "x-dead-letter-exchange" in quorum:
        quorum.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
    return quorum


def other(queue_type: QueueType) -> QueueType:
    return "classic" if queue_type == "quorum" else "quorum"


def is_mismatch(reply_code: int | None, reply_text: str) -> bool:
    """Whether the broker refused a declaration because the queue exists with other arguments."""
    return reply_code == 406 and "inequivalent arg" in reply_text


def mismatch_error(
    settings: Settings, name: str, wanted: QueueType, reply_text: str, is_of_type: Callable[[QueueType], bool]
) -> ConfigError:
    """What to tell an operator when ``name`` exists with arguments other than ``wanted``'s.

    ``is_of_type(t)`` declares the queue as stackreflex would with type ``t`` (on a channel of
    its own) and says whether the broker accepted it: how its current type is learnt without
    the management plugin (the broker names the first argument that differs, often not the type).
    """
    current = other(wanted)
    try:
        known = is_of_type(current)
    except Exception:
        known = False
    if not known:
        return ConfigError(
            f"queue {name} exists with other arguments than stackreflex declares ({reply_text}): with every "
            f"stackreflex process stopped and the queue drained, delete it (rabbitmqctl delete_queue {name}) "
            "and start them again"
        )
    keep = f"set STACKREFLEX_QUEUE_TYPE={current} to keep using it"
    return ConfigError(
        f"queue {name} is a {current} queue, and this installation declares {wanted} queues "
        f"(STACKREFLEX_QUEUE_TYPE={settings.queue_type}): {keep}, or move it to {wanted}: stop what "
        f"publishes, let the workers empty it (rabbitmqctl list_queues name messages; dead letters: replay "
        f"them), stop every stackreflex process, delete it (rabbitmqctl delete_queue {name}) and start them again"
    )


def router_queue_name(settings: Settings) -> str:
    return f"{settings.namespace}.router"


def unrouted_queue_name(settings: Settings) -> str:
    return f"{settings.namespace}.unrouted"


def dead_letter_queue_name(settings: Settings) -> str:
    return f"{settings.namespace}.dlq"


def declare(
    connection: Connection,
    queue: Queue,
    settings: Settings,
    queue_type: QueueType,
    role: Role,
    dead_letters_to: str | None = None,
) -> None:
    """Declare ``queue`` (and its bindings) on a channel of its own; one that exists with the
    other type is a :class:`ConfigError` saying what to do."""
    channel = connection.channel()
    try:
        queue(channel).declare()
    except PreconditionFailed as exc:
        if not is_mismatch(exc.reply_code, exc.reply_text or ""):
            raise

        def is_of_type(candidate: QueueType) -> bool:
            probe = connection.channel()
            try:
                probe.queue_declare(
                    queue.name,
                    durable=True,
                    auto_delete=False,
                    arguments=arguments(candidate, role, dead_letters_to=dead_letters_to) or None,
                )
                return True
            except PreconditionFailed:
                return False
            finally:
                _close(probe)

        raise mismatch_error(settings, queue.name, queue_type, exc.reply_text, is_of_type) from None
    finally:
        _close(channel)


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker closed already
        pass


def intake_arguments(settings: Settings, queue_type: QueueType) -> dict[str, Any] | None:
    """The router's and the unrouted queue's arguments (None: none, a classic queue's as ever)."""
    return arguments(queue_type, "intake", dead_letters_to=dead_letter_queue_name(settings)) or None
