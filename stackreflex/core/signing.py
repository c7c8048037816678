"""HMAC signatures over the canonical form of an envelope, for operator commands.

The canonical form is the envelope's JSON without ``signature``, with sorted keys
and no whitespace, so any change to any attribute breaks the signature.
"""

import hashlib
import hmac
import json

from .errors import SignatureError
from .envelope import Envelope

#: Prefix naming the algorithm, so it can change without ambiguity.
SIGNATURE_SCHEME = "hmac-sha256:"

#: Envelope types that must be signed when a signing key is configured.
SIGNED_TYPE_PREFIX = "command."


def canonical_bytes(envelope: Envelope) -> bytes:
    body = envelope.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _digest(envelope: Envelope, key: str) -> str:
    return hmac.new(key.encode(), canonical_bytes(envelope), hashlib.sha256).hexdigest()


def sign(envelope: Envelope, key: str) -> Envelope:
    """Return the envelope with its ``signature`` set."""
    return envelope.model_copy(update={"signature": SIGNATURE_SCHEME + _digest(envelope, key)})


def needs_signature(envelope: Envelope) -> bool:
    return envelope.type.startswith(SIGNED_TYPE_PREFIX)


def verify(envelope: Envelope, key: str) -> None:
    """Raise :class:`SignatureError` unless the envelope carries a valid signature."""
    if not envelope.signature:
        raise SignatureError(f"unsigned command {envelope.type}: a signing key is configured, "
                             "so commands must be signed (publish with the same STACKREFLEX_SIGNING_KEY)",
                             envelope_id=envelope.id)
    expected = SIGNATURE_SCHEME + _digest(envelope, key)
    if not hmac.compare_digest(expected, envelope.signature):
        raise SignatureError(f"forged or altered command {envelope.type}: signature does not match "
                             "its content under the configured signing key", envelope_id=envelope.id)
