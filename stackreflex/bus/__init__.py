"""The event bus: the publisher, the router's consuming loop, dramatiq dispatch, dead letters and
following runs, on one of two backends chosen by settings alone: RabbitMQ (a broker URL) or the
embedded in-memory bus of one process (none). This package is the only one that knows AMQP,
and the only one that asks which backend it is on.
"""

from kombu.exceptions import OperationalError

from ..core.errors import ConfigError
from ..core.settings import Settings

#: What a broker that cannot be reached raises from a client call, for a command to report.
BROKER_TROUBLE = (OperationalError,)


def in_process(settings: Settings) -> bool:
    """The embedded bus: it lives in this process only, so a command that publishes must also
    serve the handlers (and follow their runs) itself."""
    return settings.embedded


def require_broker(settings: Settings, what: str, instead: str) -> None:
    """Refuse what only a shared broker can do: ``what`` needs it, ``instead`` says what works without."""
    if settings.embedded:
        raise ConfigError(
            f"{what}, and none is configured: set STACKREFLEX_BROKER_URL "
            f"(e.g. amqp://USER@rabbit.example:5672/); {instead}"
        )
