"""Configuring os-collect-config on a node over SSH: idempotent, atomic, verified.

The agent's source carries a credential (the temp URL's signature, the heat collector's
password, the cfn collector's EC2 secret key), so it travels on the command's standard input,
never in a command line, and the file is written 0600.

Its values come from Heat's metadata and end up in a file the agent trusts, so each is checked
on the way in: no control character (a newline would start another line of the ini file, e.g.
a second ``command=``), URLs parsed and written back encoded.
"""

import configparser
import json
import posixpath
import re
import shlex
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import paramiko

from ..core.errors import StackreflexError
from ..core.redaction import redact
from ..core.settings import Settings
from .ssh import CommandFailed, run

#: What each collector needs, in the order the agent's configuration lists it: POLL_TEMP_URL's
#: ``request``, POLL_SERVER_HEAT's ``heat``, POLL_SERVER_CFN's ``cfn``.
COLLECTOR_OPTIONS = {
    "request": ("metadata_url",),
    "heat": ("auth_url", "user_id", "password", "project_id", "stack_id", "resource_name"),
    "cfn": ("metadata_url", "access_key_id", "secret_access_key", "stack_name", "path"),
}
#: What shows, in what the agent fetched, that it fetched this node's own metadata.
IDENTITY = {
    "request": ("metadata_url",),
    "heat": ("stack_id", "resource_name", "user_id"),
    "cfn": ("stack_name", "path", "access_key_id"),
}
#: The options that are URLs: parsed, and written back encoded.
URL_OPTIONS = ("metadata_url", "auth_url")
#: Unicode categories no value may hold: control characters (``\n``, ``\r``, NUL, ESC…) and the
#: line and paragraph separators that some readers also split lines on.
FORBIDDEN_CATEGORIES = ("Cc", "Zl", "Zp")
#: What RFC 3986 lets stand unencoded in a URL's host part, path, and query or fragment.
_NETLOC_SAFE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@\[\]]+")
_PATH_SAFE, _QUERY_SAFE = "/%:@!$&'()*+,;=", "/?%:@!$&'()*+,;="


class UnsafeValue(StackreflexError):
    """A value bound for a node's agent configuration that would change its meaning there (a
    control character that starts another line, a URL that does not parse): refused, never written."""


