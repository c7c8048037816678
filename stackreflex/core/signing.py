"""HMAC signatures over the canonical form of an envelope: with a key configured, only
signed envelopes act, whatever their type.

The canonical form is the envelope's JSON without ``signature``, with sorted keys and no
whitespace, so any change to any attribute (its signing time and key id among them) breaks
the signature. Keys form a ring (id → key): every key in it verifies, the current one
signs, so a key rotates without downtime (add the new key everywhere, sign with it, then
drop the old one). A signature is good for a window around its signing time; the router
remembers the ids it accepted for at least that long (``audit prune`` keeps them), so a
replay inside the window is a duplicate and one outside it is refused.

>>> signer = Signer({"k1": b"secret"}, "k1")
>>> signed = signer.sign(Envelope.new("command.host.evacuate", subject="compute-0"))
>>> signer.verify(signed), signed.keyid
(None, 'k1')
"""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .envelope import Envelope
from .errors import ConfigError, SignatureError

if TYPE_CHECKING:
    from .settings import Settings

#: Prefix naming the algorithm, so it can change without ambiguity.
SIGNATURE_SCHEME = "hmac-sha256:"

#: The id of a key given alone (``STACKREFLEX_SIGNING_KEY``).
DEFAULT_KEY_ID = "default"

#: How long after its signing a signature is good, and how far ahead of this clock a
#: signing time may be (seconds): the defaults of ``signature_max_age``/``signature_max_skew``.
MAX_AGE, MAX_SKEW = 900.0, 60.0


def canonical_bytes(envelope: Envelope) -> bytes:
    body = envelope.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _digest(envelope: Envelope, key: bytes) -> str:
    return SIGNATURE_SCHEME + hmac.new(key, canonical_bytes(envelope), hashlib.sha256).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Signer:
    """Signs with the current key; verifies with any key of the ring, inside the window."""

    def __init__(self, keys: dict[str, bytes], current: str, *, max_age: float = MAX_AGE, max_skew: float = MAX_SKEW):
        if current not in keys:
            raise ConfigError(f"signing key id {current!r} is not in the key ring ({', '.join(sorted(keys))})")
        self.keys, self.current = keys, current
        self.max_age, self.max_skew = timedelta(seconds=max_age), timedelta(seconds=max_skew)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Signer | None":
        """The signer of ``signing_key`` and ``signing_keys``, or None when neither is set."""
        keys = {kid: secret.get_secret_value().encode() for kid, secret in settings.signing_keys.items()}
        if settings.signing_key is not None:
            keys.setdefault(DEFAULT_KEY_ID, settings.signing_key.get_secret_value().encode())
        if not keys:
            return None
        current = settings.signing_key_id or (DEFAULT_KEY_ID if settings.signing_key is not None else None)
        if current is None:
            if len(keys) > 1:
                raise ConfigError(
                    "the key ring (STACKREFLEX_SIGNING_KEYS) holds several keys: name the one that "
                    "signs with STACKREFLEX_SIGNING_KEY_ID"
                )
            current = next(iter(keys))
        return cls(keys, current, max_age=settings.signature_max_age, max_skew=settings.signature_max_skew)

    @property
    def window(self) -> timedelta:
        """How long an accepted id must be remembered for a replay to be known as one."""
        return self.max_age + self.max_skew

    def sign(self, envelope: Envelope, now: datetime | None = None) -> Envelope:
        """The envelope signed now with the current key (``keyid``, ``signedat``, ``signature``)."""
        stamped = envelope.model_copy(update={"keyid": self.current, "signedat": now or _now(), "signature": None})
        return stamped.model_copy(update={"signature": _digest(stamped, self.keys[self.current])})

    def verify(self, envelope: Envelope, now: datetime | None = None, *, fresh: bool = True) -> None:
        """Raise :class:`SignatureError` unless a key of the ring signed exactly this envelope
        (and, with ``fresh``, inside the window around now)."""
        kind = envelope.type
        if not envelope.signature:
            raise SignatureError(
                f"unsigned {kind}: a signing key is configured, so every envelope must be signed "
                "(publish with a key of this installation's ring)",
                envelope_id=envelope.id,
            )
        key = self.keys.get(envelope.keyid or "")
        if key is None:
            raise SignatureError(
                f"{kind} is signed with key id {envelope.keyid!r}, which is not in this installation's key ring",
                envelope_id=envelope.id,
            )
        if envelope.signedat is None:
            raise SignatureError(f"{kind} is signed without a signing time (signedat)", envelope_id=envelope.id)
        if not hmac.compare_digest(_digest(envelope, key), envelope.signature):
            raise SignatureError(
                f"forged or altered {kind}: its signature does not match its content under key {envelope.keyid!r}",
                envelope_id=envelope.id,
            )
        if not fresh:
            return
        now = now or _now()
        if envelope.signedat < now - self.max_age:
            raise SignatureError(
                f"stale {kind}: signed at {envelope.signedat:%Y-%m-%dT%H:%M:%SZ}, more than "
                f"{self.max_age.total_seconds():.0f}s ago (a replay, or held back too long)",
                envelope_id=envelope.id,
            )
        if envelope.signedat > now + self.max_skew:
            raise SignatureError(
                f"{kind} is signed at {envelope.signedat:%Y-%m-%dT%H:%M:%SZ}, ahead of this "
                f"clock by more than {self.max_skew.total_seconds():.0f}s (check the clocks)",
                envelope_id=envelope.id,
            )
