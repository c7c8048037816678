"""Every error an operator can see, each with a message that says what to do.

Errors raised for operators derive from :class:`StackreflexError`; the CLI prints
them as one line (``error: …``) and exits non-zero instead of showing a traceback.
"""


class StackreflexError(Exception):
    """Base class: an error whose message is meant for an operator."""

    #: the CLI's exit status: 2 bad input or environment, 1 nothing (or not all) ran as asked
    exit_code = 2


class ConfigError(StackreflexError):
    """A setting is missing or malformed."""


class InvalidEnvelope(StackreflexError):
    """A message on the bus is not a valid envelope.

    ``reason`` names the field and the problem, e.g. ``field 'type': Field required``.
    """

    def __init__(self, reason: str, envelope_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.envelope_id = envelope_id


class SignatureError(InvalidEnvelope):
    """A command is unsigned or its signature does not match its content."""


class UnroutableError(StackreflexError):
    """The broker accepted a message that no queue is bound to receive: nothing runs it."""

    exit_code = 1


class BrokerUnavailable(StackreflexError):
    """The message broker cannot be reached or refused the connection."""


class HandlerLoadError(StackreflexError):
    """A handler module or file could not be imported or declares a bad handler."""


class HandlerFailed(StackreflexError):
    """A handler decided the run cannot succeed; it ends ``failed`` without retries."""


class WaitTimedOut(HandlerFailed):
    """A continuation passed its deadline before its condition held."""


class RunNotFound(StackreflexError):
    """No run in the audit log has that id (or id prefix)."""


class DatabaseUnavailable(StackreflexError):
    """The audit database stayed unreachable for longer than a write waits for it."""