def checked_value(field: str, value: object) -> str:
    """``value`` as text, if it holds no control character; refuses it naming ``field`` (never
    the value, which may be a credential)."""
    if isinstance(value, (dict, list, tuple, set, bytes)) or value is None:
        raise UnsafeValue(f"{field} is not a text value: refused for the node's agent configuration")
    text = str(value)
    bad = next((ch for ch in text if unicodedata.category(ch) in FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise UnsafeValue(
            f"{field} holds a control character (U+{ord(bad):04X}): refused, it would change "
            "the meaning of the node's agent configuration"
        )
    return text


def checked_url(field: str, value: object) -> str:
    """An http(s) URL with a host, parsed and written back with its path and query encoded (an
    escape already there is kept, a stray ``%`` or a space is encoded); refuses anything else."""
    text = checked_value(field, value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or not _NETLOC_SAFE.fullmatch(parts.netloc):
        raise UnsafeValue(
            f"{field} is not an http(s) URL with a valid host: refused for the node's agent configuration"
        )
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise UnsafeValue(f"{field}: the URL's port is not a number") from None

    def encoded(part: str, safe: str) -> str:
        return quote(re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", part), safe=safe)

    return urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            encoded(parts.path, _PATH_SAFE),
            encoded(parts.query, _QUERY_SAFE),
            encoded(parts.fragment, _QUERY_SAFE),
        )
    )


def checked_option(collector: str, key: str, value: object) -> str:
    field = f"os-collect-config {collector}.{key}"
    return checked_url(field, value) if key in URL_OPTIONS else checked_value(field, value)


@dataclass(frozen=True)
class AgentSource:
    """Where a node's agent polls: the ``request`` collector's temp URL (POLL_TEMP_URL), the
    ``heat`` collector's credentials and resource (POLL_SERVER_HEAT), or the ``cfn`` collector's
    EC2 key pair and resource path (POLL_SERVER_CFN). Each carries a secret (the URL's
    signature, the password, the secret key): keep it in memory, never in state or logs."""

    collector: str
    options: tuple[tuple[str, str], ...]

    @classmethod
    def from_metadata(cls, occ: dict[str, Any]) -> "AgentSource | None":
        """From a deployed server's ``os-collect-config`` metadata; None while it is not there yet.
        Raises :class:`UnsafeValue` for a value that could not be written safely to the node."""
        for collector, needed in COLLECTOR_OPTIONS.items():
            section = occ.get(collector) or {}
            if isinstance(section, dict) and all(section.get(k) for k in needed):
                extra = tuple(k for k in ("region_name",) if section.get(k))
                return cls(collector, tuple((k, checked_option(collector, k, section[k])) for k in (*needed, *extra)))
        return None

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.options)

    @property
    def identity(self) -> dict[str, str]:
        return {k: v for k, v in self.options if k in IDENTITY[self.collector]}

    def describe(self) -> dict[str, Any]:
        """For the audit log and the CLI (redacted again on the way out)."""
        return {"collector": self.collector, **redact(self.settings)}

    def configured_in(self, text: str | None) -> bool:
        if not text:
            return False
        return all(v in text for v in self.identity.values())


@dataclass(frozen=True)
class AgentLayout:
    """Where the agent's configuration lives on the nodes, and how it is restarted."""

    mode: str
    config_path: str
    template_path: str
    local_data_path: str
    cache_dir: str
    service: str
    polling_interval: int
    sudo: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> "AgentLayout":
        return cls(
            settings.agent_layout,
            settings.agent_config_path,
            settings.agent_template_path,
            settings.agent_local_data_path,
            settings.agent_cache_dir,
            settings.agent_service,
            settings.agent_polling_interval,
            settings.ssh_sudo,
        )

    @property
    def target(self) -> str:
        return self.config_path if self.mode == "ini" else self.local_data_path

    def cache_path(self, collector: str) -> str:
        return f"{self.cache_dir.rstrip('/')}/{collector}.json"

    def render(self, source: AgentSource) -> bytes:
        """The configuration file for ``source``; every value is checked again here, whoever
        built the source (one line per option, whatever a value holds)."""
        if source.collector not in COLLECTOR_OPTIONS:
            raise UnsafeValue(f"collector {source.collector!r} is not one os-collect-config polls with")
        options = [(k, checked_option(source.collector, k, v)) for k, v in source.options]
        interval = int(self.polling_interval)
        if self.mode == "ini":
            section = "".join(f"{k}={v}\n" for k, v in options)
            return (
                f"[DEFAULT]\ncollectors={source.collector}\ncommand=os-refresh-config\n"
                f"polling_interval={interval}\n\n[{source.collector}]\n{section}"
            ).encode()
        return (
            json.dumps(
                {
                    "os-collect-config": {
                        "collectors": [source.collector, "local"],
                        "polling_interval": interval,
                        source.collector: dict(options),
                    }
                },
                indent=2,
            ).encode()
            + b"\n"
        )


def agent_state(ssh: paramiko.SSHClient, layout: AgentLayout, *, host: str = "") -> tuple[str | None, bool]:
    """(the configuration file's content, whether the agent is active)."""
    q = shlex.quote
    status, current, _ = run(ssh, f"cat {q(layout.target)}", sudo=layout.sudo, check=False, host=host)
    active = run(ssh, f"systemctl is-active {q(layout.service)}", sudo=layout.sudo, check=False, host=host)[0] == 0
    return (current if status == 0 else None), active


def configure_agent(
    ssh: paramiko.SSHClient, source: AgentSource, layout: AgentLayout, *, host: str = ""
) -> dict[str, str]:
    """Point the node's agent at ``source`` unless it already is and runs; returns what was done."""
    q = shlex.quote
    wanted = layout.render(source).decode()
    current, active = agent_state(ssh, layout, host=host)
    if current == wanted and active:
        return {"action": "unchanged", "path": layout.target}
    if layout.mode == "ini":  # os-apply-config would render its template over our file
        run(ssh, f"rm -f {q(layout.template_path)}", sudo=layout.sudo, host=host)
    else:  # os-collect-config makes its cache directory, not this one
        run(ssh, f"install -d -m 0700 {q(posixpath.dirname(layout.target))}", sudo=layout.sudo, host=host)
    temporary = f"{layout.target}.stackreflex-tmp"
    run(ssh, f"install -m 0600 /dev/stdin {q(temporary)}", stdin=wanted.encode(), sudo=layout.sudo, host=host)
    run(ssh, f"mv -f {q(temporary)} {q(layout.target)}", sudo=layout.sudo, host=host)
    run(ssh, f"systemctl restart {q(layout.service)}", sudo=layout.sudo, host=host)
    _, active = agent_state(ssh, layout, host=host)
    if not active:
        raise CommandFailed(f"node {host}: {layout.service} is not active after its restart")
    return {
        "action": "rewritten" if current is not None else "written",
        "path": layout.target,
        "previous": _previous(current, wanted, source, layout),
    }


def _previous(current: str | None, wanted: str, source: AgentSource, layout: AgentLayout) -> str:
    """What the file held before: ``none``, ``identical`` (the agent was only restarted),
    ``other collector``, or the same collector with another URL or other credentials."""
    if current is None:
        return "none"
    if current == wanted:
        return "identical"
    collector = _collector_in(current, layout)
    if collector != source.collector:
        return "other collector"
    return "other URL" if source.collector == "request" else "other credentials"


def _collector_in(text: str, layout: AgentLayout) -> str | None:
    try:
        if layout.mode == "ini":
            parser = configparser.ConfigParser()
            parser.read_string(text)
            return parser.get("DEFAULT", "collectors", fallback="").split(",")[0].strip() or None
        collector: str | None = (json.loads(text).get("os-collect-config", {}).get("collectors") or [None])[0]
        return collector
    except (configparser.Error, ValueError, AttributeError):
        return None


def agent_fetched(ssh: paramiko.SSHClient, layout: AgentLayout, source: AgentSource, *, host: str = "") -> bool:
    """True once the collector's cache on the node holds this node's own metadata, fetched from ``source``."""
    path = shlex.quote(layout.cache_path(source.collector))
    status, cached, _ = run(ssh, f"cat {path}", sudo=layout.sudo, check=False, host=host)
    if status != 0:
        return False
    try:
        fetched = json.loads(cached)
    except ValueError:
        return False
    section = ((fetched.get("os-collect-config") if isinstance(fetched, dict) else None) or {}).get(source.collector)
    return isinstance(section, dict) and all(section.get(k) == v for k, v in source.identity.items())
