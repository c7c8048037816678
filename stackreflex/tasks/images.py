"""Glance with several stores: where an image is, and the copy-image import that puts it elsewhere.

Read as plain JSON: ``stores``, ``os_glance_importing_to_stores`` and ``os_glance_failed_import``
are comma-joined strings on the image, and the import answers 202 with no body or an HTML error.
"""

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from openstack import exceptions
from openstack.connection import Connection
from requests import Response

from ..core.errors import StackreflexError

#: The store a copy of every image must stay in.
CENTRAL = "central"
#: Image statuses after which nothing more happens on its own.
IMAGE_SETTLED = ("active", "killed", "deleted", "deactivated")


class ImageNotFound(StackreflexError):
    pass


class CopyRefused(StackreflexError):
    """Glance refused the copy-image import (unknown store, image not active…)."""


class ImageLocked(StackreflexError):
    """Another import holds the image's lock (409): try again later."""


def _split(value: Any) -> frozenset[str]:
    if isinstance(value, (list, tuple)):
        return frozenset(value)
    return frozenset(s.strip() for s in (value or "").split(",") if s.strip())


@dataclass(frozen=True)
class ImageStores:
    id: str
    name: str
    status: str
    stores: frozenset[str]
    importing: frozenset[str]
    failed: frozenset[str]

    @property
    def label(self) -> str:
        return f"{self.name or '(no name)'} ({self.id})"


def _image(body: dict[str, Any]) -> ImageStores:
    return ImageStores(
        body["id"],
        body.get("name") or "",
        body.get("status", ""),
        _split(body.get("stores")),
        _split(body.get("os_glance_importing_to_stores")),
        _split(body.get("os_glance_failed_import")),
    )


def image_now(conn: Connection, image_id: str) -> ImageStores:
    response = conn.image.get(f"/images/{quote(image_id, safe='')}")
    if response.status_code == 404:
        raise ImageNotFound(f"image {image_id} no longer exists")
    exceptions.raise_from_response(response)
    return _image(response.json())


def find_image(conn: Connection, key: str) -> ImageStores:
    """An image by id or exact name."""
    response = conn.image.get(f"/images/{quote(key, safe='')}")  # a name is one path segment
    if response.status_code == 200:
        return _image(response.json())
    listing = conn.image.get("/images", params={"name": key})
    exceptions.raise_from_response(listing)
    found = [i for i in listing.json().get("images", []) if i.get("name") == key]
    if not found:
        raise ImageNotFound(f"no image named or with id {key!r}")
    if len(found) > 1:
        raise ImageNotFound(f"{len(found)} images are named {key!r}: give its id ({', '.join(i['id'] for i in found)})")
    return _image(found[0])


def known_stores(conn: Connection) -> list[str]:
    return [s.id for s in conn.image.stores()]  # type: ignore[union-attr]  # stores are Glance v2's; the SDK types the proxy as v1 | v2


def check_stores(conn: Connection, stores: list[str]) -> list[str]:
    """The Glance stores, after checking ``stores`` are among them (a clear error otherwise)."""
    known = known_stores(conn)
    unknown = sorted(set(stores) - set(known))
    if unknown:
        raise StackreflexError(f"unknown Glance store(s) {', '.join(unknown)} (stores: {', '.join(known)})")
    return known


def _glance_message(response: Response) -> str:
    """The text of Glance's HTML (or JSON) error page, on one line."""
    text = re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<head>.*?</head>", "", response.text or ""))
    return " ".join(html.unescape(text).split()) or response.reason


def start_copy(conn: Connection, image: ImageStores, stores: list[str]) -> None:
    """Start the copy-image import of ``image`` to ``stores``; :class:`ImageLocked` when another
    import holds the image, :class:`CopyRefused` when Glance says no for good."""
    response = conn.image.post(
        f"/images/{image.id}/import",
        json={"method": {"name": "copy-image"}, "stores": sorted(stores), "all_stores_must_succeed": False},
    )
    if response.status_code == 202:
        return
    message = _glance_message(response)
    if response.status_code == 409:
        now = image_now(conn, image.id)
        if now.status == "active" and (now.importing or "import" in message.lower()):
            raise ImageLocked(f"another import holds {image.label}: {message}")
    if 400 <= response.status_code < 500:
        raise CopyRefused(f"Glance refused to copy {image.label} to {', '.join(sorted(stores))}: {message}")
    exceptions.raise_from_response(response)


def delete_image(conn: Connection, image_id: str) -> None:
    """Delete an image from Glance, every store's copy with it (one already gone is fine)."""
    response = conn.image.delete(f"/images/{quote(image_id, safe='')}")
    if response.status_code != 404:
        exceptions.raise_from_response(response)
