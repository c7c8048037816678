"""Redaction of secrets before anything leaves memory (audit rows, logs, CLI output).

Two rules: values under secret-looking keys are replaced, and secret-looking
fragments inside free text are masked (Swift temp-URL signatures, auth tokens,
passwords in URLs or ``key=value`` text, private keys).

>>> redact({"password": "hunter2", "url": "https://s/v1/o?temp_url_sig=abc&temp_url_expires=9"})
{'password': '***', 'url': 'https://s/v1/o?temp_url_sig=***&temp_url_expires=9'}

The names are oslo.utils' (``strutils._SANITIZE_KEYS``, what every OpenStack service masks in
its own logs, TripleO's generated secrets included) and a few more; a name matches at the end
of a longer one, in any case, with or without ``-``/``_`` and with a number after it:

>>> redact({"HeatPassword": "p1", "rabbit_password": "p2", "KeystoneCredential0": "c0",
...         "CephClusterFSID": "f", "X-Auth-Token": "t", "password_expires_at": None, "user": "heat"})
{'HeatPassword': '***', 'rabbit_password': '***', 'KeystoneCredential0': '***', 'CephClusterFSID': '***', \
'X-Auth-Token': '***', 'password_expires_at': None, 'user': 'heat'}
"""

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

#: What replaces a secret.
MASK = "***"

#: The secret names, as regular expressions over the lowercased name *without* its ``-``/``_``.
#: The first line is oslo.utils' ``strutils._SANITIZE_KEYS`` (10.x, TripleO's generated
#: secrets included, e.g. ``cephmanilaclientkey``, ``barbicansimplecryptokek``), where it is not
#: already covered by a shorter name here (``auth_password`` by ``password``, ``chapsecret`` by
#: ``secret``); the rest are the names of Swift, Keystone, EC2/S3 and our own settings.
_NAMES = (
    "password",
    "passwd",
    "pswd",
    "passphrase",
    "adminpass",
    "newpass",
    "secret",
    "secretuuid",
    "token",
    "configdrive",
    "encryptedkey",
    "privatekey",
    "fernetkeys?",
    "sslkey",
    "cephclusterfsid",
    "ceph[a-z]*key",
    "heartbeatkey",
    "cookie",
    "authkey",
    "rndckey",
    "encryptionkey",
    "credentials?",
    "cryptokek",
    "hash(?:path)?(?:suffix|prefix)",
    "migrationsshkey",
    "tempurlsig",
    "tempurlkey",
    "apikey",
    "signingkeys?",
    "secretkey",
    "secretaccesskey",
    "keyring",
    "storagepass",
)

#: Keys whose values are secrets wherever they appear (see :func:`is_secret_key`).
SECRET_KEYS = re.compile(r"^.*(?:" + "|".join(_NAMES) + r")\d*$")

#: The same names as they appear in text (``HeatPassword``, ``X-Auth-Token``, ``temp_url_sig``…),
#: each under a word every match of it contains: a pattern is made of the names whose word is in
#: the text, and text with none of these words (most log lines) is not scanned at all.
_TEXT_NAMES = {
    "pass": r"pass(?:word|wd|phrase)|(?:admin|new|storage)[-_]?pass",
    "pswd": "pswd",
    "secret": r"secret(?:[-_]?uuid|[-_]?(?:access[-_]?)?key)?",
    "token": "token",
    "credential": "credentials?",
    "cookie": "cookie",
    "drive": r"config[-_]?drive",
    "privat": r"private[-_]?key",
    "api": r"api[-_]?key",
    "signing": r"signing[-_]?keys?",
    "encrypt": r"encrypt(?:ion|ed)[-_]?key",
    "fernet": r"fernet[-_]?keys?",
    "ssl": r"ssl[-_]?key",
    "keyring": "keyring",
    "temp": r"temp[-_]?url[-_]?(?:sig|key)",
    "ceph": r"ceph[-_]?cluster[-_]?fsid|ceph[-_]?(?:[a-z]+[-_]?)?key",
    "heartbeat": r"heartbeat[-_]?key",
    "auth": r"auth[-_]?key",
    "rndc": r"rndc[-_]?key",
    "kek": r"crypto[-_]?kek",
    "hash": r"hash[-_]?(?:path[-_]?)?(?:suffix|prefix)",
    "migration": r"migration[-_]?ssh[-_]?key",
}

