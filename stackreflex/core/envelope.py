"""The envelope: every message on the bus, shaped as a CloudEvents 1.0 structured event.

>>> e = Envelope.new("command.host.evacuate", subject="compute-0", data={"max_parallel": 2})
>>> e.type, e.correlationid == e.id
('command.host.evacuate', True)
"""

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidEnvelope

#: Default ``source`` attribute of envelopes this process creates.
DEFAULT_SOURCE = "stackreflex"

#: A type is dotted words; it becomes the AMQP routing key, so no wildcards. Types are
#: compared case-insensitively: they are normalised to lower case, except Heat's status
#: words, which keep Heat's own spelling (``heat.resource.CREATE_IN_PROGRESS``).
TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"

#: The limits every message is held to before anything else looks at it (the router's are
#: settings: ``envelope_max_bytes``, ``envelope_max_depth``).
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
#: Longest id (any non-empty string, as CloudEvents allows) and longest subject, type,
#: source or actor: what the audit log's columns hold.
MAX_ID, MAX_NAME = 128, 255
#: An envelope's time is after this and at most a day ahead of now: anything else is a
#: clock fault or a forgery, and breaks date arithmetic downstream.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=1)

#: Attributes that are not the envelope's content: how it was signed and how it is followed.
#: Two envelopes with one id and the same content are one envelope, however each was signed.
DELIVERY_ATTRIBUTES = frozenset({"signature", "keyid", "signedat", "notify"})


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """A CloudEvents-shaped event or command, with stackreflex's extensions.

    Extensions: ``correlationid`` is shared by everything caused by one root event,
    ``causationid`` names the envelope that caused this one, ``actor`` is the operator
    who issued a command, ``signature`` is the HMAC of a signed envelope, made with the key
    ``keyid`` at ``signedat`` (:mod:`.signing`), and ``notify`` asks for the notices of
    this envelope's runs on the bus (``envelope.routed``, ``run.progress``,
    ``run.finished``): the CLI's ``--wait`` sets it to follow them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=MAX_ID)
    source: str = Field(DEFAULT_SOURCE, min_length=1, max_length=MAX_NAME)
    type: str = Field(pattern=TYPE_PATTERN, max_length=MAX_NAME)
    subject: str | None = Field(None, max_length=MAX_NAME)
    time: datetime = Field(default_factory=_now)
    datacontenttype: Literal["application/json"] = "application/json"
    data: Any = None
    correlationid: str = Field("", max_length=MAX_ID)
    causationid: str | None = Field(None, max_length=MAX_ID)
    actor: str | None = Field(None, max_length=MAX_NAME)
    signature: str | None = Field(None, max_length=128)
    keyid: str | None = Field(None, max_length=64)
    signedat: datetime | None = None
    notify: bool | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _type_normalised(cls, value: Any) -> Any:
        return normalise_type(value) if isinstance(value, str) else value

    @field_validator("time", "signedat")
    @classmethod
    def _time_is_plausible(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
        if not EARLIEST_TIME <= value <= _now() + LATEST_AHEAD:
            raise ValueError(f"must be between {EARLIEST_TIME:%Y-%m-%d} and a day from now")
        return value

    def model_post_init(self, _context: Any) -> None:
        if not self.correlationid:
            object.__setattr__(self, "correlationid", self.id)

    @classmethod
    def new(
        cls,
        type: str,
        *,
        subject: str | None = None,
        data: Any = None,
        cause: "Envelope | None" = None,
        **attributes: Any,
    ) -> "Envelope":
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

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def content_digest(self) -> str:
        """SHA-256 of what the envelope says (not how it was signed or followed): an id
        seen again with another digest is a conflict, not a redelivery."""
        body = self.model_dump(mode="json", exclude=set(DELIVERY_ATTRIBUTES), exclude_none=True)
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


#: Heat's status words keep their case in a type; every other word is lower-cased.
_HEAT_STATUS = re.compile(r"^[A-Z]+_(IN_PROGRESS|COMPLETE|FAILED)$")


def normalise_type(value: str) -> str:
    """``Command.Host.Evacuate`` is ``command.host.evacuate``: the same type, compared
    case-insensitively, so no spelling slips past a rule written for the other. Heat's
    status words are upper case by Heat's own convention and are kept so."""
    return ".".join(word.upper() if _HEAT_STATUS.match(word.upper()) else word.lower() for word in value.split("."))


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


def parse_envelope(
    body: bytes | str | dict[str, Any], *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> Envelope:
    """Validate a message body as an envelope, or raise :class:`InvalidEnvelope` saying why
    in one line; no other exception leaves the parser, whatever the body holds."""
    try:
        return _parse(body, max_bytes, max_depth)
    except InvalidEnvelope:
        raise
    except Exception as exc:
        raise InvalidEnvelope(f"cannot be parsed: {type(exc).__name__}") from None


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes | str | dict[str, Any], max_bytes: int, max_depth: int) -> Envelope:
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if isinstance(body, (bytes, bytearray)):
        if len(body) > max_bytes:
            raise InvalidEnvelope(f"too large: {len(body)} bytes, over the limit of {max_bytes}")
        if b"\x00" in body:
            raise InvalidEnvelope("contains a NUL byte")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEnvelope(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        try:
            body = json.loads(text, parse_constant=_no_constants)
        except json.JSONDecodeError as exc:
            raise InvalidEnvelope(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise InvalidEnvelope(f"nested deeper than the limit of {max_depth}") from None
        except ValueError as exc:
            raise InvalidEnvelope(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidEnvelope(f"not a JSON object but a JSON {type(body).__name__}")
    candidate_id = body.get("id") if isinstance(body.get("id"), str) and len(body["id"]) <= MAX_ID else None
    problem = _shape_problem(body, max_depth)
    if problem:
        raise InvalidEnvelope(problem, envelope_id=None if "NUL" in problem or "surrogate" in problem else candidate_id)
    if "id" not in body:
        raise InvalidEnvelope(
            "field 'id': Field required (every envelope names itself, so a redelivery is known as one)"
        )
    try:
        return Envelope.model_validate(body)
    except ValidationError as exc:
        raise InvalidEnvelope(describe_validation_error(exc), envelope_id=candidate_id) from None


def _shape_problem(tree: Any, max_depth: int) -> str | None:
    """What makes a parsed body unfit to store or pass on: nesting past the limit, a NUL
    character, or text that is not Unicode (a lone surrogate); walked without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return f"nested deeper than the limit of {max_depth}"
        if isinstance(node, dict):
            for key, value in node.items():
                stack.append((key, depth))
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            if "\x00" in node:
                return "contains a NUL character (\\u0000)"
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return "contains a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
    return None
