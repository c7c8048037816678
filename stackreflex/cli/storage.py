"""``stackreflex volume snapshot``, ``server image`` and ``image copy``: copies of data before an upgrade."""

from collections.abc import Callable
from typing import Annotated

import typer

from ..core.clock import utcnow
from ..handlers.image_copies import COPY_DEADLINE, CopyOrder
from ..handlers.snapshots import ServerImageOrder, SnapshotOrder, plan_snapshots
from ..tasks.cloud import connect_cloud
from ..tasks.images import check_stores, find_image
from ..tasks.servers import find_server
from .common import emit, invocation, say
from .options import Deadline, DryRun, Timeout, Wait, order_from
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, check_first, command_steps, send_command

volume_app = typer.Typer(help="Snapshots of Cinder volumes, with their server quiesced.", no_args_is_help=True)
server_app = typer.Typer(help="Images of Nova servers, with the server quiesced.", no_args_is_help=True)
image_app = typer.Typer(help="Copies of Glance images to other stores (edge sites).", no_args_is_help=True)

Stop = Annotated[
    bool,
    typer.Option(
        "--stop/--no-stop",
        help=(
            "Stop the server first so its data is flushed, and start it again afterwards (also when the copy fails)."
        ),
    ),
]
Stores = Annotated[str | None, typer.Option(help="Comma-separated Glance stores, e.g. dcn0,dcn1.")]


