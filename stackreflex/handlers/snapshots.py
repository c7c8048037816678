"""Quiesced copies of a server's data: volume snapshots and server images.

The server is stopped first (so its data is flushed), the copies are made and followed until
Cinder or Glance says they are done, and the server is started again whatever happened.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Self

from openstack.connection import Connection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.errors import HandlerFailed, StackreflexError
from ..core.registry import handler
from ..tasks.compute import HostServer
from ..tasks.images import IMAGE_SETTLED, ImageNotFound, ImageStores, find_image, image_now
from ..tasks.servers import create_image, find_server
from ..tasks.volumes import CinderRefused, VolumeInfo, create_snapshot, find_snapshot, find_volume, snapshot_status
from .context import RunContext
from .image_copies import copy_to_stores
from .orders import read_order
from .quiesce import start_again_after_cancel, with_server_stopped

#: Default give-up time for the snapshots or the image (seconds).
COPY_DEADLINE = 3600.0


class SnapshotOrder(BaseModel):
    """The data of ``command.volume.snapshot``: volumes, or a server whose attached volumes to take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volumes: list[str] = Field(default_factory=list)
    server: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    #: Stop the server the volumes are attached to first (and start it again afterwards).
    stop: bool = True
    #: Snapshot with force: None means "when the volume is in use".
    force: bool | None = None
    deadline: float = Field(default=COPY_DEADLINE, gt=0)

    @model_validator(mode="after")
    def _what(self) -> Self:
        if bool(self.volumes) == bool(self.server):
            raise ValueError("give either volumes or a server")
        return self


@dataclass
class SnapshotPlan:
    server: HostServer | None
    volumes: list[VolumeInfo]
    names: dict[str, str]
    force: dict[str, bool]


def plan_snapshots(conn: Connection, order: SnapshotOrder, stamp: datetime) -> SnapshotPlan:
    """Which server to stop, which volumes to snapshot, under which names, with force or not."""
    server: HostServer | None
    if order.server:
        found = find_server(conn, order.server)
        if not found.volume_ids:
            raise StackreflexError(
                f"{found.server.label} has no volumes attached: nothing to snapshot "
                "(to keep its disk, use `stackreflex server image`)"
            )
        server, volumes = found.server, [find_volume(conn, v) for v in found.volume_ids]
    else:
        volumes = [find_volume(conn, v) for v in dict.fromkeys(order.volumes)]
        owners = sorted({s for v in volumes for s in v.server_ids})
        if order.stop and len(owners) > 1:
            raise StackreflexError(
                f"the volumes are attached to {len(owners)} servers ({', '.join(owners)}): "
                "snapshot each server's volumes with --server, or pass --no-stop"
            )
        server = find_server(conn, owners[0]).server if order.stop and owners else None
    names = {v.id: _snapshot_name(order, v, len(volumes), stamp) for v in volumes}
    force = {v.id: order.force if order.force is not None else v.status == "in-use" for v in volumes}
    return SnapshotPlan(server, volumes, names, force)


def _snapshot_name(order: SnapshotOrder, volume: VolumeInfo, count: int, stamp: datetime) -> str:
    if order.name:
        return order.name if count == 1 else f"{order.name}-{volume.name or volume.id[:8]}"
    return f"{volume.name or volume.id[:8]}-{stamp:%Y%m%dT%H%M%SZ}"