#: A value after a secret name: quoted (JSON, a Python repr, JSON inside a JSON string; a quote
#: that does not close, in a line cut short, to the end of the line), or up to the next
#: separator. An unquoted value is not one that opens a structure (``"password": {"user": …}``
#: in a Keystone request: the secret is inside it), nor a hash keystoneauth logs in place of a
#: token (``X-Auth-Token: {SHA256}9f2c…``), which is no secret.
_VALUE = (
    r"""(\\"(?:[^"\\]|\\[^"])*\\"|[bu]?"(?:[^"\\]|\\.)*"|[bu]?'(?:[^'\\]|\\.)*'|"""
    r"""[bu]?\\?["'][^\r\n]*|"""
    r"""(?!\{SHA256\})(?![\[{]\s*[\]}"'\[{\s])[^\s"'&,}]+)"""
)


def _mask_value(match: re.Match[str]) -> str:
    """The name and its separator as they were, the value masked inside its quotes."""
    value: str = match.group(2)
    if value.startswith('\\"'):
        return match.group(1) + '\\"' + MASK + '\\"'
    quote = value.lstrip("bu")[:1]
    if quote in ("'", '"'):
        return match.group(1) + value[: value.index(quote) + 1] + MASK + quote
    return match.group(1) + MASK


#: A pattern, what replaces its match, and what the text (lowercased) has when it can match.
_Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], str]


@lru_cache(maxsize=256)
def _name_patterns(words: frozenset[str]) -> list[_Rule]:
    """The patterns of the secret names under ``words``."""
    names = "|".join(_TEXT_NAMES[word] for word in sorted(words))
    return [
        # password=…, "password": "…", 'HeatPassword': '…', X-Subject-Token: …, temp_url_sig=…
        (re.compile(r"((?:" + names + r")\d*\\?[\"']?\s*[:=]\s*)" + _VALUE, re.I), _mask_value, ""),
        # --os-password … on command lines
        (re.compile(r"((?<![\w-])--(?=[a-z])[\w-]*?(?:" + names + r")\d*\s+)" + _VALUE, re.I), _mask_value, "--"),
        # <password>…</password>
        (re.compile(r"(<[\w:-]*?(?:" + names + r")\d*>)[^<]*", re.I), r"\1" + MASK, "<"),
    ]


#: The patterns that do not depend on the names, each with what the text (lowercased) has when it can match.
_TEXT_PATTERNS: list[_Rule] = [
    # PEM private keys, first: masked whole, before the private_key=… rule sees their header
    # (up to a quote when the end is missing: a key cut short in a log line or a JSON string).
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.*?-----END [A-Z ]*PRIVATE KEY-----|[^\"']*)", re.S),
        MASK,
        "private key",
    ),
    # Authorization: Bearer <t>, Basic <b64>... (the scheme stays, the rest of the value goes)
    (
        re.compile(
            r"((?:proxy-)?authorization\\?[\"']?\s*[:=]\s*\\?[\"']?"
            r"(?:(?:basic|bearer|digest|negotiate|token|oauth|hmac|aws4-hmac-sha256)\s+)?)"
            r"(?!\{SHA256\})[^\"'\s][^\"'\r\n]*",
            re.I,
        ),
        r"\1" + MASK,
        "authorization",
    ),
    # user:password@ in URLs
    (re.compile(r"(://[^:/\s@]+:)[^@\s/]+(@)"), r"\1" + MASK + r"\2", "@"),
    # TripleO's KeystoneFernetKeys: {"/etc/keystone/fernet-keys/0": {"content": "…"}}
    (
        re.compile(r"(fernet[-_]keys/\d+\\?[\"']?\s*:\s*\{\s*\\?[\"']content\\?[\"']\s*:\s*)" + _VALUE, re.I),
        _mask_value,
        "content",
    ),
]

