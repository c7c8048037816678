"""``stackreflex edge check SITE``: the edge storage validation of a DCN site as one command."""

from typing import Annotated

import typer

from ..handlers.edge_check import STEP_DEADLINE, EdgeCheckOrder, edge_steps
from ..tasks.images import check_stores, find_image
from .common import emit
from .options import Deadline, DryRun, Timeout, Wait, order_from
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, check_first, command_steps, send_command

app = typer.Typer(help="Edge (DCN) site validations.", no_args_is_help=True)


@app.command()
@lists
def check(
    site: Annotated[str, typer.Argument(help="The edge site, e.g. dcn0.")],
    image: Annotated[str, typer.Option(help="The test image (name or id), active in the central store.")] = "cirros",
    zone: Annotated[str | None, typer.Option(help="The site's Cinder availability zone (default: SITE).")] = None,
    store: Annotated[str | None, typer.Option(help="The site's Glance store (default: SITE).")] = None,
    size: Annotated[int, typer.Option(min=1, help="Size (GB) of the test volume.")] = 1,
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            help=(
                "Delete what the check made once it is over, pass or fail: its image, volumes and snapshot, each "
                "deletion verified."
            ),
        ),
    ] = False,
    deadline: Deadline = STEP_DEADLINE,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Validate a site's storage end to end: image in central → copied to the site's store → volume from it in the site's zone → snapshot (force) → volume from the snapshot → uploaded to Glance at the site → copied back to central.

    Each step is verified and recorded; the check stops at the first failure and names it. What it creates is named stackreflex-edge-SITE-<run> and left in place, unless --cleanup.

    Example: stackreflex edge check dcn0 --image cirros --wait
    """
    order = order_from(
        EdgeCheckOrder, site=site, image=image, zone=zone, store=store, size=size, deadline=deadline, cleanup=cleanup
    )
    if dry_run:
        emit(
            Listing(
                [Column("step"), Column("verifies", "text")],
                [{"step": step, "verifies": verifies} for step, verifies in edge_steps(order)],
                title=f"edge check of {site} (nothing will be changed)",
            )
        )
        return
    check_first(lambda conn: (find_image(conn, order.image), check_stores(conn, [order.site_store])))
    send_command("command.edge.check", site, order.model_dump(), wait=wait, timeout=timeout, report=_show_steps)


EDGE_COLUMNS = [
    Column("step"),
    Column("target"),
    Column("status", "status", header="result"),
    Column("duration_s", "number", header="seconds"),
    Column("error", "text"),
]


def _show_steps(correlation_id: str) -> bool:
    rows = [
        {
            "step": s["name"],
            "target": s["target"],
            "status": s["status"],
            "duration_s": s["detail"].get("duration_s"),
            "error": s["error"],
        }
        for s in command_steps(correlation_id, "check_edge")
    ]
    if rows:
        emit(Listing(EDGE_COLUMNS, rows, title="edge check"))
    return bool(rows)