def _stores(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


@volume_app.command("snapshot")
@lists
def volume_snapshot(
    volumes: Annotated[list[str] | None, typer.Argument(help="Volumes (names or ids); or use --server.")] = None,
    server: Annotated[str | None, typer.Option(help="Snapshot every volume attached to this server.")] = None,
    name: Annotated[
        str | None,
        typer.Option(help=("Snapshot name; with several volumes, NAME-<volume>. Default: <volume>-<UTC time>.")),
    ] = None,
    stop: Stop = True,
    force: Annotated[
        bool | None,
        typer.Option(
            "--force/--no-force",
            help=("Snapshot with force (needed for an attached volume). Default: force exactly the volumes in use."),
            show_default=False,
        ),
    ] = None,
    deadline: Deadline = COPY_DEADLINE,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Snapshot volumes consistently: stop the server using them, snapshot each (with force when in use), wait until every snapshot is available, start the server again.

    The server is started again even when a snapshot fails or times out; the run then fails and names the volume. A server that was already SHUTOFF stays SHUTOFF.

    Example: stackreflex volume snapshot --server vm-compute-10-0 --name pre-upgrade --wait
    """
    order = order_from(
        SnapshotOrder, volumes=volumes or [], server=server, name=name, stop=stop, force=force, deadline=deadline
    )
    if dry_run:
        _show_snapshot_plan(order)
        return
    check_first(lambda conn: plan_snapshots(conn, order, utcnow()))
    subject = server or ",".join(volumes or [])
    send_command(
        "command.volume.snapshot", subject, order.model_dump(), wait=wait, timeout=timeout, report=_show_snapshots
    )


def _show_snapshot_plan(order: SnapshotOrder) -> None:
    plan = plan_snapshots(connect_cloud(invocation.settings), order, utcnow())
    rows = [
        {
            "volume": v.name,
            "id": v.id,
            "size_gb": v.size,
            "status": v.status,
            "attached_to": v.server_ids,
            "snapshot_name": plan.names[v.id],
            "force": plan.force[v.id],
        }
        for v in plan.volumes
    ]
    emit(Listing(SNAPSHOT_PLAN_COLUMNS, rows, title="plan (nothing will be changed)"))
    if plan.server is None:
        say(f"snapshot {len(rows)} volume(s); no server is stopped")
    elif plan.server.status == "SHUTOFF":
        say(f"{plan.server.label} is already SHUTOFF: snapshot {len(rows)} volume(s); it stays stopped")
    else:
        say(
            f"stop {plan.server.label} ({plan.server.status}), snapshot {len(rows)} volume(s), "
            "start it again (also if a snapshot fails)"
        )


SNAPSHOT_PLAN_COLUMNS = [
    Column("volume"),
    Column("id", "id"),
    Column("size_gb", "number", header="GB"),
    Column("status"),
    Column("attached_to", header="attached to"),
    Column("snapshot_name", header="snapshot name"),
    Column("force"),
]
SNAPSHOT_COLUMNS = [
    Column("volume"),
    Column("snapshot_id", "id", header="snapshot"),
    Column("size_gb", "number", header="GB"),
    Column("status", "status"),
    Column("duration_s", "number", header="seconds"),
    Column("error", "text"),
]
COPY_COLUMNS = [
    Column("store"),
    Column("status", "status", header="result"),
    Column("duration_s", "number", header="seconds"),
    Column("lock_waits", "number", header="lock waits"),
    Column("note", "text"),
]


def _show_snapshots(correlation_id: str) -> bool:
    rows = [
        {
            "volume": s["target"],
            "snapshot_id": s["detail"].get("snapshot_id"),
            "size_gb": s["detail"].get("size_gb"),
            "status": s["status"],
            "duration_s": s["detail"].get("duration_s"),
            "error": s["error"],
        }
        for s in command_steps(correlation_id, "snapshot_volumes", ("snapshot volume",))
    ]
    if rows:
        emit(Listing(SNAPSHOT_COLUMNS, rows, title="snapshots"))
    return bool(rows)


@server_app.command("image")
@lists
def server_image(
    server: Annotated[str, typer.Argument(help="The server (name or id).")],
    name: Annotated[str, typer.Option(help="The image's name.")],
    stop: Stop = True,
    copy_to: Annotated[str | None, typer.Option(help="Then copy the image to these stores (comma-separated).")] = None,
    deadline: Deadline = COPY_DEADLINE,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Image a server consistently: stop it, create its image, wait until the image is active, start it again; optionally copy the image to other stores.

    Example: stackreflex server image vm-compute-10-1 --name vm-compute-10-1-pre-upgrade --copy-to dcn0,dcn1 --wait
    """
    order = order_from(
        ServerImageOrder, server=server, name=name, stop=stop, copy_to=_stores(copy_to), deadline=deadline
    )
    if dry_run:
        conn = connect_cloud(invocation.settings)
        found = find_server(conn, server).server
        check_stores(conn, order.copy_to)
        steps = (
            ([f"stop {found.label} ({found.status})"] if stop and found.status != "SHUTOFF" else [])
            + [f"create image {name}, wait until active"]
            + ([f"start {found.label} again"] if stop and found.status != "SHUTOFF" else [])
            + ([f"copy the image to {', '.join(order.copy_to)}"] if order.copy_to else [])
        )
        say("plan (nothing will be changed): " + "; ".join(steps))
        return
    check_first(lambda conn: (find_server(conn, server), check_stores(conn, order.copy_to)))
    send_command(
        "command.server.image",
        server,
        order.model_dump(),
        wait=wait,
        timeout=timeout,
        report=_show_copies("image_server"),
    )


@image_app.command("copy")
@lists
def image_copy(
    image: Annotated[str, typer.Argument(help="The image (name or id).")],
    stores: Stores = None,
    all_stores: Annotated[bool, typer.Option("--all-stores", help="Every store the image is not in yet.")] = False,
    deadline: Deadline = COPY_DEADLINE,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Copy an active image to Glance stores with the copy-image import, and wait until each store has it or failed.

    A copy is done only when the store is listed in the image's stores; a failed one shows up in os_glance_failed_import and makes the run fail, naming the store. When another import holds the image (409), the copy waits its turn. Nothing is ever deleted: the central copy stays.

    Example: stackreflex image copy cirros --stores dcn0,dcn1 --wait
    """
    order = order_from(CopyOrder, image=image, stores=_stores(stores), all_stores=all_stores, deadline=deadline)
    if dry_run:
        conn = connect_cloud(invocation.settings)
        found = find_image(conn, image)
        known = check_stores(conn, order.stores)
        rows = [
            {"store": s, "action": "already there" if s in found.stores else "copy"} for s in (order.stores or known)
        ]
        emit(
            Listing(
                [Column("store"), Column("action")],
                rows,
                title=f"plan for {found.label}, {found.status}, in "
                f"{', '.join(sorted(found.stores))} (nothing will be changed)",
            )
        )
        return
    check_first(lambda conn: (find_image(conn, image), check_stores(conn, order.stores)))
    send_command(
        "command.image.copy", image, order.model_dump(), wait=wait, timeout=timeout, report=_show_copies("copy_image")
    )


def _show_copies(handler: str) -> Callable[[str], bool]:
    def show(correlation_id: str) -> bool:
        rows = [
            {
                "store": s["target"],
                "status": s["status"],
                "duration_s": s["detail"].get("duration_s"),
                "lock_waits": s["detail"].get("lock_waits"),
                "note": s["error"] or s["detail"].get("note"),
            }
            for s in command_steps(correlation_id, handler, ("copy image",))
        ]
        if rows:
            emit(Listing(COPY_COLUMNS, rows, title="copies"))
        return bool(rows)

    return show