#: Text (lowercased) with none of these cannot match a pattern above.
_MAYBE_SECRET = re.compile("|".join(sorted(_TEXT_NAMES, key=len, reverse=True)) + "|://")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """True if a mapping key names a secret (``password``, ``X-Auth-Token``, ``HeatPassword``…).

    >>> [k for k in ("adminPass", "temp_url_sig", "CephManilaClientKey", "RabbitCookie", "secret_uuid",
    ...              "routing_key", "token_expiry", "keystone_password", "encryption_key_id")
    ...  if is_secret_key(k)]
    ['adminPass', 'temp_url_sig', 'CephManilaClientKey', 'RabbitCookie', 'secret_uuid', 'keystone_password']
    """
    return bool(SECRET_KEYS.match(key.lower().replace("-", "").replace("_", "")))


def redact_text(text: str) -> str:
    """Mask secret fragments inside free text.

    keystoneauth's debug lines (the headers it hashes itself stay as they are):

    >>> print(redact_text('REQ: curl -g -i -X POST http://ks:5000/v3/auth/tokens -H "X-Auth-Token: {SHA256}9f2c" '
    ...                   '-d \\'{"auth": {"identity": {"methods": ["password"], "password": '
    ...                   '{"user": {"name": "admin", "password": "s3 cr\\\\"3t"}}}}}\\''))
    REQ: curl -g -i -X POST http://ks:5000/v3/auth/tokens -H "X-Auth-Token: {SHA256}9f2c" -d '{"auth": \
{"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": "***"}}}}}'
    >>> redact_text("RESP: [201] Content-Type: application/json X-Subject-Token: gAAAAABnT0k3 Vary: X-Auth-Token")
    'RESP: [201] Content-Type: application/json X-Subject-Token: *** Vary: X-Auth-Token'

    Swift, EC2 and API keys, TripleO's parameters, Python reprs, command lines:

    >>> redact_text("X-Account-Meta-Temp-URL-Key: k1 api_key=k2 {'signing_key': b'k3'} credential: k4")
    "X-Account-Meta-Temp-URL-Key: *** api_key=*** {'signing_key': b'***'} credential: ***"
    >>> redact_text('{"parameters": {"HeatPassword": "p1", "KeystoneCredential0": "c0", "CephClusterFSID": "f"}}')
    '{"parameters": {"HeatPassword": "***", "KeystoneCredential0": "***", "CephClusterFSID": "***"}}'
    >>> redact_text("openstack --os-password p1 server list; Authorization: Bearer eyJ.x")
    'openstack --os-password *** server list; Authorization: Bearer ***'
    >>> redact_text('{"MigrationSshKey": {"private_key": "-----BEGIN RSA PRIVATE KEY-----\\nMIIEo\\n'
    ...             '-----END RSA PRIVATE KEY-----\\n", "public_key": "ssh-rsa AAAA"}, '
    ...             '"KeystoneFernetKeys": {"/etc/keystone/fernet-keys/0": {"content": "fk0"}}}')
    '{"MigrationSshKey": {"private_key": "***", "public_key": "ssh-rsa AAAA"}, \
"KeystoneFernetKeys": {"/etc/keystone/fernet-keys/0": {"content": "***"}}}'
    """
    lowered = text.lower()
    if not _MAYBE_SECRET.search(lowered):
        return text
    words = frozenset(word for word in _TEXT_NAMES if word in lowered)
    for pattern, replacement, fragment in (
        _TEXT_PATTERNS[:2] + (_name_patterns(words) if words else []) + _TEXT_PATTERNS[2:]
    ):
        if fragment in lowered:
            text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """Return a copy of ``value`` (JSON-like) with every secret masked."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
