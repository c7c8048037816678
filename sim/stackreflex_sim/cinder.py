"""Cinder v3: volumes attached to servers, snapshots with the ``force`` rule for in-use volumes,
and the services TripleO runs (a scheduler per controller, one volume service under Pacemaker)."""

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .clock import SimClock, utcnow
from .faults import Faults
from .http import HttpError, Request, Response, Router, requested_microversion
from .keystone import project_id
from .scenario import Scenario

MAX_VERSION = "3.71"
#: The statuses a volume can be deleted in (cinder.volume.api.API.delete).
DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing")
#: From this microversion on, in-use volumes can be snapshotted without force.
FORCE_OPTIONAL_FROM = (3, 66)
#: Services show their cluster from 3.7 on, a volume service its backend's state from 3.49 on.
CLUSTER_SUPPORT, BACKEND_STATE_REPORT = (3, 7), (3, 49)
#: The volume service's host as TripleO names it: every controller runs it (one at a time, under
#: Pacemaker) as ``hostgroup``, with the Ceph backend ``tripleo_ceph``.
VOLUME_HOST = "hostgroup@tripleo_ceph"


def cinder_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") if moment else None


def cinder_error(error: HttpError) -> object:
    key = {400: "badRequest", 404: "itemNotFound", 409: "conflictingRequest"}.get(error.status, "computeFault")
    return {key: {"message": error.message, "code": error.status}}


def microversion(request: Request) -> tuple[int, int]:
    return requested_microversion(request, "volume", "3.0", MAX_VERSION)


def host_matches(host: str, wanted: str) -> bool:
    """Cinder's host filter: ``host`` also matches its backends (``host@*``) and pools (``host#*``),
    ``host@backend`` its pools."""
    if "#" in wanted:
        return host == wanted
    return host == wanted or host.startswith(wanted + "#") or ("@" not in wanted and host.startswith(wanted + "@"))


@dataclass(eq=False)
class Volume:
    id: str
    name: str
    project_id: str
    size: int
    server_id: str | None = None
    host: str | None = None
    zone: str = "nova"
    status: str = "available"
    created: datetime = field(default_factory=utcnow)
    image_id: str | None = None
    snapshot_id: str | None = None


@dataclass(eq=False)
class Snapshot:
    id: str
    name: str
    volume: Volume
    status: str = "creating"
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)


