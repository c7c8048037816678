"""Logging: one line per envelope, run and step; text for people or JSON for collectors.

A filter on the handler redacts every record, whoever logged it (our code, dramatiq,
kombu, paramiko), so a secret in an exception message never reaches the log.
"""

import json
import logging
import sys

from .redaction import redact, redact_text

#: Record attributes copied into JSON log lines when present.
CONTEXT_FIELDS = ("envelope_id", "run_id", "handler", "type", "step", "target", "status")


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        line.update({k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None})
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(redact(line))


def setup_logging(fmt: str = "text", level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pika", "amqp", "kombu", "paramiko.transport", "alembic.runtime.migration",
                  "keystoneauth", "openstack", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
