"""``stackreflex backup undercloud|controlplane``: the runbook's backups before an upgrade, fetched and verified."""

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import StackreflexError
from ..handlers.backups import (
    BackupOrder,
    Node,
    Plan,
    connect,
    controller_nodes,
    controller_plan,
    undercloud_node,
    undercloud_plan,
    workdir,
)
from ..tasks.heat import find_stack
from .common import emit, invocation, say
from .options import DryRun, Timeout, Wait, order_from
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, check_first, command_steps, send_command

app = typer.Typer(
    help="Backups before an upgrade: the undercloud, the overcloud's control plane.", no_args_is_help=True
)

Dest = Annotated[
    Path,
    typer.Option(
        help=(
            "Directory the artefacts and their manifest go to, on the host of the worker that runs the backup "
            "(created if missing; existing files are never overwritten)."
        )
    ),
]
#: The working directory a dry run shows (a run's is named after its id).
WORK = workdir("<run>", "<execution>")
PLAN_COLUMNS = [Column("node"), Column("step"), Column("command", "text"), Column("estimate")]
ARTEFACT_COLUMNS = [
    Column("file"),
    Column("node"),
    Column("size", "number", header="bytes"),
    Column("sha256", "id"),
    Column("verified", "text"),
]


@app.command()
@lists
def undercloud(
    dest: Dest, dry_run: DryRun = False, wait: Wait = False, timeout: Timeout = DEFAULT_WAIT_TIMEOUT
) -> None:
    """Back up the undercloud (§2.1): check the free space, dump every database, archive it with /etc, /var/log, /var/lib/glance, /var/lib/certmonger, /var/lib/docker, /var/lib/registry, /srv/node, /root and /home/stack, and fetch the archive over SFTP.

    The archive's SHA-256 is checked against the node's and the archive read back before it is named for good; a manifest lists it. The node's working directory is removed afterwards, whatever happened.

    Example: stackreflex backup undercloud --dest ~/backups --wait
    """
    order = order_from(BackupOrder, dest=str(dest.expanduser().resolve()))
    if dry_run:
        _show_plan(
            [undercloud_node(invocation.settings)],
            lambda node, first: undercloud_plan(node, WORK, "<date>", order.dest),
            "undercloud backup",
        )
        return
    send_command(
        "command.backup.undercloud",
        "undercloud",
        order.model_dump(),
        wait=wait,
        timeout=timeout,
        report=lambda correlation: _show_artefacts(correlation, "backup_undercloud"),
    )


@app.command()
@lists
def controlplane(
    dest: Dest,
    stack: Annotated[str, typer.Option(help="The overcloud stack.")] = "overcloud",
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Back up the overcloud's control plane (§2.2): on the bootstrap controller every OpenStack database and the users' grants (the root password read from hieradata, never shown), Redis (and MongoDB when the deployment has one); on every controller its filesystem archive.

    Each artefact is streamed back over SFTP into --dest, its SHA-256 checked against the node's and the file read back; a manifest lists them. The controllers' working directories are removed afterwards, whatever happened.

    Example: stackreflex backup controlplane --stack overcloud --dest ~/backups --wait
    """
    order = order_from(BackupOrder, dest=str(dest.expanduser().resolve()), stack=stack)
    if dry_run:
        from ..tasks.cloud import connect_cloud

        nodes = controller_nodes(connect_cloud(invocation.settings), invocation.settings, stack)
        _show_plan(
            nodes,
            lambda node, first: controller_plan(node, WORK, "<date>", bootstrap=first),
            f"control plane backup of {stack}",
        )
        return
    check_first(lambda conn: find_stack(conn, stack))
    send_command(
        "command.backup.controlplane",
        stack,
        order.model_dump(),
        wait=wait,
        timeout=timeout,
        report=lambda correlation: _show_artefacts(correlation, "backup_controlplane"),
    )


def _show_plan(nodes: list[Node], make_plan: Callable[[Node, bool], Plan], title: str) -> None:
    """Each node's steps, with the size of what it archives read first (``du``): the only command
    a dry run sends the nodes, besides ``hostname``."""
    from ..tasks import ssh as remote

    settings, rows = invocation.settings, []
    for position, node in enumerate(nodes):
        try:
            session = connect(partial(remote.open_ssh, settings), node)
        except StackreflexError as exc:
            say(f"[yellow]{node.name}: no estimate:[/] {exc}")
            plan, estimate = make_plan(node, position == 0), "unknown"
        else:
            try:
                plan = make_plan(session.node, position == 0)
                _, out, _ = remote.run(
                    session.ssh, f"du -sbc {' '.join(plan.paths)}", sudo=settings.ssh_sudo, check=False
                )
            finally:
                session.ssh.close()
            totals = [line.split("\t")[0] for line in out.splitlines() if line.endswith("\ttotal")]
            estimate = _size(int(totals[-1])) if totals and totals[-1].isdigit() else "unknown"
        name = plan.node.name
        rows.append(
            {"node": name, "step": "free space", "command": "du -sbc …; df -P -B1 /var/tmp", "estimate": estimate}
        )
        rows += [{"node": name, "step": step, "command": command, "estimate": ""} for step, command in plan.steps]
        rows += [
            {"node": name, "step": f"fetch {file}", "command": f"sftp get {source}", "estimate": ""}
            for source, file in plan.fetches
        ]
        rows.append({"node": name, "step": "clean up", "command": f"rm -rf {WORK}", "estimate": ""})
    emit(Listing(PLAN_COLUMNS, rows, title=f"{title} (nothing will be changed)"))


def _size(count: int) -> str:
    """Bytes as operators read them (du -h's units, in powers of 1000 like the runbook's 3.5 GB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _show_artefacts(correlation_id: str, handler: str) -> bool:
    steps = command_steps(correlation_id, handler)
    if not steps:
        return False
    last = max(s["attempt"] for s in steps)
    rows = [
        {**{k: s["detail"].get(k) for k in ("file", "size", "sha256", "verified")}, "node": s["target"]}
        for s in steps
        if s["attempt"] == last and s["name"].startswith("fetch ") and s["status"] == "succeeded"
    ]
    failed = [s for s in steps if s["attempt"] == last and s["status"] == "failed"]
    emit(Listing(ARTEFACT_COLUMNS, rows, title="artefacts", empty="no artefact was fetched"))
    for step in failed:
        say(f"[red]{step['name']} on {step['target']} failed:[/] {step['error']}")
    return True