class Cinder:
    def __init__(self, scenario: Scenario, base_url: str, clock: SimClock, faults: Faults, nova, glance):
        self.scenario, self.base_url, self.clock, self.faults = scenario, base_url, clock, faults
        self.glance = glance
        self.project_id = project_id(scenario.project)
        self.lock = threading.RLock()
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        if scenario.volume_every:
            for n, server in enumerate(nova.servers.values()):
                for k in range(scenario.volumes_per_server if n % scenario.volume_every == 0 else 0):
                    suffix = f"-{k}" if k else ""
                    volume = Volume(
                        str(uuid.uuid5(uuid.NAMESPACE_DNS, f"vol-{server.id}{suffix}")),
                        f"{server.name}-data{suffix}",
                        server.project_id,
                        10,
                        server.id,
                        server.host,
                        status="in-use",
                    )
                    self.volumes[volume.id] = volume
                    server.volumes.append(volume.id)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/volume/v3/{self.project_id}"

    def routes(self, router: Router) -> None:
        base = "/volume/v3/{project}"
        router.add("GET", "/volume", self.versions, cinder_error, auth=False)
        router.add("GET", "/volume/v3", self.versions, cinder_error, auth=False)
        router.add("GET", base + "/os-services", self.list_services, cinder_error)
        router.add("GET", base + "/volumes/detail", self.list_volumes, cinder_error)
        router.add("GET", base + "/volumes", self.list_volumes, cinder_error)
        router.add("GET", base + "/volumes/{volume}", self.show_volume, cinder_error)
        router.add("POST", base + "/volumes", self.create_volume, cinder_error)
        router.add("POST", base + "/volumes/{volume}/action", self.volume_action, cinder_error)
        router.add("POST", base + "/snapshots", self.create_snapshot, cinder_error)
        router.add("GET", base + "/snapshots/detail", self.list_snapshots, cinder_error)
        router.add("GET", base + "/snapshots", self.list_snapshots, cinder_error)
        router.add("GET", base + "/snapshots/{snapshot}", self.show_snapshot, cinder_error)
        router.add("DELETE", base + "/volumes/{volume}", self.delete_volume, cinder_error)
        router.add("DELETE", base + "/snapshots/{snapshot}", self.delete_snapshot, cinder_error)

    def versions(self, request: Request) -> Response:
        return Response(
            200 if request.path.endswith("v3") else 300,
            {
                "versions": [
                    {
                        "id": "v3.0",
                        "status": "CURRENT",
                        "version": self.scenario.cinder_max_version,
                        "min_version": "3.0",
                        "updated": "2023-08-31T00:00:00Z",
                        "links": [{"rel": "self", "href": f"{self.base_url}/volume/v3/"}],
                        "media-types": [
                            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
                        ],
                    }
                ]
            },
        )

    def _headers(self, request: Request) -> dict:
        major, minor = microversion(request)
        return {"OpenStack-API-Version": f"volume {major}.{minor}", "Vary": "OpenStack-API-Version"}

    def _services(self) -> list[tuple[str, str]]:
        """(binary, host): a scheduler on every controller, named by its short host name."""
        controllers = [
            f"{self.scenario.stack}-{name}-{i}"
            for role in self.scenario.roles
            for name in [role.name.lower().replace("deployedserver", "")]
            if name.startswith("controller")
            for i in range(role.count)
        ]
        return [("cinder-scheduler", host) for host in controllers] + [("cinder-volume", VOLUME_HOST)]

    def list_services(self, request: Request) -> Response:
        version, now = microversion(request), cinder_time(utcnow())
        services = []
        for binary, host in self._services():
            if request.arg("binary") not in (None, binary) or (
                request.arg("host") is not None and not host_matches(host, request.arg("host"))
            ):
                continue
            service = {
                "binary": binary,
                "host": host,
                "zone": "nova",
                "status": "enabled",
                "state": "up",
                "updated_at": now,
            }
            if version >= BACKEND_STATE_REPORT and binary == "cinder-volume":
                service["backend_state"] = "up"
            if version >= CLUSTER_SUPPORT:
                service["cluster"] = None
            service["disabled_reason"] = None
            if binary == "cinder-volume":
                service.update(replication_status="disabled", active_backend_id=None, frozen=False)
            services.append(service)
        return Response(200, {"services": services}, self._headers(request))

    def _volume_body(self, volume: Volume) -> dict:
        attachments = (
            [
                {
                    "id": volume.id,
                    "attachment_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"att-{volume.id}")),
                    "volume_id": volume.id,
                    "server_id": volume.server_id,
                    "host_name": volume.host,
                    "device": "/dev/vdb",
                    "attached_at": cinder_time(volume.created),
                }
            ]
            if volume.server_id
            else []
        )
        return {
            "id": volume.id,
            "name": volume.name,
            "status": volume.status,
            "size": volume.size,
            "availability_zone": volume.zone,
            "attachments": attachments,
            "bootable": "false",
            "multiattach": False,
            "volume_type": "__DEFAULT__",
            "encrypted": False,
            "metadata": {},
            "description": None,
            "snapshot_id": volume.snapshot_id,
            "source_volid": None,
            "user_id": "sim-user",
            **({"volume_image_metadata": {"image_id": volume.image_id}} if volume.image_id else {}),
            "os-vol-tenant-attr:tenant_id": volume.project_id,
            "created_at": cinder_time(volume.created),
            "updated_at": cinder_time(volume.created),
            "links": [{"rel": "self", "href": f"{self.endpoint}/volumes/{volume.id}"}],
        }

    def _volume(self, key: str) -> Volume:
        volume = self.volumes.get(key) or next((v for v in self.volumes.values() if v.name == key), None)
        if volume is None:
            raise HttpError(404, "Not Found", f"Volume {key} could not be found.")
        return volume

    def list_volumes(self, request: Request) -> Response:
        all_projects = "all_tenants" in request.query
        with self.lock:
            found = [v for v in self.volumes.values() if all_projects or v.project_id == self.project_id]
            return Response(200, {"volumes": [self._volume_body(v) for v in found]}, self._headers(request))

    def show_volume(self, request: Request) -> Response:
        with self.lock:
            return Response(
                200, {"volume": self._volume_body(self._volume(request.match["volume"]))}, self._headers(request)
            )

    def create_volume(self, request: Request) -> Response:
        """A new volume, empty, from an image or from a snapshot, in an availability zone.

        A volume made from an image at an edge site clones the image from the site's own
        Glance store: when the image is not there, the volume ends in ``error``.
        """
        body = request.json().get("volume") or {}
        zone = body.get("availability_zone") or "nova"
        with self.lock:
            if zone not in self.scenario.volume_zones:
                raise HttpError(400, "Bad Request", f"Availability zone '{zone}' is invalid.")
            snapshot = None
            if body.get("snapshot_id"):
                snapshot = self.snapshots.get(body["snapshot_id"])
                if snapshot is None:
                    raise HttpError(404, "Not Found", f"Snapshot {body['snapshot_id']} could not be found.")
                if snapshot.status != "available":
                    raise HttpError(
                        400,
                        "Bad Request",
                        "Invalid snapshot: Originating snapshot status must be "
                        f"one of 'available' values, not {snapshot.status}.",
                    )
            image_id = body.get("imageRef")
            image = self.glance.images.get(image_id) if image_id else None
            if image_id and (image is None or image.status != "active"):
                raise HttpError(400, "Bad Request", "Invalid image identifier or unable to access requested image.")
            size = body.get("size") or (snapshot.volume.size if snapshot else None)
            if not isinstance(size, int) or size < 1:
                raise HttpError(
                    400,
                    "Bad Request",
                    f"Invalid input received: Volume size '{size}' must be an integer and greater than 0.",
                )
            volume = Volume(
                str(uuid.uuid4()),
                body.get("name") or "",
                self.project_id,
                size,
                zone=zone,
                status="creating",
                image_id=image_id,
                snapshot_id=snapshot.id if snapshot else None,
            )
            self.volumes[volume.id] = volume
        self.clock.later(self.scenario.volume_create_time, self._created, volume)
        return Response(202, {"volume": self._volume_body(volume)}, self._headers(request))

    def _created(self, volume: Volume) -> None:
        with self.lock:
            store = self.glance.site_store(volume.zone)
            image = self.glance.images.get(volume.image_id) if volume.image_id else None
            missing = image is not None and store is not None and store not in image.stores
            volume.status = "error" if missing else "available"

    def volume_action(self, request: Request) -> Response:
        body = request.json()
        if len(body) != 1 or "os-volume_upload_image" not in body:
            raise HttpError(400, "Bad Request", f"There is no such action: {', '.join(body) or 'none'}")
        args = body["os-volume_upload_image"] or {}
        force = str(args.get("force", False)).lower() in ("true", "1", "yes")
        with self.lock:
            volume = self._volume(request.match["volume"])
            if not args.get("image_name"):
                raise HttpError(400, "Bad Request", "Invalid input received: image_name is required.")
            if volume.status not in ("available", "in-use") or (volume.status == "in-use" and not force):
                raise HttpError(
                    400,
                    "Bad Request",
                    f"Invalid volume: Volume {volume.id} status must be "
                    f"available, but current status is: {volume.status}.",
                )
            image = self.glance.uploaded_from_volume(volume, args["image_name"], self.glance.site_store(volume.zone))
            previous, volume.status = volume.status, "uploading"
        self.clock.later(self.scenario.image_upload_time, self._uploaded, volume, previous)
        return Response(
            202,
            {
                "os-volume_upload_image": {
                    "id": volume.id,
                    "status": "uploading",
                    "size": volume.size,
                    "image_id": image.id,
                    "image_name": image.name,
                    "disk_format": args.get("disk_format") or "raw",
                    "container_format": args.get("container_format") or "bare",
                    "volume_type": None,
                    "display_description": None,
                    "updated_at": cinder_time(utcnow()),
                }
            },
            self._headers(request),
        )

    def _uploaded(self, volume: Volume, previous: str) -> None:
        with self.lock:
            volume.status = previous

    def _snapshot_body(self, snapshot: Snapshot) -> dict:
        return {
            "id": snapshot.id,
            "name": snapshot.name,
            "status": snapshot.status,
            "volume_id": snapshot.volume.id,
            "size": snapshot.volume.size,
            "description": None,
            "metadata": {},
            "created_at": cinder_time(snapshot.created),
            "updated_at": cinder_time(snapshot.updated),
            "progress": "100%" if snapshot.status == "available" else "0%",
            "os-extended-snapshot-attributes:project_id": snapshot.volume.project_id,
        }

    def create_snapshot(self, request: Request) -> Response:
        body = request.json().get("snapshot") or {}
        force = str(body.get("force", False)).lower() in ("true", "1", "yes")
        with self.lock:
            volume = self._volume(body.get("volume_id", ""))
            if volume.status == "in-use" and not force and microversion(request) < FORCE_OPTIONAL_FROM:
                raise HttpError(
                    400,
                    "Bad Request",
                    f"Invalid volume: Volume {volume.id} status must be available, but current status is: in-use.",
                )
            if volume.status not in ("available", "in-use"):
                raise HttpError(
                    400,
                    "Bad Request",
                    f"Invalid volume: Volume {volume.id} status must be "
                    f"available or in-use, but current status is: {volume.status}.",
                )
            snapshot = Snapshot(str(uuid.uuid4()), body.get("name") or "", volume)
            self.snapshots[snapshot.id] = snapshot
        self.clock.later(self.scenario.snapshot_time, self._settle, snapshot)
        return Response(202, {"snapshot": self._snapshot_body(snapshot)}, self._headers(request))

    def _settle(self, snapshot: Snapshot) -> None:
        with self.lock:
            failed = self.faults.strike("snapshot_error", snapshot.volume.id, snapshot.volume.name)
            snapshot.status, snapshot.updated = ("error" if failed else "available"), utcnow()

    def list_snapshots(self, request: Request) -> Response:
        with self.lock:
            found = [s for s in self.snapshots.values() if request.arg("volume_id") in (None, s.volume.id)]
            return Response(200, {"snapshots": [self._snapshot_body(s) for s in found]}, self._headers(request))

    def delete_volume(self, request: Request) -> Response:
        """202, then ``deleting`` until it is gone; refused (400, Cinder's words) while attached,
        busy or with snapshots."""
        with self.lock:
            volume = self._volume(request.match["volume"])
            has_snapshots = any(s.volume is volume for s in self.snapshots.values())
            if volume.status not in DELETABLE or volume.server_id or has_snapshots:
                raise HttpError(
                    400,
                    "Bad Request",
                    "Invalid volume: Volume status must be available or error or "
                    "error_restoring or error_extending or error_managing and must not be migrating, "
                    "attached, belong to a group, have snapshots, awaiting a transfer, or be "
                    "disassociated from snapshots after volume transfer.",
                )
            volume.status = "deleting"
        self.clock.later(self.scenario.volume_create_time, self._forget, self.volumes, volume.id)
        return Response(202, None, self._headers(request))

    def delete_snapshot(self, request: Request) -> Response:
        with self.lock:
            snapshot = self.snapshots.get(request.match["snapshot"])
            if snapshot is None:
                raise HttpError(404, "Not Found", f"Snapshot {request.match['snapshot']} could not be found.")
            if snapshot.status not in ("available", "error"):
                raise HttpError(
                    400, "Bad Request", "Invalid snapshot: Volume Snapshot status must be available or error."
                )
            snapshot.status, snapshot.updated = "deleting", utcnow()
        self.clock.later(self.scenario.volume_create_time, self._forget, self.snapshots, snapshot.id)
        return Response(202, None, self._headers(request))

    def _forget(self, where: dict, key: str) -> None:
        with self.lock:
            where.pop(key, None)

    def show_snapshot(self, request: Request) -> Response:
        with self.lock:
            snapshot = self.snapshots.get(request.match["snapshot"])
            if snapshot is None:
                raise HttpError(404, "Not Found", f"Snapshot {request.match['snapshot']} could not be found.")
            return Response(200, {"snapshot": self._snapshot_body(snapshot)}, self._headers(request))
