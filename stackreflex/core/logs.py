"""Logging: one line per envelope, run and step; text for people or JSON for collectors.

Redaction is a property of the log records, not of one handler: :func:`install_record_redaction`
(called when ``stackreflex`` is imported) wraps the log record factory, so every record of our
loggers and of the libraries that log our clouds' secrets (keystoneauth's request bodies,
openstacksdk, paramiko, kombu, dramatiq…) is redacted when it is created, whatever handlers
the application configured (``logging.basicConfig``, its own, some added later). The filter of
:func:`setup_logging`'s handler redacts the other records too (the application's own), so a
secret in an exception message never reaches our log.

Why the factory: a :class:`logging.Filter` on a logger sees only the records logged on that very
logger, not those its children (``keystoneauth.session``, ``openstack.compute``…) propagate to
it; a filter on handlers misses the handlers added later by someone else; a custom logger class
misses the loggers created before us. The factory makes every record, once, before any handler
sees it, and it is the hook the standard library offers for this (chained, not replaced).
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from .redaction import MASK, redact, redact_text

#: Record attributes copied into JSON log lines when present.
CONTEXT_FIELDS = ("envelope_id", "run_id", "handler", "type", "step", "target", "status")

#: The loggers (and all their children) whose records are redacted wherever they go.
REDACTED_LOGGERS = frozenset(
    {
        "stackreflex",
        "keystoneauth",
        "keystoneauth1",
        "openstack",
        "paramiko",
        "urllib3",
        "dramatiq",
        "kombu",
        "amqp",
        # what logs the same HTTP requests and commands when used beside us
        "requests",
        "keystoneclient",
        "heatclient",
        "novaclient",
        "swiftclient",
        "glanceclient",
        "osc_lib",
        "openstackclient",
    }
)

#: Set on a record once redacted, so that it is not redacted twice (see :class:`RedactingFilter`).
_REDACTED = "_stackreflex_redacted"

_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: its message is formatted once and masked (``msg`` holds it,
    ``args`` is empty), its exception and stack are formatted and masked into ``exc_text`` and
    ``stack_info``; ``exc_info`` is dropped so that no handler formats the raw exception again."""
    try:
        try:
            record.msg = redact_text(record.getMessage())
            record.args = ()
        except Exception:
            # msg % args fails: the handler will say so (logging.Handler.handleError prints the
            # message and its arguments), with the message masked and the arguments not shown
            # (alone, an argument does not say whether it is a secret).
            args = record.args
            record.msg = redact_text(str(record.msg))
            record.args = (
                dict.fromkeys(args, MASK)
                if isinstance(args, dict)
                else tuple(MASK for _ in (args if isinstance(args, tuple) else (args,)))
            )
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
    except Exception as exc:  # a record that cannot be redacted is not shown, and logging goes on
        record.msg, record.args = f"<log record not shown: redaction failed with {type(exc).__name__}>", ()
        record.exc_info = record.exc_text = record.stack_info = None
    setattr(record, _REDACTED, True)
    return record


def install_record_redaction() -> None:
    """Wrap the log record factory (once: again is a no-op) so that the records of
    :data:`REDACTED_LOGGERS` and their children are redacted as they are made."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, _REDACTED, False):
        return
    roots = REDACTED_LOGGERS

    def redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = record.name  # None in logging.makeLogRecord, which fills the record afterwards
        if isinstance(name, str) and name.partition(".")[0] in roots and not getattr(record, _REDACTED, False):
            redact_record(record)
        return record

    setattr(redacting_record_factory, _REDACTED, True)
    logging.setLogRecordFactory(redacting_record_factory)


class RedactingFilter(logging.Filter):
    """Redacts every record through the handler it is on (records the factory has already
    redacted are left as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, _REDACTED, False):
            redact_record(record)
        return True


def utc_time(record: logging.LogRecord) -> str:
    """``2026-12-02T18:33:23.519Z``: UTC, milliseconds, the zone said (as the audit log stores times)."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """One line per record for people, its time as :func:`utc_time` gives it."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, _REDACTED, False):
            redact_record(record)
        line = {
            "time": utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # the context fields come from ``extra=``, set on the record after it is made: redacted here
        line.update(redact({k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}))
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line)


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    install_record_redaction()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pika", "amqp", "kombu", "paramiko.transport", "alembic", "keystoneauth", "openstack", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
