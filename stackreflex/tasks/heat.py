"""Reading a deployment from Heat: deployed servers, where their agents poll, the software
deployments that wait for them, the event stream.

Every name that goes into a Heat API path (a stack's name or id, a resource's name, whether an
event or Heat itself gave it) is quoted as one path segment: a ``/``, ``?``, ``#`` or space in it
stays part of the name instead of addressing another resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from ..core.errors import StackreflexError
from .agents import AgentSource

if TYPE_CHECKING:
    from openstack.connection import Connection
    from requests import Response

#: Deployed servers are recognised by type: templates name them freely.
DEPLOYED_SERVER_TYPE = "OS::Heat::DeployedServer"
#: What holds a TripleO role's members: the group's resource is named by the role, each member by its index.
ROLE_GROUP_TYPE = "OS::Heat::ResourceGroup"
#: What waits for a deployed server's agent: Heat's software deployments (TripleO's alias among them).
DEPLOYMENT_TYPES = (
    "OS::Heat::SoftwareDeployment",
    "OS::Heat::StructuredDeployment",
    "OS::Heat::SoftwareDeploymentGroup",
    "OS::Heat::StructuredDeploymentGroup",
    "OS::Heat::SoftwareDeployments",
    "OS::Heat::StructuredDeployments",
    "OS::TripleO::SoftwareDeployment",
)
#: How deep TripleO nests servers below the overcloud stack.
NESTED_DEPTH = 5
#: How many levels of Heat's nesting name a TripleO member: the server resource (in the member
#: stack), the member (named by its index, in the role's group stack), the group (named by the role).
MEMBER_LEVELS = 3


class HeatError(StackreflexError):
    """Heat refused or failed a request stackreflex needed."""


class NotInHeat(HeatError):
    """Heat has no such stack or resource (HTTP 404): asking again will not make it exist.
    ``explanation`` is Heat's own word for it, on one line."""

    def __init__(self, message: str, explanation: str = ""):
        super().__init__(message)
        self.explanation = explanation


class NotADeployedServer(HeatError):
    """The resource exists in Heat, as another type than a deployed server."""

    def __init__(self, message: str, resource_type: str):
        super().__init__(message)
        self.resource_type = resource_type


@dataclass(frozen=True)
class DeployedServer:
    """A deployed-server resource and where it sits in the stack."""

    stack_name: str  # the nested stack that owns it
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


@dataclass(frozen=True)
class Stack:
    """A stack as Heat shows it."""

    name: str
    id: str
    status: str
    parent: str | None = None


def segment(value: object, what: str) -> str:
    """``value`` as one path segment of a Heat API URL, quoted whole; an empty one is refused
    (``/stacks//x`` would address another resource)."""
    text = "" if value is None else str(value)
    if not text:
        raise HeatError(f"{what} is empty: no Heat API path can name it")
    return quote(text, safe="")


def stack_path(stack_name: str, stack_id: str) -> str:
    return f"/stacks/{segment(stack_name, 'the stack name')}/{segment(stack_id, 'the stack id')}"


def resource_path(stack_name: str, stack_id: str, resource_name: str) -> str:
    return f"{stack_path(stack_name, stack_id)}/resources/{segment(resource_name, 'the resource name')}"


