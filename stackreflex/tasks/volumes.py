"""Cinder: volumes and their snapshots (force for in-use volumes), volumes from images or
snapshots in an availability zone, and volumes uploaded to Glance."""

from dataclasses import dataclass
from typing import Any

from openstack import exceptions
from openstack.connection import Connection

from ..core.errors import StackreflexError

#: Volume and snapshot statuses that are over, one way or the other.
SETTLED = ("available", "in-use", "error")


class VolumeNotFound(StackreflexError):
    pass


class CinderRefused(StackreflexError):
    """Cinder answered 400: the request cannot succeed as it is (retrying will not help)."""


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    name: str
    size: int
    status: str
    zone: str
    #: The servers it is attached to.
    server_ids: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name or '(no name)'} ({self.id})"


def _info(v: Any) -> VolumeInfo:
    return VolumeInfo(
        v.id,
        v.name or "",
        v.size or 0,
        v.status,
        v.availability_zone or "",
        tuple(a.get("server_id") for a in v.attachments or []),
    )


def find_volume(conn: Connection, key: str) -> VolumeInfo:
    """A volume by id or exact name, in any project."""
    try:
        return _info(conn.block_storage.find_volume(key, ignore_missing=False, all_projects=True))
    except exceptions.NotFoundException:
        raise VolumeNotFound(f"no volume named or with id {key!r}") from None
    except exceptions.DuplicateResource:
        raise VolumeNotFound(f"more than one volume is named {key!r}: give its id") from None


def volume_now(conn: Connection, volume_id: str) -> VolumeInfo:
    return _info(conn.block_storage.get_volume(volume_id))


def _refusal(exc: exceptions.HttpException, what: str) -> CinderRefused:
    return CinderRefused(f"Cinder refused {what}: {(exc.details or str(exc)).strip()}")


def create_snapshot(conn: Connection, volume: VolumeInfo, name: str, *, force: bool) -> str:
    """Start a snapshot; an in-use volume needs ``force`` below microversion 3.66."""
    try:
        return conn.block_storage.create_snapshot(volume_id=volume.id, name=name, is_forced=force).id
    except exceptions.BadRequestException as exc:
        refusal = _refusal(exc, f"the snapshot of {volume.label}")
        if volume.status == "in-use" and not force:
            refusal.args = (f"{refusal} (an attached volume is snapshotted only with force)",)
        raise refusal from None


def find_snapshot(conn: Connection, volume_id: str, name: str) -> str | None:
    """A snapshot of ``volume_id`` named ``name``: one an earlier attempt started."""
    return next((s.id for s in conn.block_storage.snapshots(volume_id=volume_id) if s.name == name), None)


def snapshot_status(conn: Connection, snapshot_id: str) -> tuple[str, int]:
    snapshot = conn.block_storage.get_snapshot(snapshot_id)
    return snapshot.status, snapshot.size or 0


def find_volume_named(conn: Connection, name: str) -> VolumeInfo | None:
    return next((_info(v) for v in conn.block_storage.volumes(name=name) if v.name == name), None)


def create_volume(
    conn: Connection,
    name: str,
    *,
    zone: str,
    size: int | None = None,
    image_id: str | None = None,
    snapshot_id: str | None = None,
) -> VolumeInfo:
    attrs = {"name": name, "availability_zone": zone, "size": size}
    if image_id:
        attrs["image_id"] = image_id
    if snapshot_id:
        attrs["snapshot_id"] = snapshot_id
    try:
        return _info(conn.block_storage.create_volume(**{k: v for k, v in attrs.items() if v is not None}))
    except exceptions.BadRequestException as exc:
        raise _refusal(exc, f"to create volume {name} in zone {zone}") from None


def upload_to_image(conn: Connection, volume: VolumeInfo, image_name: str) -> str:
    """os-volume_upload_image; the image is queued at once and active once uploaded."""
    try:
        answer = conn.block_storage.upload_volume_to_image(
            volume.id, image_name, force=volume.status == "in-use", disk_format="raw", container_format="bare"
        )
    except exceptions.BadRequestException as exc:
        raise _refusal(exc, f"to upload {volume.label} to an image") from None
    image_id: str = answer["image_id"]
    return image_id


def delete_volume(conn: Connection, volume_id: str) -> None:
    """Ask Cinder to delete a volume (one already gone is fine); a refusal carries Cinder's reason."""
    try:
        conn.block_storage.delete_volume(volume_id, ignore_missing=True)
    except exceptions.BadRequestException as exc:
        raise _refusal(exc, f"to delete volume {volume_id}") from None


def delete_snapshot(conn: Connection, snapshot_id: str) -> None:
    try:
        conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
    except exceptions.BadRequestException as exc:
        raise _refusal(exc, f"to delete snapshot {snapshot_id}") from None


def deletion(conn: Connection, kind: str, item_id: str) -> str | None:
    """Where the deletion of a volume or snapshot stands: ``gone``, ``error_deleting``, or None
    while Cinder is at it."""
    get = conn.block_storage.get_volume if kind == "volume" else conn.block_storage.get_snapshot
    try:
        status = get(item_id).status
    except exceptions.NotFoundException:
        return "gone"
    return status if status == "error_deleting" else None
