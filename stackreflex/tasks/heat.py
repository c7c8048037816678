"""Reading a deployment from Heat: deployed servers, where their agents poll, the software
deployments that wait for them, the event stream."""

import re
from dataclasses import dataclass
from urllib.parse import quote

from openstack import exceptions

from ..core.errors import StackreflexError
from .agents import AgentSource

#: Deployed servers are recognised by type: templates name them freely.
DEPLOYED_SERVER_TYPE = "OS::Heat::DeployedServer"
#: What waits for a deployed server's agent: Heat's software deployments (TripleO's alias among them).
DEPLOYMENT_TYPES = ("OS::Heat::SoftwareDeployment", "OS::Heat::StructuredDeployment",
                    "OS::Heat::SoftwareDeploymentGroup", "OS::Heat::StructuredDeploymentGroup",
                    "OS::Heat::SoftwareDeployments", "OS::Heat::StructuredDeployments",
                    "OS::TripleO::SoftwareDeployment")
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


def deployed_server(conn, stack_name: str, stack_id: str, resource_name: str) -> DeployedServer:
    """The deployed server as Heat has it now (its real id: an IN_PROGRESS event carries only a
    name placeholder), with its role and index from Heat's own stack name."""
    body = _json(conn.orchestration.get(f"/stacks/{quote(stack_name)}/{quote(stack_id)}/resources/"
                                        f"{quote(resource_name)}"), f"the resource {stack_name}/{resource_name}")
    resource = body["resource"]
    if resource["resource_type"] != DEPLOYED_SERVER_TYPE:
        raise HeatError(f"{stack_name}/{resource_name} is a {resource['resource_type']}, not a deployed server")
    role, index = role_and_index(stack_name)
    return DeployedServer(stack_name, stack_id, resource_name, resource["physical_resource_id"],
                          resource["resource_status"], role, index)


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


def deployments_of(conn, server: DeployedServer) -> Deployments:
    """The software deployments for ``server``: those Heat records for it (``/software_deployments``,
    wherever they are in the stack), and every deployment resource of its TripleO member stack
    (the server's stack and the one above it), including those not created yet, which Heat
    starts only once the ones before them completed. Outside TripleO's one-stack-per-node
    layout a deployment not yet created cannot be told apart from another server's."""
    records = _json(conn.orchestration.get("/software_deployments", params={"server_id": server.physical_id}),
                    f"the software deployments of {server.label}")["software_deployments"]
    by_id = {r["id"]: r for r in records}
    scope = _member_stack(conn, server) if server.role is not None else (server.stack_name, server.stack_id)
    listed = _json(conn.orchestration.get(f"/stacks/{quote(scope[0])}/{quote(scope[1])}/resources",
                                          params={"nested_depth": 1 if server.role is not None else 0}),
                   f"the resources of {scope[0]}")["resources"]
    states = []
    for resource in listed:
        if resource["resource_type"] in DEPLOYMENT_TYPES:
            record = by_id.pop(resource["physical_resource_id"], None)
            if record is None and server.role is None:
                continue  # a stack of several servers: only Heat's record says whose a deployment is
            states.append(DeploymentState(resource["resource_name"], resource["resource_status"],
                                          resource["resource_status_reason"], _stderr(record)))
    for record in by_id.values():  # elsewhere in the stack: named by their config
        config = _json(conn.orchestration.get(f"/software_configs/{quote(record['config_id'])}"),
                       f"the config of deployment {record['id']}")["software_config"]
        status = {"COMPLETE": "CREATE_COMPLETE", "FAILED": "CREATE_FAILED"}.get(record["status"], "CREATE_IN_PROGRESS")
        states.append(DeploymentState(config.get("name") or record["id"], status, record["status_reason"],
                                      _stderr(record)))
    return Deployments(tuple(states))


def _member_stack(conn, server: DeployedServer) -> tuple[str, str]:
    """The stack above the server's own (a TripleO member stack: one per node)."""
    stack = _json(conn.orchestration.get(f"/stacks/{quote(server.stack_name)}/{quote(server.stack_id)}"),
                  f"the stack {server.stack_name}")["stack"]
    if not stack.get("parent"):
        return server.stack_name, server.stack_id
    parent = _json(conn.orchestration.get(f"/stacks/{quote(stack['parent'])}"), "the member stack")["stack"]
    return parent["stack_name"], parent["id"]


def _stderr(record: dict | None) -> str:
    stderr = ((record or {}).get("output_values") or {}).get("deploy_stderr") or ""
    return stderr[-STDERR_TAIL:]


def agent_source(conn, server: DeployedServer) -> AgentSource | None:
    """Where the server's agent must poll, from ``.["os-collect-config"]`` of its metadata: the
    ``request`` collector's URL or the ``heat`` collector's credentials (None if not there yet)."""
    body = _json(conn.orchestration.get(
        f"/stacks/{quote(server.stack_name)}/{quote(server.stack_id)}/resources/{quote(server.resource_name)}/metadata"),
        f"the metadata of {server.path}")
    return AgentSource.from_metadata((body.get("metadata") or {}).get("os-collect-config") or {})


def resource_type(conn, stack_name: str, stack_id: str, resource_name: str) -> str | None:
    response = conn.orchestration.get(f"/stacks/{quote(stack_name)}/{quote(stack_id)}/resources/{quote(resource_name)}")
    return response.json()["resource"]["resource_type"] if response.status_code == 200 else None


def events_after(conn, stack_name: str, stack_id: str, marker: str | None) -> list[dict]:
    """Events of the stack and its nested stacks after ``marker``, oldest first."""
    params = {"nested_depth": NESTED_DEPTH, "sort_dir": "asc"}
    if marker:
        params["marker"] = marker
    return _json(conn.orchestration.get(f"/stacks/{quote(stack_name)}/{quote(stack_id)}/events", params=params),
                 f"the events of {stack_name}")["events"]