def _after_cancelled_snapshots(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled snapshot run: its server is started again; snapshots already asked for are
    Cinder's to finish, and are named."""
    taken = ctx.state.get("snapshots", {})
    names = ", ".join(f"{t['id']} ({t.get('status', 'creating')})" for t in taken.values())
    return "; ".join([start_again_after_cancel(ctx), f"snapshots asked for: {names or 'none'}"])


@handler(
    "command.volume.snapshot",
    max_retries=3,
    min_backoff=2,
    max_backoff=30,
    time_limit=60,
    compensate=_after_cancelled_snapshots,
)
def snapshot_volumes(event: Envelope, ctx: RunContext) -> None:
    """Stop the server, snapshot each volume (force when in use), follow them to ``available``,
    start the server again — also when a snapshot failed."""
    order = read_order(SnapshotOrder, event, ctx)
    state = ctx.state
    if "volumes" not in state:
        try:
            plan = plan_snapshots(ctx.cloud, order, utcnow())
        except StackreflexError as exc:
            ctx.fail(str(exc))
        state.update(
            server={"id": plan.server.id, "name": plan.server.name} if plan.server else None,
            volumes=[asdict(v) for v in plan.volumes],
            names=plan.names,
            force=plan.force,
            snapshots={},
        )
        ctx.checkpoint()
    with_server_stopped(ctx, state["server"], order.stop, lambda: _take_snapshots(ctx, order))


def _take_snapshots(ctx: RunContext, order: SnapshotOrder) -> None:
    state, conn = ctx.state, ctx.cloud
    volumes = [VolumeInfo(**{**v, "server_ids": tuple(v["server_ids"])}) for v in state["volumes"]]
    snapshots = state["snapshots"]
    for volume in volumes:
        if volume.id in snapshots:
            continue
        name, force, started = state["names"][volume.id], state["force"][volume.id], utcnow()
        try:
            snapshot_id = find_snapshot(conn, volume.id, name) or create_snapshot(conn, volume, name, force=force)
        except CinderRefused as exc:
            ctx.record(
                "snapshot volume",
                target=volume.name or volume.id,
                started_at=started,
                status="failed",
                detail={"volume_id": volume.id, "force": force},
                error=str(exc),
            )
            raise HandlerFailed(str(exc)) from None
        snapshots[volume.id] = {"id": snapshot_id, "started": started.isoformat(), "force": force}
        ctx.checkpoint()  # started: a resumed run follows it instead of taking another

    def settled() -> bool:
        for volume in volumes:
            taken = snapshots[volume.id]
            if "status" in taken:
                continue
            status, size = snapshot_status(conn, taken["id"])
            if status not in ("available", "error"):
                continue
            taken.update(status=status, size=size)
            started = datetime.fromisoformat(taken["started"])
            ctx.record(
                "snapshot volume",
                target=volume.name or volume.id,
                started_at=started,
                status="succeeded" if status == "available" else "failed",
                detail={
                    "volume_id": volume.id,
                    "snapshot_id": taken["id"],
                    "size_gb": size,
                    "force": taken["force"],
                    "status": status,
                    "duration_s": round((utcnow() - started).total_seconds(), 3),
                },
                error=None if status == "available" else f"Cinder reports snapshot {taken['id']} {status}",
            )
            ctx.checkpoint()
        done = sum("status" in t for t in snapshots.values())
        note = f"{done}/{len(volumes)} snapshots settled"
        if note != state.get("reported"):
            ctx.progress(done, len(volumes), note)
            state["reported"] = note
        return done == len(volumes)

    ctx.wait(settled, waiting_for=f"{len(volumes)} snapshot(s) to become available", deadline=order.deadline)
    failed = [v for v in volumes if snapshots[v.id]["status"] != "available"]
    if failed:
        raise HandlerFailed(
            "snapshot failed for "
            + "; ".join(
                f"volume {v.label}: snapshot {snapshots[v.id]['id']} ended {snapshots[v.id]['status']}" for v in failed
            )
        )


class ServerImageOrder(BaseModel):
    """The data of ``command.server.image``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=255)
    stop: bool = True
    copy_to: list[str] = Field(default_factory=list)
    deadline: float = Field(default=COPY_DEADLINE, gt=0)


def _after_cancelled_image(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled server image run: its server is started again; an image asked for is Glance's to finish."""
    image = ctx.state.get("image")
    return "; ".join([start_again_after_cancel(ctx), f"image asked for: {image['id'] if image else 'none'}"])


@handler(
    "command.server.image",
    max_retries=3,
    min_backoff=2,
    max_backoff=30,
    time_limit=60,
    compensate=_after_cancelled_image,
)
def image_server(event: Envelope, ctx: RunContext) -> None:
    """Stop the server, create its image and wait until it is active, start the server again;
    then copy the image to the stores asked for."""
    order = read_order(ServerImageOrder, event, ctx)
    state = ctx.state
    if "server" not in state:
        try:
            server = find_server(ctx.cloud, order.server).server
        except StackreflexError as exc:
            ctx.fail(str(exc))
        state["server"] = {"id": server.id, "name": server.name}
        ctx.checkpoint()
    with_server_stopped(ctx, state["server"], order.stop, lambda: _make_image(ctx, order))
    if order.copy_to:
        copy_to_stores(ctx, state["image"]["id"], order.copy_to, deadline=order.deadline)


def _make_image(ctx: RunContext, order: ServerImageOrder) -> None:
    state, conn, server = ctx.state, ctx.cloud, ctx.state["server"]
    if "image" not in state:
        started = utcnow()
        if state.get("image_requested"):  # an earlier attempt asked; it may have been created
            try:
                image_id = find_image(conn, order.name).id
            except ImageNotFound:
                image_id = create_image(conn, server["id"], order.name)
        else:
            state["image_requested"] = started.isoformat()
            ctx.checkpoint()
            image_id = create_image(conn, server["id"], order.name)
        state["image"] = {"id": image_id, "started": started.isoformat()}
        ctx.checkpoint()
    image = state["image"]

    def settled() -> ImageStores | None:
        now = image_now(conn, image["id"])
        return now if now.status in IMAGE_SETTLED else None

    now = ctx.wait(
        settled, waiting_for=f"image {order.name} of {server['name']} to become active", deadline=order.deadline
    )
    started = datetime.fromisoformat(image["started"])
    ctx.record(
        "create image",
        target=server["name"],
        started_at=started,
        status="succeeded" if now.status == "active" else "failed",
        detail={
            "server_id": server["id"],
            "image_id": image["id"],
            "status": now.status,
            "stores": sorted(now.stores),
            "duration_s": round((utcnow() - started).total_seconds(), 3),
        },
        error=None if now.status == "active" else f"Glance reports image {image['id']} {now.status}",
    )
    if now.status != "active":
        raise HandlerFailed(f"image {order.name} ({image['id']}) of {server['name']} ended {now.status}")
