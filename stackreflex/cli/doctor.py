"""``stackreflex doctor``: the pre-deployment connectivity checks, each with a verdict."""

from typing import Annotated

import typer

from ..bus.connections import display_url, probe_broker
from ..core.redaction import redact_text
from ..tasks.checks import local_checks, node_checks, undercloud_endpoints
from ..tasks.cloud import connect_cloud
from ..tasks.inventory import load_inventory
from .common import emit, invocation
from .output import Column, Listing, lists

COLUMNS = [Column("check"), Column("target"), Column("verdict", "status"), Column("detail", "text")]


@lists
def doctor(
    stack: Annotated[str | None, typer.Option(help="Also check what this stack's nodes need (e.g. overcloud).")] = None,
    nodes: Annotated[bool, typer.Option(help="Check from each inventory node over SSH.")] = True,
) -> None:
    """Check connectivity before a deployment. Exits 1 if any check fails.

    From here: Keystone, Heat, RabbitMQ and the database. From each node over SSH: the
    undercloud's Heat API and Swift, derived from the catalog and the stack's metadata URLs."""
    settings = invocation.settings
    services = [
        ("RabbitMQ", display_url(settings), lambda: probe_broker(settings)),
        ("database", redact_text(settings.database()), lambda: invocation.audit().probe()),
    ]
    checks, conn = local_checks(lambda: connect_cloud(settings), stack, services)
    if nodes and conn is not None:
        endpoints = undercloud_endpoints(conn, stack)
        inventory = load_inventory(settings.inventory)
        # the role members and the servers: entries (stacks that are not TripleO-shaped), each node once
        nodes_to_check = dict.fromkeys(
            [*(h for hosts in inventory.roles.values() for h in hosts), *inventory.servers.values()]
        )
        for host in nodes_to_check:
            checks.extend(node_checks(settings, host, endpoints))
    emit(
        Listing(
            COLUMNS,
            [
                {"check": c.name, "target": c.target, "verdict": "ok" if c.ok else "FAIL", "detail": c.detail}
                for c in checks
            ],
            title="stackreflex doctor",
        )
    )
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
