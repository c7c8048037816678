"""Nova for quiesced snapshots: find a server, stop it, start it, image it."""

from dataclasses import dataclass
from urllib.parse import quote

from openstack import exceptions
from openstack.connection import Connection

from ..core.errors import StackreflexError
from .compute import HostServer, server_now


class ServerNotFound(StackreflexError):
    """No server by that name or id, or more than one by that name."""


@dataclass(frozen=True)
class ServerVolumes:
    server: HostServer
    #: Ids of the attached volumes, in Nova's order.
    volume_ids: list[str]


def find_server(conn: Connection, key: str) -> ServerVolumes:
    """The server ``key`` (id or exact name, all projects) and its attached volumes."""
    response = conn.compute.get(f"/servers/{quote(key, safe='')}")  # a name is one path segment
    if response.status_code == 200:
        body = response.json()["server"]
    else:
        if response.status_code != 404:
            exceptions.raise_from_response(response)
        listing = conn.compute.get("/servers/detail", params={"all_tenants": "True", "name": key})
        exceptions.raise_from_response(listing)
        found = [s for s in listing.json()["servers"] if s.get("name") == key]
        if not found:
            raise ServerNotFound(f"no server named or with id {key!r} (all projects)")
        if len(found) > 1:
            raise ServerNotFound(
                f"{len(found)} servers are named {key!r}: give its id ({', '.join(s['id'] for s in found)})"
            )
        body = found[0]
    server = HostServer(
        body["id"],
        body.get("name", ""),
        body.get("tenant_id", ""),
        body.get("status", ""),
        body.get("OS-EXT-STS:task_state"),
        body.get("OS-EXT-SRV-ATTR:host"),
    )
    return ServerVolumes(server, [v["id"] for v in body.get("os-extended-volumes:volumes_attached", [])])


def stop_server(conn: Connection, server_id: str) -> None:
    conn.compute.stop_server(server_id)


def start_server(conn: Connection, server_id: str) -> None:
    conn.compute.start_server(server_id)


def create_image(conn: Connection, server_id: str, name: str, metadata: dict[str, str] | None = None) -> str:
    """createImage; the image exists at once (queued) and becomes active later."""
    image = conn.compute.create_server_image(server_id, name=name, metadata=metadata or {}, wait=False)
    return image.id


def power_state(conn: Connection, server_id: str) -> HostServer:
    server = server_now(conn, server_id)
    if server is None:
        raise StackreflexError(f"server {server_id} was deleted")
    return server
