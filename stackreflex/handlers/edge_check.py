"""The edge storage check of a DCN site, as one command.

The runbook operators follow after deploying an edge site: the image is in ``central`` and
is copied to the site's store; a volume is created from it in the site's availability zone;
that volume is snapshotted (with force); a volume from the snapshot is uploaded to Glance at
the site; and that image is copied back to ``central``. Each step is verified and recorded;
the run stops at the first that fails, naming it. What it creates is named after the run and
left in place for the operator to inspect, unless the order asks for ``cleanup``: then it is
deleted at the end, pass or fail, each deletion a step verified with Cinder and Glance (the
check's verdict stays what it was).
"""

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from openstack.connection import Connection
from pydantic import BaseModel, ConfigDict, Field

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.errors import HandlerFailed, StackreflexError
from ..core.registry import handler
from ..tasks.images import CENTRAL, IMAGE_SETTLED, ImageNotFound, ImageStores, delete_image, find_image, image_now
from ..tasks.volumes import (
    CinderRefused,
    VolumeInfo,
    create_snapshot,
    create_volume,
    delete_snapshot,
    delete_volume,
    deletion,
    find_snapshot,
    find_volume_named,
    snapshot_status,
    upload_to_image,
    volume_now,
)
from .context import RunContext
from .image_copies import copy_to_stores
from .orders import read_order

#: Default give-up time for each wait of the check (seconds).
STEP_DEADLINE = 1800.0


class EdgeCheckOrder(BaseModel):
    """The data of ``command.edge.check``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(min_length=1)
    image: str = Field(default="cirros", min_length=1)
    #: The site's Cinder availability zone and Glance store (default: named like the site).
    zone: str | None = None
    store: str | None = None
    size: int = Field(default=1, ge=1, le=1000)
    deadline: float = Field(default=STEP_DEADLINE, gt=0)
    #: delete what the check made once it is over (pass or fail)
    cleanup: bool = False

    @property
    def site_zone(self) -> str:
        return self.zone or self.site

    @property
    def site_store(self) -> str:
        return self.store or self.site


def edge_steps(order: EdgeCheckOrder) -> list[tuple[str, str]]:
    """The check's steps, in order: (name, what it verifies)."""
    return [
        ("image in central", f"{order.image} is active and in the {CENTRAL} store"),
        (f"copy image to {order.site_store}", f"copy-image import; {order.site_store} listed in the image's stores"),
        ("volume from image", f"a {order.size} GB volume from the image in zone {order.site_zone} is available"),
        ("snapshot volume", "a snapshot of that volume (force) is available"),
        ("volume from snapshot", f"a volume from the snapshot in zone {order.site_zone} is available"),
        ("image from volume", f"that volume uploaded to Glance; the image is active in {order.site_store}"),
        (f"copy image to {CENTRAL}", f"the site's image copied back; {CENTRAL} listed in its stores"),
    ]


