"""Nova for host maintenance: a host's nova-compute service, the servers on it, their migrations.

What the evacuation runbook reads and does, as plain functions over an openstacksdk connection.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openstack import exceptions
from openstack.compute.v2.service import Service
from openstack.connection import Connection

from ..core.errors import HandlerFailed, StackreflexError

#: Server states Nova live-migrates (with no task in progress).
LIVE_MIGRATABLE = ("ACTIVE", "PAUSED")
#: Migration statuses that mean it is over and did not move the server.
MIGRATION_FAILED = ("error", "failed", "cancelled", "aborted")
#: A migration Nova has accepted but not begun: it waits for a slot of its source host
#: (max_concurrent_live_migrations).
MIGRATION_WAITING = ("accepted", "queued")


class MigrationRefused(StackreflexError):
    """Nova would not start a migration (no valid host, bad target): retrying will not help."""


@dataclass(frozen=True)
class HostServer:
    """A server as an evacuation sees it."""

    id: str
    name: str
    project_id: str
    status: str
    task_state: str | None
    host: str | None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def busy(self) -> bool:
        """Nova is doing something to it (a migration, a power change…): follow, do not act."""
        return bool(self.task_state) or self.status in ("MIGRATING", "RESIZE")


@dataclass(frozen=True)
class MigrationRecord:
    id: str
    server_id: str
    kind: str
    status: str
    source: str
    dest: str | None
    created_at: datetime
    #: when Nova last changed the record (its status, mostly)
    updated_at: datetime | None = None


def action_for(server: HostServer, *, cold_migrate_stopped: bool) -> tuple[str, str]:
    """What an evacuation does with a server, and why: live-migrate, follow, cold-migrate or leave."""
    if server.busy:
        return "follow", f"Nova is already at work on it (task {server.task_state or server.status})"
    if server.status in LIVE_MIGRATABLE:
        return "live-migrate", f"{server.status}, no task"
    if server.status == "SHUTOFF":
        if cold_migrate_stopped:
            return "cold-migrate", "SHUTOFF: moved cold, then the resize confirmed"
        return "leave", "SHUTOFF: not live-migratable (pass --cold-migrate-stopped to move it cold)"
    return "leave", f"{server.status}: not migratable; needs an operator"


def compute_service(conn: Connection, host: str) -> Service:
    """The nova-compute service of ``host``, as Nova has it: the host a command names is acted on
    only if Nova knows it. Otherwise a clear error naming the known hosts, which fails a run
    at once (asking Nova again would not make the host exist)."""
    services = list(conn.compute.services(binary="nova-compute"))
    found = next((s for s in services if s.host == host), None)
    if found is None:
        known = ", ".join(sorted(s.host for s in services)) or "none"
        raise HandlerFailed(f"no nova-compute service on host {host} (compute hosts: {known})")
    return found


def set_service_enabled(conn: Connection, service: Service, enabled: bool, reason: str | None = None) -> Service | None:
    if enabled:
        return conn.compute.enable_service(service, host=service.host, binary="nova-compute")
    return conn.compute.disable_service(service, host=service.host, binary="nova-compute", disabled_reason=reason)


def servers_on(conn: Connection, host: str) -> dict[str, HostServer]:
    """Every server on ``host``, in all projects.

    Read as plain JSON: an evacuation polls this list, and building an SDK resource per
    server costs far more CPU than the request itself.
    """
    return {
        s["id"]: _host_server(s)
        for s in _pages(conn, "/servers/detail", "servers", {"all_tenants": "True", "host": host})
    }


def server_now(conn: Connection, server_id: str) -> HostServer | None:
    response = conn.compute.get(f"/servers/{server_id}")
    if response.status_code == 404:
        return None
    exceptions.raise_from_response(response)
    return _host_server(response.json()["server"])


def migrations_from(conn: Connection, host: str, since: datetime) -> dict[str, list[MigrationRecord]]:
    """Migrations off ``host`` created since ``since`` (whole seconds, as Nova keeps them), per server, oldest first."""
    floor = since.replace(microsecond=0)
    found: dict[str, list[MigrationRecord]] = {}
    for m in _pages(conn, "/os-migrations", "migrations", {"source_compute": host}, microversion="2.59"):
        created = nova_time(m.get("created_at"))
        if created >= floor:
            found.setdefault(m["instance_uuid"], []).append(
                MigrationRecord(
                    m.get("uuid") or str(m["id"]),
                    m["instance_uuid"],
                    m.get("migration_type", "migration"),
                    m["status"],
                    m["source_compute"],
                    m.get("dest_compute"),
                    created,
                    nova_time(m["updated_at"]) if m.get("updated_at") else None,
                )
            )
    for records in found.values():
        records.sort(key=lambda r: r.created_at)
    return found


def _host_server(s: dict[str, Any]) -> HostServer:
    return HostServer(
        s["id"],
        s.get("name", ""),
        s.get("tenant_id", ""),
        s.get("status", ""),
        s.get("OS-EXT-STS:task_state"),
        s.get("OS-EXT-SRV-ATTR:host"),
    )


def _pages(
    conn: Connection, path: str | None, key: str, params: dict[str, str] | None, microversion: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a Nova listing, following its ``next`` links."""
    while path:
        response = conn.compute.get(path, params=params, microversion=microversion)
        exceptions.raise_from_response(response)
        body = response.json()
        yield from body.get(key, [])
        following = next((link["href"] for link in body.get(f"{key}_links", []) if link.get("rel") == "next"), None)
        path, params = (following, None) if following else (None, None)


def start_migration(conn: Connection, server: HostServer, *, live: bool, target: str | None) -> None:
    """Ask Nova to move ``server``; :class:`MigrationRefused` when Nova says it cannot."""
    try:
        if live:
            conn.compute.live_migrate_server(server.id, host=target, block_migration="auto")
        else:
            conn.compute.migrate_server(server.id, host=target)
    except exceptions.BadRequestException as exc:
        raise MigrationRefused(f"{server.label}: Nova refused the migration: {_message(exc)}") from None


def _message(exc: exceptions.HttpException) -> str:
    return (exc.details or str(exc)).strip()


def nova_time(text: str | None) -> datetime:
    if not text:
        return datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
