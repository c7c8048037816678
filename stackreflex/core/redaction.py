"""Redaction of secrets before anything leaves memory (audit rows, logs, CLI output).

Two rules: values under secret-looking keys are replaced, and secret-looking
fragments inside free text are masked (Swift temp-URL signatures, auth tokens,
passwords in URLs or ``key=value`` text, private keys).

>>> redact({"password": "hunter2", "url": "https://s/v1/o?temp_url_sig=abc&temp_url_expires=9"})
{'password': '***', 'url': 'https://s/v1/o?temp_url_sig=***&temp_url_expires=9'}
"""

import re
from functools import lru_cache
from typing import Any

#: What replaces a secret.
MASK = "***"

#: Keys whose values are secrets wherever they appear (matched case-insensitively, ``-``/``_`` alike).
#: oslo.utils' ``strutils._SANITIZE_KEYS`` is the reference for OpenStack's names.
SECRET_KEYS = re.compile(
    r"^(.*_)?(password|passwd|passphrase|admin_?pass|new_pass|secret|token|auth_token|x_auth_token|x_subject_token|"
    r"temp_url_sig|temp_url_key|private_key|api_key|signing_key|encryption_key|encrypted_key|fernetkey|sslkey|"
    r"keyring|secret_access_key|credential|credentials)$"
)

#: The same names as they appear in ``key=value`` or ``"key": "value"`` text.
_SECRET_NAMES = (r"password|passwd|passphrase|admin_?pass|new_pass|secret_access_key|secret|token|temp_url_key|"
                 r"private_key|api_key|signing_key|encryption_key|encrypted_key|fernetkey|sslkey|keyring|credentials?")

_TEXT_PATTERNS = [
    # Swift temp URLs: ?temp_url_sig=<hex>
    (re.compile(r"(temp_url_sig=)[^&\s\"'<>]+", re.I), r"\1" + MASK),
    # HTTP headers in text: X-Auth-Token: <t>, X-Subject-Token: <t>
    (re.compile(r"((?:x-auth-token|x-subject-token|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.I), r"\1" + MASK),
    # user:password@ in URLs
    (re.compile(r"(\w+://[^:/\s@]+:)[^@\s/]+(@)"), r"\1" + MASK + r"\2"),
    # password=..., "password": "...", temp_url_key: ..., and the other secret names
    (re.compile(r"((?:" + _SECRET_NAMES + r")[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+", re.I), r"\1" + MASK),
    # PEM private keys
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), MASK),
]


#: Text without any of these cannot match a pattern above: most text is returned as it is, unscanned.
_MAYBE_SECRET = re.compile(r"temp_url_sig|x-auth-token|x-subject-token|authorization|://|pass|secret|token|_key|"
                           r"fernetkey|sslkey|keyring|credential|PRIVATE KEY", re.I)


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True if a mapping key names a secret (``password``, ``X-Auth-Token``, ``temp_url_sig``…)."""
    return bool(SECRET_KEYS.match(key.lower().replace("-", "_")))


def redact_text(text: str) -> str:
    """Mask secret fragments inside free text."""
    if not _MAYBE_SECRET.search(text):
        return text
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """Return a copy of ``value`` (JSON-like) with every secret masked."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and v is not None else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
