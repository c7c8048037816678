"""Reading a deployment from Heat: deployed servers, their metadata URLs, the event stream."""

import re
from dataclasses import dataclass

from openstack import exceptions

from ..errors import StackreflexError
from .agents import AgentSource

#: Deployed servers are recognised by type: templates name them freely.
DEPLOYED_SERVER_TYPE = "OS::Heat::DeployedServer"
#: How deep TripleO nests servers below the overcloud stack.
NESTED_DEPTH = 5
#: A TripleO member's server stack: overcloud-<Role>-<r>-<index>-<r>-<Role>-<r>
TRIPLEO_SERVER_STACK = re.compile(
    r"^(?P<root>.+?)-(?P<role>[A-Za-z0-9_]+)-[a-z0-9]{12}-(?P<index>\d+)-[a-z0-9]{12}-(?P=role)-[a-z0-9]{12}$")


class HeatError(StackreflexError):
    """Heat refused or failed a request stackreflex needed."""


@dataclass(frozen=True)
class DeployedServer:
    """A deployed-server resource and where it sits in the stack."""

    stack_name: str      # the nested stack that owns it
    stack_id: str
    resource_name: str
    physical_id: str
    status: str
    role: str | None
    index: int | None

    @property
    def path(self) -> str:
        return f"{self.stack_name}/{self.resource_name}"

    @property
    def label(self) -> str:
        return f"{self.role}[{self.index}]" if self.role is not None else self.path


def role_and_index(stack_name: str) -> tuple[str | None, int | None]:
    match = TRIPLEO_SERVER_STACK.match(stack_name)
    return (match["role"], int(match["index"])) if match else (None, None)


def _json(response, what: str) -> dict:
    if response.status_code >= 400:
        raise HeatError(f"Heat refused {what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def find_stack(conn, stack: str):
    try:
        return conn.orchestration.find_stack(stack, ignore_missing=False)
    except exceptions.NotFoundException:
        raise HeatError(f"stack {stack} not found in Heat") from None


def _owner(resource: dict) -> tuple[str, str]:
    href = next(link["href"] for link in resource["links"] if link["rel"] == "stack")
    name, stack_id = href.rstrip("/").rsplit("/", 2)[-2:]
    return name, stack_id


def deployed_servers(conn, stack: str) -> list[DeployedServer]:
    """Every deployed-server resource below ``stack``, with its TripleO role and index when it has them."""
    top = find_stack(conn, stack)
    body = _json(conn.orchestration.get(f"/stacks/{top.name}/{top.id}/resources",
                                        params={"nested_depth": NESTED_DEPTH, "type": DEPLOYED_SERVER_TYPE}),
                 f"the resource list of {stack}")
    found = []
    for r in body["resources"]:
        owner, owner_id = _owner(r)
        role, index = role_and_index(owner)
        found.append(DeployedServer(owner, owner_id, r["resource_name"], r["physical_resource_id"],
                                    r["resource_status"], role, index))
    return sorted(found, key=lambda s: (s.role or "", s.index if s.index is not None else -1, s.path))


def agent_source(conn, server: DeployedServer) -> AgentSource | None:
    """Where the server's agent must poll, from ``.["os-collect-config"]`` of its metadata: the
    ``request`` collector's URL or the ``heat`` collector's credentials (None if not there yet)."""
    body = _json(conn.orchestration.get(
        f"/stacks/{server.stack_name}/{server.stack_id}/resources/{server.resource_name}/metadata"),
        f"the metadata of {server.path}")
    return AgentSource.from_metadata((body.get("metadata") or {}).get("os-collect-config") or {})


def resource_type(conn, stack_name: str, stack_id: str, resource_name: str) -> str | None:
    response = conn.orchestration.get(f"/stacks/{stack_name}/{stack_id}/resources/{resource_name}")
    return response.json()["resource"]["resource_type"] if response.status_code == 200 else None


def events_after(conn, stack_name: str, stack_id: str, marker: str | None) -> list[dict]:
    """Events of the stack and its nested stacks after ``marker``, oldest first."""
    params = {"nested_depth": NESTED_DEPTH, "sort_dir": "asc"}
    if marker:
        params["marker"] = marker
    return _json(conn.orchestration.get(f"/stacks/{stack_name}/{stack_id}/events", params=params),
                 f"the events of {stack_name}")["events"]