def _what_the_check_made(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled edge check deletes nothing, like a finished one: it names what it made."""
    made = [
        f"{slot} {ctx.state[slot]['id']}"
        for slot in ("volume", "snapshot", "restored", "site_image")
        if slot in ctx.state
    ]
    done = ctx.state.get("done", [])
    return f"steps done: {', '.join(done) or 'none'}; left in place for inspection: {', '.join(made) or 'nothing'}"


@handler(
    "command.edge.check", max_retries=3, min_backoff=2, max_backoff=30, time_limit=60, compensate=_what_the_check_made
)
def check_edge(event: Envelope, ctx: RunContext) -> None:
    """Run the edge storage check of one site, step by step, stopping at the first failure."""
    order = read_order(EdgeCheckOrder, event, ctx)
    state = ctx.state
    state.setdefault("done", [])
    prefix = f"stackreflex-edge-{order.site}-{ctx.run_id[:8]}"
    actions: dict[str, Callable[[], None]] = {
        "image in central": lambda: _image_in_central(ctx, order),
        f"copy image to {order.site_store}": lambda: copy_to_stores(
            ctx, state["image"], [order.site_store], deadline=order.deadline, slot="copy_to_site"
        ),
        "volume from image": lambda: _volume(ctx, order, "volume", f"{prefix}-volume", image_id=state["image"]),
        "snapshot volume": lambda: _snapshot(ctx, order, f"{prefix}-snapshot"),
        "volume from snapshot": lambda: _volume(
            ctx, order, "restored", f"{prefix}-restored", snapshot_id=state["snapshot"]["id"]
        ),
        "image from volume": lambda: _image_from_volume(ctx, order, f"{prefix}-image"),
        f"copy image to {CENTRAL}": lambda: copy_to_stores(
            ctx, state["site_image"]["id"], [CENTRAL], deadline=order.deadline, slot="copy_back"
        ),
    }
    steps = edge_steps(order)
    for position, (name, _) in enumerate(steps):
        if name in state["done"] or "failure" in state:
            continue
        ctx.progress(position, len(steps), name)
        try:
            actions[name]()
        except HandlerFailed as exc:
            failure = f"edge check of {order.site} failed at step '{name}': {exc}"
            if not order.cleanup:
                raise HandlerFailed(failure) from None
            state["failure"] = failure  # cleaned up first, then the run fails with it
        else:
            state["done"].append(name)
        ctx.checkpoint()
    if order.cleanup:
        _clean_up(ctx, order)
    if "failure" in state:
        raise HandlerFailed(state["failure"])
    ctx.progress(len(steps), len(steps), f"edge storage of {order.site} verified")


#: What the check made, in the order it is deleted: the image first, then the volumes (the
#: one from the snapshot before the snapshot), the snapshot before its volume.
MADE = (("site_image", "image"), ("restored", "volume"), ("snapshot", "snapshot"), ("volume", "volume"))


def _clean_up(ctx: RunContext, order: EdgeCheckOrder) -> None:
    state, conn = ctx.state, ctx.cloud
    deleted = state.setdefault("deleted", [])
    for slot, kind in MADE:
        if slot not in state or slot in deleted:
            continue
        item = state[slot]["id"]
        with ctx.step(f"delete {kind}", target=item) as detail:
            detail.update(slot=slot, id=item)
            try:
                if kind == "image":
                    delete_image(conn, item)
                else:
                    (delete_volume if kind == "volume" else delete_snapshot)(conn, item)
                    ended = ctx.wait(
                        partial(deletion, conn, kind, item),
                        key=f"delete {slot}",
                        waiting_for=f"{kind} {item} to be deleted",
                        deadline=order.deadline,
                    )
                    if ended != "gone":
                        raise HandlerFailed(f"{kind} {item} ended {ended}: delete it by hand")
                if kind == "image" and not _image_gone(conn, item):
                    raise HandlerFailed(f"image {item} is still listed after its deletion")
            except CinderRefused as exc:
                raise HandlerFailed(str(exc)) from None
        deleted.append(slot)
        ctx.checkpoint()


def _image_in_central(ctx: RunContext, order: EdgeCheckOrder) -> None:
    with ctx.step("image in central", target=order.image) as detail:
        try:
            image = find_image(ctx.cloud, order.image)
        except StackreflexError as exc:
            raise HandlerFailed(str(exc)) from None
        detail.update(image_id=image.id, status=image.status, stores=sorted(image.stores))
        if image.status != "active" or CENTRAL not in image.stores:
            raise HandlerFailed(
                f"{image.label} is {image.status} in stores "
                f"{', '.join(sorted(image.stores)) or 'none'}: it must be active in {CENTRAL}"
            )
    ctx.state["image"] = image.id


def _volume(ctx: RunContext, order: EdgeCheckOrder, slot: str, name: str, **source: str) -> None:
    """Create a volume in the site's zone (once), wait until it is available."""
    conn = ctx.cloud
    made = _made_once(
        ctx,
        slot,
        lambda: (
            (
                find_volume_named(conn, name)
                or create_volume(conn, name, zone=order.site_zone, size=order.size, **source)
            ).id
        ),
    )
    volume: VolumeInfo = ctx.wait(
        lambda: _settled(volume_now(conn, made["id"])),
        key=slot,
        waiting_for=f"volume {name} to become available",
        deadline=order.deadline,
    )
    _record(
        ctx,
        "volume from image" if "image_id" in source else "volume from snapshot",
        name,
        made,
        ok=volume.status == "available",
        detail={"volume_id": volume.id, "zone": volume.zone, **source},
        error=f"volume {name} ({volume.id}) in zone {volume.zone} ended {volume.status}"
        + (
            f": Cinder could not clone the image at the site (is it in store {order.site_store}?)"
            if "image_id" in source
            else ""
        ),
    )


def _snapshot(ctx: RunContext, order: EdgeCheckOrder, name: str) -> None:
    conn = ctx.cloud
    volume = volume_now(conn, ctx.state["volume"]["id"])
    made = _made_once(
        ctx, "snapshot", lambda: find_snapshot(conn, volume.id, name) or create_snapshot(conn, volume, name, force=True)
    )
    status = ctx.wait(
        lambda: _settled_status(snapshot_status(conn, made["id"])[0]),
        waiting_for=f"snapshot {name} to become available",
        deadline=order.deadline,
    )
    _record(
        ctx,
        "snapshot volume",
        name,
        made,
        ok=status == "available",
        detail={"snapshot_id": made["id"], "volume_id": volume.id, "force": True},
        error=f"snapshot {name} ({made['id']}) of volume {volume.label} ended {status}",
    )


def _image_from_volume(ctx: RunContext, order: EdgeCheckOrder, name: str) -> None:
    conn = ctx.cloud
    volume = volume_now(conn, ctx.state["restored"]["id"])
    made = _made_once(ctx, "site_image", lambda: upload_to_image(conn, volume, name))
    image = ctx.wait(
        lambda: _settled_image(image_now(conn, made["id"])),
        waiting_for=f"image {name} to become active",
        deadline=order.deadline,
    )
    in_site = order.site_store in image.stores
    _record(
        ctx,
        "image from volume",
        name,
        made,
        ok=image.status == "active" and in_site,
        detail={"image_id": image.id, "volume_id": volume.id, "stores": sorted(image.stores)},
        error=f"image {name} ({image.id}) is {image.status} in stores "
        f"{', '.join(sorted(image.stores)) or 'none'}, expected active in {order.site_store}",
    )


def _image_gone(conn: Connection, image_id: str) -> bool:
    try:
        image_now(conn, image_id)
    except ImageNotFound:
        return True
    return False


def _made_once(ctx: RunContext, slot: str, create: Callable[[], str]) -> dict[str, Any]:
    """``{id, started}`` of what this step creates: created (``create`` returns its id) on the first
    attempt and saved at once; later attempts follow the same one."""
    if slot not in ctx.state:
        started = utcnow()
        try:
            made_id = create()
        except CinderRefused as exc:
            raise HandlerFailed(str(exc)) from None
        ctx.state[slot] = {"id": made_id, "started": started.isoformat()}
        ctx.checkpoint()
    made: dict[str, Any] = ctx.state[slot]
    return made


def _settled(volume: VolumeInfo) -> VolumeInfo | None:
    return volume if volume.status in ("available", "in-use", "error") else None


def _settled_image(image: ImageStores) -> ImageStores | None:
    return image if image.status in IMAGE_SETTLED else None


def _settled_status(status: str) -> str | None:
    return status if status in ("available", "error") else None


def _record(
    ctx: RunContext, step: str, target: str, made: dict[str, Any], *, ok: bool, detail: dict[str, Any], error: str
) -> None:
    started = datetime.fromisoformat(made["started"])
    detail = {**detail, "duration_s": round((utcnow() - started).total_seconds(), 3)}
    ctx.record(
        step,
        target=target,
        started_at=started,
        status="succeeded" if ok else "failed",
        detail=detail,
        error=None if ok else error,
    )
    if not ok:
        raise HandlerFailed(error)
