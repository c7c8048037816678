"""Glance v2 with multiple stores: images with ``stores``, ``os_glance_importing_to_stores`` and
``os_glance_failed_import`` (sorted comma-joined strings), and the copy-image import with its
per-image lock and per-store outcomes."""

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .clock import SimClock, utcnow
from .faults import Faults
from .http import HttpError, Request, Response, Router
from .keystone import project_id
from .scenario import Scenario

PREFIX = "/image"


def glance_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def glance_error(error: HttpError) -> object:
    return (
        f"<html>\n <head>\n  <title>{error.status} {error.title}</title>\n </head>\n <body>\n"
        f"  <h1>{error.status} {error.title}</h1>\n  {error.message}<br /><br />\n\n\n\n </body>\n</html>"
    ).encode()


def _joined(stores: set[str]) -> str:
    return ",".join(sorted(stores))


@dataclass(eq=False)
class Image:
    id: str
    name: str
    owner: str
    status: str = "active"
    size: int = 16338944
    stores: set[str] = field(default_factory=set)
    importing: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    properties: dict = field(default_factory=dict)
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)


class Glance:
    def __init__(self, scenario: Scenario, base_url: str, clock: SimClock, faults: Faults):
        self.scenario, self.base_url, self.clock, self.faults = scenario, base_url, clock, faults
        self.lock = threading.RLock()
        self.default_store = scenario.stores[0] if scenario.stores else "central"
        self.images: dict[str, Image] = {}
        for name in scenario.images:
            image = Image(
                str(uuid.uuid5(uuid.NAMESPACE_DNS, f"image-{name}")),
                name,
                project_id(scenario.project),
                stores={self.default_store},
            )
            self.images[image.id] = image

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}{PREFIX}"

    def routes(self, router: Router) -> None:
        # The endpoint's root answers 300 Multiple Choices, /versions answers 200 (python-glanceclient
        # asks /versions and refuses a 300 there), both with the list of versions.
        router.add("GET", PREFIX, lambda request: self.versions(request, 300), glance_error, auth=False)
        router.add("GET", PREFIX + "/versions", lambda request: self.versions(request, 200), glance_error, auth=False)
        router.add("GET", PREFIX + "/v2/info/import", self.import_info, glance_error)
        router.add("GET", PREFIX + "/v2/schemas/image", self.image_schema, glance_error)
        router.add("GET", PREFIX + "/v2/info/stores", self.stores, glance_error)
        router.add("GET", PREFIX + "/v2/images", self.list_images, glance_error)
        router.add("GET", PREFIX + "/v2/images/{image}", self.show_image, glance_error)
        router.add("POST", PREFIX + "/v2/images/{image}/import", self.import_image, glance_error)
        router.add("DELETE", PREFIX + "/v2/images/{image}", self.delete_image, glance_error)

    def versions(self, request: Request, status: int) -> Response:
        return Response(
            status,
            {
                "versions": [
                    {
                        "id": f"v2.{minor}",
                        "status": "CURRENT" if minor == 16 else "SUPPORTED",
                        "links": [{"rel": "self", "href": f"{self.endpoint}/v2/"}],
                    }
                    for minor in range(16, -1, -1)
                ]
            },
        )

    def image_schema(self, request: Request) -> Response:
        """``/v2/schemas/image``: the properties of an image, as Glance describes them (python-glanceclient
        validates the images it is sent against it, and gives up on v2 without it)."""

        def nullable(kind: str, **extra) -> dict:
            return {"type": ["null", kind], **extra}

        properties = {
            "id": {
                "type": "string",
                "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
            },
            "name": nullable("string", maxLength=255),
            "status": {
                "type": "string",
                "enum": [
                    "queued",
                    "saving",
                    "active",
                    "killed",
                    "deleted",
                    "uploading",
                    "importing",
                    "pending_delete",
                    "deactivated",
                ],
            },
            "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"]},
            "protected": {"type": "boolean"},
            "os_hidden": {"type": "boolean"},
            "checksum": nullable("string", maxLength=32),
            "os_hash_algo": nullable("string", maxLength=64),
            "os_hash_value": nullable("string", maxLength=128),
            "owner": nullable("string", maxLength=255),
            "size": nullable("integer"),
            "virtual_size": nullable("integer"),
            "container_format": nullable("string"),
            "disk_format": nullable("string"),
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
            "direct_url": {"type": "string"},
            "min_ram": {"type": "integer"},
            "min_disk": {"type": "integer"},
            "self": {"type": "string"},
            "file": {"type": "string"},
            "stores": {"type": "string"},
            "schema": {"type": "string"},
            "locations": {"type": "array"},
        }
        return Response(
            200,
            {
                "name": "image",
                "properties": properties,
                "additionalProperties": {"type": "string"},
                "links": [
                    {"rel": "self", "href": "{self}"},
                    {"rel": "enclosure", "href": "{file}"},
                    {"rel": "describedby", "href": "{schema}"},
                ],
            },
        )

    def import_info(self, request: Request) -> Response:
        """``/v2/info/import``: the import methods enabled (here copy-image is the one implemented)."""
        return Response(
            200,
            {"import-methods": {"description": "Import methods available.", "type": "array", "value": ["copy-image"]}},
        )

    def stores(self, request: Request) -> Response:
        return Response(
            200,
            {
                "stores": [
                    {"id": s, "description": f"{s} store", **({"default": True} if s == self.default_store else {})}
                    for s in self.scenario.stores
                ]
            },
        )

    def _body(self, image: Image) -> dict:
        return {
            "id": image.id,
            "name": image.name,
            "status": image.status,
            "owner": image.owner,
            "visibility": "shared",
            "protected": False,
            "os_hidden": False,
            "size": image.size,
            "virtual_size": None,
            "disk_format": "qcow2",
            "container_format": "bare",
            "checksum": hashlib.md5(image.id.encode()).hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": hashlib.sha512(image.id.encode()).hexdigest(),
            "min_disk": 0,
            "min_ram": 0,
            "tags": [],
            "created_at": glance_time(image.created),
            "updated_at": glance_time(image.updated),
            "stores": _joined(image.stores),
            "os_glance_importing_to_stores": _joined(image.importing),
            "os_glance_failed_import": _joined(image.failed),
            **image.properties,
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }

    def _image(self, key: str) -> Image:
        image = self.images.get(key)
        if image is None:
            raise HttpError(404, "Not Found", f"No image found with ID {key}")
        return image

    def list_images(self, request: Request) -> Response:
        with self.lock:
            found = [i for i in self.images.values() if request.arg("name") in (None, i.name)]
            return Response(
                200, {"images": [self._body(i) for i in found], "schema": "/v2/schemas/images", "first": "/v2/images"}
            )

    def show_image(self, request: Request) -> Response:
        with self.lock:
            return Response(200, self._body(self._image(request.match["image"])))

    def delete_image(self, request: Request) -> Response:
        """204: the image and every store's copy of it are gone at once, as Glance deletes them."""
        with self.lock:
            image = self._image(request.match["image"])
            del self.images[image.id]
        return Response(204, None)

    def snapshot_of(self, server, name: str, metadata: dict) -> Image:
        """createImage: the image exists at once (queued), then becomes active in the default store."""
        with self.lock:
            image = Image(
                str(uuid.uuid4()),
                name,
                server.project_id,
                status="queued",
                properties={"image_type": "snapshot", "instance_uuid": server.id, **metadata},
            )
            self.images[image.id] = image
        self.clock.later(self.scenario.snapshot_time, self._activate, image)
        return image

    def uploaded_from_volume(self, volume, name: str, store: str | None) -> Image:
        """os-volume_upload_image: the image exists at once (queued), then becomes active in the
        store of the volume's site (Cinder at an edge site writes to its local Glance store)."""
        with self.lock:
            image = Image(
                str(uuid.uuid4()),
                name,
                volume.project_id,
                status="queued",
                size=volume.size * 1024**3,
                properties={"image_type": "volume"},
            )
            self.images[image.id] = image
        self.clock.later(self.scenario.image_upload_time, self._activate, image, store)
        return image

    def _activate(self, image: Image, store: str | None = None) -> None:
        with self.lock:
            image.status, image.stores, image.updated = "active", {store or self.default_store}, utcnow()

    def site_store(self, zone: str) -> str | None:
        """The Glance store of an availability zone's site: the store of the same name, if any."""
        return zone if zone in self.scenario.stores else None

    def import_image(self, request: Request) -> Response:
        body = request.json()
        method = (body.get("method") or {}).get("name")
        with self.lock:
            image = self._image(request.match["image"])
            if method != "copy-image":
                raise HttpError(400, "Bad Request", f"Import method {method} is not supported here")
            if image.status != "active":
                raise HttpError(409, "Conflict", f"Image status {image.status} is not valid for copy-image import")
            if image.importing:  # another import holds the image's lock
                raise HttpError(
                    409,
                    "Conflict",
                    f"Image {image.id} could not be found after upload. "
                    "The image may have been deleted during the upload, or "
                    "another import is in progress",
                )
            targets = (
                set(self.scenario.stores) - image.stores if body.get("all_stores") else set(body.get("stores") or [])
            )
            unknown = targets - set(self.scenario.stores)
            if unknown:
                raise HttpError(409, "Conflict", f"Unknown store(s) {_joined(unknown)}")
            already = targets & image.stores
            if already:
                raise HttpError(400, "Bad Request", f"Image is already present at store '{_joined(already)}'")
            if not targets:
                raise HttpError(400, "Bad Request", "No stores to copy to")
            image.importing |= targets
            image.failed -= targets
            image.updated = utcnow()
            for n, store in enumerate(sorted(targets), 1):
                self.clock.later(self.scenario.image_copy_time * n / len(targets), self._copied, image, store)
        return Response(202, None)

    def _copied(self, image: Image, store: str) -> None:
        with self.lock:
            image.importing.discard(store)
            if self.faults.strike("store_copy_failure", store):
                image.failed.add(store)
            else:
                image.stores.add(store)
            image.updated = utcnow()
