"""Configuring os-collect-config on a node over SSH: idempotent, atomic, verified.

The agent's source carries a credential (the temp URL's signature, the heat collector's
password, the cfn collector's EC2 secret key), so it travels on the command's standard input,
never in a command line, and the file is written 0600.
"""

import configparser
import json
import posixpath
import shlex
from dataclasses import dataclass

import paramiko

from ..core.redaction import redact
from ..core.settings import Settings
from .ssh import CommandFailed, run

#: What each collector needs, in the order the agent's configuration lists it: POLL_TEMP_URL's
#: ``request``, POLL_SERVER_HEAT's ``heat``, POLL_SERVER_CFN's ``cfn``.
COLLECTOR_OPTIONS = {"request": ("metadata_url",),
                     "heat": ("auth_url", "user_id", "password", "project_id", "stack_id", "resource_name"),
                     "cfn": ("metadata_url", "access_key_id", "secret_access_key", "stack_name", "path")}
#: What shows, in what the agent fetched, that it fetched this node's own metadata.
IDENTITY = {"request": ("metadata_url",), "heat": ("stack_id", "resource_name", "user_id"),
            "cfn": ("stack_name", "path", "access_key_id")}


@dataclass(frozen=True)
class AgentSource:
    """Where a node's agent polls: the ``request`` collector's temp URL (POLL_TEMP_URL), the
    ``heat`` collector's credentials and resource (POLL_SERVER_HEAT), or the ``cfn`` collector's
    EC2 key pair and resource path (POLL_SERVER_CFN). Each carries a secret (the URL's
    signature, the password, the secret key): keep it in memory, never in state or logs."""

    collector: str
    options: tuple[tuple[str, str], ...]

    @classmethod
    def from_metadata(cls, occ: dict) -> "AgentSource | None":
        """From a deployed server's ``os-collect-config`` metadata; None while it is not there yet."""
        for collector, needed in COLLECTOR_OPTIONS.items():
            section = occ.get(collector) or {}
            if all(section.get(k) for k in needed):
                extra = tuple(k for k in ("region_name",) if section.get(k))
                return cls(collector, tuple((k, str(section[k])) for k in (*needed, *extra)))
        return None

    @property
    def settings(self) -> dict:
        return dict(self.options)

    @property
    def identity(self) -> dict:
        return {k: v for k, v in self.options if k in IDENTITY[self.collector]}

    def describe(self) -> dict:
        """For the audit log and the CLI (redacted again on the way out)."""
        return {"collector": self.collector, **redact(self.settings)}

    def configured_in(self, text: str | None) -> bool:
        return bool(text) and all(v in text for v in self.identity.values())


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
        return cls(settings.agent_layout, settings.agent_config_path, settings.agent_template_path,
                   settings.agent_local_data_path, settings.agent_cache_dir, settings.agent_service,
                   settings.agent_polling_interval, settings.ssh_sudo)

    @property
    def target(self) -> str:
        return self.config_path if self.mode == "ini" else self.local_data_path

    def cache_path(self, collector: str) -> str:
        return f"{self.cache_dir.rstrip('/')}/{collector}.json"

    def render(self, source: AgentSource) -> bytes:
        if self.mode == "ini":
            section = "".join(f"{k}={v}\n" for k, v in source.options)
            return (f"[DEFAULT]\ncollectors={source.collector}\ncommand=os-refresh-config\n"
                    f"polling_interval={self.polling_interval}\n\n[{source.collector}]\n{section}").encode()
        return json.dumps({"os-collect-config": {"collectors": [source.collector, "local"],
                                                 "polling_interval": self.polling_interval,
                                                 source.collector: source.settings}}, indent=2).encode() + b"\n"


def agent_state(ssh: paramiko.SSHClient, layout: AgentLayout, *, host: str = "") -> tuple[str | None, bool]:
    """(the configuration file's content, whether the agent is active)."""
    q = shlex.quote
    status, current, _ = run(ssh, f"cat {q(layout.target)}", sudo=layout.sudo, check=False, host=host)
    active = run(ssh, f"systemctl is-active {q(layout.service)}", sudo=layout.sudo, check=False, host=host)[0] == 0
    return (current if status == 0 else None), active


def configure_agent(ssh: paramiko.SSHClient, source: AgentSource, layout: AgentLayout, *, host: str = "") -> dict:
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
    return {"action": "rewritten" if current is not None else "written", "path": layout.target,
            "previous": _previous(current, wanted, source, layout)}


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
        return (json.loads(text).get("os-collect-config", {}).get("collectors") or [None])[0]
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
