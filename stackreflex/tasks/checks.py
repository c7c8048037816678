"""Pre-deployment connectivity checks: what must be reachable before a deployed-server deploy."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..core.errors import StackreflexError
from ..core.redaction import redact_text
from ..core.settings import Settings
from .heat import agent_source, deployed_servers, find_stack
from .inventory import Host
from .ssh import open_ssh, run

if TYPE_CHECKING:
    from openstack.connection import Connection


@dataclass
class Check:
    name: str
    target: str
    ok: bool
    detail: str


def _attempt(name: str, target: str, action: Callable[[], str | None]) -> Check:
    try:
        return Check(name, target, True, action() or "ok")
    except Exception as exc:  # every failure, of any kind, is a verdict to report
        return Check(name, target, False, redact_text(str(exc))[:300])


def local_checks(
    conn_factory: Callable[[], Connection], stack: str | None, services: list[tuple[str, str, Callable[[], str]]]
) -> tuple[list[Check], Connection | None]:
    """Keystone and Heat from this host, then each of ``services`` (name, target, probe): the
    broker and the audit database, which the caller knows how to reach."""
    checks: list[Check] = []
    conn: Connection | None = None

    def keystone() -> str:
        nonlocal conn
        conn = conn_factory()
        conn.authorize()
        return f"token issued by {conn.session.get_endpoint(service_type='identity', interface='public')}"

    checks.append(_attempt("Keystone", "authentication", keystone))
    if conn is not None:
        checks.append(
            _attempt(
                "Heat",
                stack or "stacks",
                lambda: (
                    f"stack {find_stack(conn, stack).status}"
                    if stack
                    else f"{len(list(conn.orchestration.stacks()))} stack(s)"
                ),
            )
        )
    checks += [_attempt(name, target, probe) for name, target, probe in services]
    return checks, conn


def node_checks(settings: Settings, host: Host, endpoints: list[tuple[str, str]]) -> list[Check]:
    """From the node over SSH: reach each (name, URL) endpoint the agent needs."""
    checks = []
    try:
        ssh = open_ssh(settings, host.address, port=host.port)
    except StackreflexError as exc:
        return [Check("SSH", str(host), False, str(exc))]
    with ssh:
        checks.append(_attempt("SSH", str(host), lambda: run(ssh, "hostname", host=str(host))[1].strip()))
        for name, url in endpoints:
            parts = urlsplit(url)

            def reach(url: str = url, name: str = name, where: str = f"{parts.hostname}:{parts.port}") -> str:
                status, code, err = run(
                    ssh,
                    f"curl -sS -o /dev/null -w %{{http_code}} --max-time 5 {shlex.quote(url)}",
                    check=False,
                    host=str(host),
                )
                if status != 0:
                    raise StackreflexError(err.strip() or f"curl exited {status}")
                return http_verdict(name, int(code or 0), where)

            checks.append(_attempt(f"{name} from node", str(host), reach))
    return checks


def http_verdict(name: str, code: int, where: str) -> str:
    """What an endpoint's status code says of what the agent needs from it; a code that says
    it cannot serve that raises, and the check fails with it. The Heat API asks for a token
    (401 is its right answer to a bare GET); the metadata URL and Keystone must answer."""
    if 200 <= code < 400:
        return f"HTTP {code} from {where}"
    if code in (401, 403) and name == "Heat API":
        return f"HTTP {code} from {where}: answers, and asks for a token"
    meaning = {
        401: "refuses without credentials",
        403: "refuses (a bad or expired temp URL signature?)",
        404: "has no such path (a stale metadata URL, or the wrong service on that port)",
    }
    raise StackreflexError(
        f"HTTP {code} from {where}: {meaning.get(code, 'the service is failing')}"
        if code
        else f"no HTTP answer from {where}"
    )


def undercloud_endpoints(conn: Connection, stack: str | None) -> list[tuple[str, str]]:
    """The Heat API and what a deployed server's agent polls: Swift (temp URL) or Keystone (heat collector)."""
    heat = conn.session.get_endpoint(service_type="orchestration", interface="public")
    # no Heat in the catalog: the local Heat check already fails, and says why
    endpoints = [("Heat API", heat)] if heat else []
    if stack:
        servers = deployed_servers(conn, stack)
        source = next((u for u in (agent_source(conn, s) for s in servers[:1]) if u), None)
        if source is not None and source.collector == "request":
            endpoints.append(("Swift", source.settings["metadata_url"]))
        elif source is not None:
            endpoints.append(("Keystone", source.settings["auth_url"]))
    return endpoints
