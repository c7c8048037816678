"""The envelope: every message on the bus, shaped as a CloudEvents 1.0 structured event.

>>> e = Envelope.new("command.host.evacuate", subject="compute-0", data={"max_parallel": 2})
>>> e.type, e.correlationid == e.id
('command.host.evacuate', True)
"""

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidEnvelope

#: Default ``source`` attribute of envelopes this process creates.
DEFAULT_SOURCE = "stackreflex"

#: A type is dotted words; it becomes the AMQP routing key, so no wildcards.
TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Envelope(BaseModel):
    """A CloudEvents-shaped event or command, with stackreflex's extensions.

    Extensions: ``correlationid`` is shared by everything caused by one root event,
    ``causationid`` names the envelope that caused this one, ``actor`` is the operator
    who issued a command, ``signature`` is the HMAC of a signed command, and ``notify``
    asks for the notices of this envelope's runs on the bus (``envelope.routed``,
    ``run.progress``, ``run.finished``): the CLI's ``--wait`` sets it to follow them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str = Field(DEFAULT_SOURCE, min_length=1)
    type: str = Field(pattern=TYPE_PATTERN)
    subject: str | None = None
    time: datetime = Field(default_factory=_now)
    datacontenttype: Literal["application/json"] = "application/json"
    data: Any = None
    correlationid: str = ""
    causationid: str | None = None
    actor: str | None = None
    signature: str | None = None
    notify: bool | None = None

    @field_validator("id")
    @classmethod
    def _id_is_uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be a UUID") from None

    @field_validator("time")
    @classmethod
    def _time_is_aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(timezone.utc)

    def model_post_init(self, _context) -> None:
        if not self.correlationid:
            object.__setattr__(self, "correlationid", self.id)

    @classmethod
    def new(cls, type: str, *, subject: str | None = None, data: Any = None,
            cause: "Envelope | None" = None, **attributes) -> "Envelope":
        """Create an envelope; with ``cause`` it joins the cause's correlation."""
        if cause is not None:
            attributes.setdefault("correlationid", cause.correlationid)
            attributes.setdefault("causationid", cause.id)
        try:
            return cls(type=type, subject=subject, data=data, **attributes)
        except ValidationError as exc:
            raise InvalidEnvelope(describe_validation_error(exc)) from None

    @property
    def routing_key(self) -> str:
        return self.type

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "envelope"
        if error["type"] == "extra_forbidden":
            parts.append(f"field '{field}': not a known attribute")
        else:
            parts.append(f"field '{field}': {error['msg']}")
    return "; ".join(parts)


def parse_envelope(body: bytes | str | dict) -> Envelope:
    """Validate a message body as an envelope, or raise :class:`InvalidEnvelope` saying why."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEnvelope(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidEnvelope(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(body, dict):
        raise InvalidEnvelope(f"not a JSON object but a JSON {type(body).__name__}")
    candidate_id = body.get("id") if isinstance(body.get("id"), str) else None
    try:
        return Envelope.model_validate(body)
    except ValidationError as exc:
        raise InvalidEnvelope(describe_validation_error(exc), envelope_id=candidate_id) from None