def _json(response: Response, what: str) -> dict[str, Any]:
    if response.status_code == 404:
        explanation = _explanation(response)
        raise NotInHeat(f"Heat has no {what.removeprefix('the ')}: {explanation}", explanation)
    if response.status_code >= 400:
        raise HeatError(f"Heat refused {what}: HTTP {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _explanation(response: Response) -> str:
    """Heat's own words for an error, on one line."""
    try:
        body = response.json()
        text = body.get("explanation") or (body.get("error") or {}).get("message") or ""
    except (ValueError, AttributeError):
        text = ""
    text = " ".join(str(text or response.text[:300]).split())
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def find_stack(conn: Connection, stack: str) -> Stack:
    """The stack named ``stack`` (a name or an id), as Heat finds it."""
    try:
        body = _json(conn.orchestration.get(f"/stacks/{segment(stack, 'the stack name')}"), f"the stack {stack}")
    except NotInHeat as exc:
        raise NotInHeat(f"stack {stack} not found in Heat", exc.explanation) from None
    shown = body["stack"]
    if shown["stack_status"] in ("DELETE_COMPLETE", "ADOPT_COMPLETE"):
        raise NotInHeat(f"stack {stack} not found in Heat")
    return Stack(shown["stack_name"], shown["id"], shown["stack_status"], shown.get("parent"))


def _link_path(resource: dict[str, Any], rel: str) -> tuple[str, str] | None:
    """The (stack name, stack id) a resource's link points to; Heat quotes the names in its links."""
    href = next((link["href"] for link in resource.get("links", []) if link["rel"] == rel), None)
    if href is None:
        return None
    name, stack_id = href.rstrip("/").rsplit("/", 2)[-2:]
    return unquote(name), unquote(stack_id)


def _owner(resource: dict[str, Any]) -> tuple[str, str]:
    owner = _link_path(resource, "stack")
    if owner is None:
        raise HeatError(f"Heat shows resource {resource.get('resource_name')} with no link to its stack")
    return owner


def member_place(holders: list[dict[str, Any]]) -> tuple[str | None, int | None]:
    """A server stack's TripleO role and index, from the resources that hold it in Heat, nearest
    first: the server resource in the member stack, the member in the role's ResourceGroup stack
    (named by its index), the group (named by the role). Any other shape is no role member."""
    if len(holders) < MEMBER_LEVELS:
        return None, None
    member, group = holders[1], holders[2]
    index = member["resource_name"]
    if group["resource_type"] != ROLE_GROUP_TYPE or not (index.isascii() and index.isdigit()):
        return None, None
    return group["resource_name"], int(index)


def deployed_servers(conn: Connection, stack: str) -> list[DeployedServer]:
    """Every deployed-server resource below ``stack``, with its TripleO role and index (from Heat's
    nesting, as :func:`deployed_server` reads it) when it has them."""
    top = find_stack(conn, stack)
    body = _json(
        conn.orchestration.get(f"{stack_path(top.name, top.id)}/resources", params={"nested_depth": NESTED_DEPTH}),
        f"the resource list of {stack}",
    )
    holder_of: dict[str, dict[str, Any]] = {}  # a nested stack's id → the resource that holds it
    for r in body["resources"]:
        nested = _link_path(r, "nested")
        if nested is not None:
            holder_of[nested[1]] = r
    found = []
    for r in body["resources"]:
        if r["resource_type"] != DEPLOYED_SERVER_TYPE:
            continue
        owner, owner_id = _owner(r)
        holders: list[dict[str, Any]] = []
        above = owner_id
        while above in holder_of and len(holders) < MEMBER_LEVELS:
            holders.append(holder_of[above])
            above = _owner(holder_of[above])[1]
        role, index = member_place(holders)
        found.append(
            DeployedServer(
                owner, owner_id, r["resource_name"], r["physical_resource_id"], r["resource_status"], role, index
            )
        )
    return sorted(found, key=lambda s: (s.role or "", s.index if s.index is not None else -1, s.path))


def _holders(conn: Connection, stack_name: str, stack_id: str) -> list[dict[str, Any]]:
    """The resources that hold a stack in Heat, nearest first, as far up as a member's place needs."""
    shown = _json(conn.orchestration.get(stack_path(stack_name, stack_id)), f"the stack {stack_name}")["stack"]
    holders: list[dict[str, Any]] = []
    while shown.get("parent") and len(holders) < MEMBER_LEVELS:
        parent = _json(
            conn.orchestration.get(f"/stacks/{segment(shown['parent'], 'a parent stack id')}"),
            f"the stack above {shown['stack_name']}",
        )["stack"]
        listed = _json(
            conn.orchestration.get(
                f"{stack_path(parent['stack_name'], parent['id'])}/resources",
                params={"physical_resource_id": shown["id"]},
            ),
            f"the resources of {parent['stack_name']}",
        )["resources"]
        holder = next((r for r in listed if r["physical_resource_id"] == shown["id"]), None)
        if holder is None:
            raise HeatError(
                f"stack {shown['stack_name']}: its parent {parent['stack_name']} lists no resource that holds it"
            )
        holders.append(holder)
        shown = parent
    return holders


def deployed_server(conn: Connection, stack_name: str, stack_id: str, resource_name: str) -> DeployedServer:
    """The deployed server as Heat has it now: its real id (an IN_PROGRESS event carries only a
    name placeholder), and its role and index from Heat's own nesting of its stack, never from
    what an event says. :class:`NotInHeat` if Heat has no such stack or resource,
    :class:`NotADeployedServer` if the resource is of another type."""
    where = f"{stack_name}/{resource_name}"
    resource = _json(
        conn.orchestration.get(resource_path(stack_name, stack_id, resource_name)), f"the resource {where}"
    )["resource"]
    if resource["resource_type"] != DEPLOYED_SERVER_TYPE:
        raise NotADeployedServer(
            f"{where} is of type {resource['resource_type']} in Heat, not a deployed server", resource["resource_type"]
        )
    owner, owner_id = _link_path(resource, "stack") or (stack_name, stack_id)
    role, index = member_place(_holders(conn, owner, owner_id))
    return DeployedServer(
        owner,
        owner_id,
        resource["resource_name"],
        resource["physical_resource_id"],
        resource["resource_status"],
        role,
        index,
    )


@dataclass(frozen=True)
class DeploymentState:
    """One software deployment of a server: its resource in Heat, and Heat's record of it."""

    name: str
    resource_status: str
    reason: str
    #: the tail of what the deployment wrote on stderr, when the agent signalled it
    stderr: str = ""

    @property
    def failed(self) -> bool:
        return self.resource_status.endswith("FAILED")

    @property
    def complete(self) -> bool:
        return self.resource_status.endswith("COMPLETE") and not self.resource_status.startswith("INIT")


@dataclass(frozen=True)
class Deployments:
    """Where the software deployments of one server stand: what "Heat moved on" is judged by."""

    states: tuple[DeploymentState, ...]

    @property
    def failed(self) -> list[DeploymentState]:
        return [d for d in self.states if d.failed]

    @property
    def pending(self) -> list[DeploymentState]:
        return [d for d in self.states if not d.failed and not d.complete]

    @property
    def settled(self) -> bool:
        return bool(self.failed) or not self.pending

    def summary(self) -> str:
        """``3/4 deployments complete``, or the first failure with Heat's reason."""
        if self.failed:
            first = self.failed[0]
            return f"{first.name} failed: {first.reason}"
        if not self.states:
            return "no software deployment"
        done = sum(d.complete for d in self.states)
        return f"{done}/{len(self.states)} deployments complete"


#: How much of a failed deployment's stderr a run keeps (characters, the end of it).
STDERR_TAIL = 2000


def deployments_of(conn: Connection, server: DeployedServer) -> Deployments:
    """The software deployments for ``server``: those Heat records for it (``/software_deployments``,
    wherever they are in the stack), and every deployment resource of its TripleO member stack
    (the server's stack and the one above it), including those not created yet, which Heat
    starts only once the ones before them completed. Outside TripleO's one-stack-per-node
    layout a deployment not yet created cannot be told apart from another server's."""
    records = _json(
        conn.orchestration.get("/software_deployments", params={"server_id": server.physical_id}),
        f"the software deployments of {server.label}",
    )["software_deployments"]
    by_id = {r["id"]: r for r in records}
    scope = _member_stack(conn, server) if server.role is not None else (server.stack_name, server.stack_id)
    listed = _json(
        conn.orchestration.get(
            f"{stack_path(*scope)}/resources", params={"nested_depth": 1 if server.role is not None else 0}
        ),
        f"the resources of {scope[0]}",
    )["resources"]
    states = []
    for resource in listed:
        if resource["resource_type"] in DEPLOYMENT_TYPES:
            record = by_id.pop(resource["physical_resource_id"], None)
            if record is None and server.role is None:
                continue  # a stack of several servers: only Heat's record says whose a deployment is
            states.append(
                DeploymentState(
                    resource["resource_name"],
                    resource["resource_status"],
                    resource["resource_status_reason"],
                    _stderr(record),
                )
            )
    for record in by_id.values():  # elsewhere in the stack: named by their config
        config = _json(
            conn.orchestration.get(f"/software_configs/{segment(record['config_id'], 'a config id')}"),
            f"the config of deployment {record['id']}",
        )["software_config"]
        status = {"COMPLETE": "CREATE_COMPLETE", "FAILED": "CREATE_FAILED"}.get(record["status"], "CREATE_IN_PROGRESS")
        states.append(
            DeploymentState(config.get("name") or record["id"], status, record["status_reason"], _stderr(record))
        )
    return Deployments(tuple(states))


def _member_stack(conn: Connection, server: DeployedServer) -> tuple[str, str]:
    """The stack above the server's own (a TripleO member stack: one per node)."""
    stack = _json(
        conn.orchestration.get(stack_path(server.stack_name, server.stack_id)), f"the stack {server.stack_name}"
    )["stack"]
    if not stack.get("parent"):
        return server.stack_name, server.stack_id
    parent = _json(
        conn.orchestration.get(f"/stacks/{segment(stack['parent'], 'a parent stack id')}"), "the member stack"
    )["stack"]
    return parent["stack_name"], parent["id"]


def _stderr(record: dict[str, Any] | None) -> str:
    stderr = ((record or {}).get("output_values") or {}).get("deploy_stderr") or ""
    return stderr[-STDERR_TAIL:]


def agent_source(conn: Connection, server: DeployedServer) -> AgentSource | None:
    """Where the server's agent must poll, from ``.["os-collect-config"]`` of its metadata: the
    ``request`` collector's URL or the ``heat`` collector's credentials (None if not there yet)."""
    path = resource_path(server.stack_name, server.stack_id, server.resource_name)
    body = _json(conn.orchestration.get(f"{path}/metadata"), f"the metadata of {server.path}")
    return AgentSource.from_metadata((body.get("metadata") or {}).get("os-collect-config") or {})


def resource_type(conn: Connection, stack_name: str, stack_id: str, resource_name: str) -> str | None:
    response = conn.orchestration.get(resource_path(stack_name, stack_id, resource_name))
    return response.json()["resource"]["resource_type"] if response.status_code == 200 else None


def events_after(conn: Connection, stack_name: str, stack_id: str, marker: str | None) -> list[dict[str, Any]]:
    """Events of the stack and its nested stacks after ``marker``, oldest first."""
    params = {"nested_depth": NESTED_DEPTH, "sort_dir": "asc"}
    if marker:
        params["marker"] = marker
    events: list[dict[str, Any]] = _json(
        conn.orchestration.get(f"{stack_path(stack_name, stack_id)}/events", params=params),
        f"the events of {stack_name}",
    )["events"]
    return events
