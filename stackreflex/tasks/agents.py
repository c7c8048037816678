"""Configuring os-collect-config on a node over SSH: idempotent, atomic, verified.

The metadata URL carries a credential (its temp_url_sig), so it travels on the command's
standard input, never in a command line, and the file is written 0600.
"""

import json
import shlex
from dataclasses import dataclass

import paramiko

from ..settings import Settings
from .ssh import CommandFailed, run

@dataclass(frozen=True)
class AgentLayout:
    """Where the agent's configuration lives on the nodes, and how it is restarted."""

    mode: str
    config_path: str
    template_path: str
    local_data_path: str
    cache_path: str
    service: str
    polling_interval: int
    sudo: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> "AgentLayout":
        return cls(settings.agent_layout, settings.agent_config_path, settings.agent_template_path,
                   settings.agent_local_data_path, settings.agent_cache_path, settings.agent_service,
                   settings.agent_polling_interval, settings.ssh_sudo)

    @property
    def target(self) -> str:
        return self.config_path if self.mode == "ini" else self.local_data_path

    def render(self, url: str) -> bytes:
        if self.mode == "ini":
            return (f"[DEFAULT]\ncollectors=request\ncommand=os-refresh-config\n"
                    f"polling_interval={self.polling_interval}\n\n[request]\nmetadata_url={url}\n").encode()
        return json.dumps({"os-collect-config": {"collectors": ["request", "local"],
                                                 "polling_interval": self.polling_interval,
                                                 "request": {"metadata_url": url}}}, indent=2).encode() + b"\n"


def agent_state(ssh: paramiko.SSHClient, layout: AgentLayout, *, host: str = "") -> tuple[str | None, bool]:
    """(the configuration file's content, whether the agent is active)."""
    q = shlex.quote
    status, current, _ = run(ssh, f"cat {q(layout.target)}", sudo=layout.sudo, check=False, host=host)
    active = run(ssh, f"systemctl is-active {q(layout.service)}", sudo=layout.sudo, check=False, host=host)[0] == 0
    return (current if status == 0 else None), active


def configure_agent(ssh: paramiko.SSHClient, url: str, layout: AgentLayout, *, host: str = "") -> dict:
    """Point the node's agent at ``url`` unless it already is and runs; returns what was done."""
    q = shlex.quote
    wanted = layout.render(url).decode()
    current, active = agent_state(ssh, layout, host=host)
    if current == wanted and active:
        return {"action": "unchanged", "path": layout.target}
    if layout.mode == "ini":  # os-apply-config would render its template over our file
        run(ssh, f"rm -f {q(layout.template_path)}", sudo=layout.sudo, host=host)
    temporary = f"{layout.target}.stackreflex-tmp"
    run(ssh, f"install -m 0600 /dev/stdin {q(temporary)}", stdin=wanted.encode(), sudo=layout.sudo, host=host)
    run(ssh, f"mv -f {q(temporary)} {q(layout.target)}", sudo=layout.sudo, host=host)
    run(ssh, f"systemctl restart {q(layout.service)}", sudo=layout.sudo, host=host)
    _, active = agent_state(ssh, layout, host=host)
    if not active:
        raise CommandFailed(f"node {host}: {layout.service} is not active after its restart")
    return {"action": "rewritten" if current is not None else "written", "path": layout.target,
            "previous": "other URL" if current is not None else "none"}


def agent_fetched(ssh: paramiko.SSHClient, layout: AgentLayout, url: str, *, host: str = "") -> bool:
    """True once the agent's collector cache holds what it fetched from ``url``'s deployment."""
    status, cached, _ = run(ssh, f"cat {shlex.quote(layout.cache_path)}", sudo=layout.sudo, check=False, host=host)
    if status != 0:
        return False
    try:
        fetched = json.loads(cached)
    except ValueError:
        return False
    return ((fetched.get("os-collect-config") or {}).get("request") or {}).get("metadata_url") == url
