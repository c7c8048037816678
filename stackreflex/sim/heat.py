"""Heat v1: TripleO-shaped stacks of deployed servers, their resources, metadata and events.

The stack tree mirrors a deployed-server overcloud::

    overcloud
      <Role>                  OS::Heat::ResourceGroup  → overcloud-<Role>-<r1>
        <index>               OS::TripleO::<Role>      → overcloud-<Role>-<r1>-<index>-<r2>
          <Role>              OS::TripleO::<Role>Server → overcloud-<Role>-<r1>-<index>-<r2>-<Role>-<r3>
            deployed-server   OS::Heat::DeployedServer  (metadata: os-collect-config)

A member stays ``CREATE_IN_PROGRESS`` until its node fetches its metadata URL; then it
completes, and the stack completes when every member has.
"""

import itertools
import random
import string
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from ..clock import utcnow
from .clock import SimClock
from .http import HttpError, Request, Response, Router
from .scenario import Role, Scenario
from .swift import MetadataStore

#: Query parameters Heat accepts when listing resources.
RESOURCE_FILTERS = ("type", "status", "name", "action", "id", "physical_resource_id")
RESOURCE_PARAMS = RESOURCE_FILTERS + ("nested_depth", "with_detail")
DEPLOYED_SERVER_TYPE = "OS::Heat::DeployedServer"


def heat_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def heat_error(error: HttpError) -> object:
    return {"code": error.status, "title": error.title, "explanation": error.message,
            "error": {"type": error.error_type or error.title.replace(" ", ""), "message": error.message,
                      "traceback": None}}


def _suffix(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(12))


@dataclass(eq=False)
class Event:
    id: str
    seq: int
    time: datetime
    stack: "Stack" = field(repr=False)
    resource_name: str
    physical_resource_id: str
    status: str
    reason: str


@dataclass(eq=False)
class Resource:
    name: str
    type: str
    stack: "Stack" = field(repr=False)
    physical_id: str
    status: str = "INIT_COMPLETE"
    reason: str = ""
    created: datetime = field(default_factory=utcnow)
    updated: datetime | None = None
    nested: "Stack | None" = None
    metadata: dict = field(default_factory=dict)


@dataclass(eq=False)
class Stack:
    id: str
    name: str
    parent: Resource | None = field(default=None, repr=False)
    status: str = "INIT_COMPLETE"
    reason: str = ""
    created: datetime = field(default_factory=utcnow)
    updated: datetime | None = None
    resources: dict[str, Resource] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def root(self) -> "Stack":
        return self if self.parent is None else self.parent.stack.root

    def descendants(self, depth: int):
        """This stack and its nested stacks down to ``depth`` levels, with their depth."""
        yield self, 0
        if depth > 0:
            for resource in self.resources.values():
                if resource.nested is not None:
                    for stack, level in resource.nested.descendants(depth - 1):
                        yield stack, level + 1


@dataclass(eq=False)
class Member:
    """One node of a role: its resources along the path and its metadata URL."""

    role: str
    index: int
    host: str
    member: Resource
    server: Resource
    deployed_server: Resource
    metadata_url: str
    #: POLL_SERVER_HEAT: the node's own Keystone user and the nested stack of its deployed-server
    user_id: str = ""
    password: str = ""
    polled_at: datetime | None = None
    completed: bool = False


class Heat:
    """The orchestration service and the deployment it is running."""

    def __init__(self, scenario: Scenario, base_url: str, project_id: str, metadata: MetadataStore,
                 clock: SimClock, seed: int = 0, keystone=None):
        self.scenario = scenario
        self.keystone = keystone
        self.base_url = base_url
        self.project_id = project_id
        self.metadata = metadata
        self.clock = clock
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.stacks: dict[str, Stack] = {}
        self.members: list[Member] = []
        self._seq = itertools.count(1)
        self.root: Stack | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/heat/v1/{self.project_id}"

    # -- the model ---------------------------------------------------------------------

    def _new_stack(self, name: str, parent: Resource | None) -> Stack:
        stack = Stack(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), name, parent)
        self.stacks[stack.id] = stack
        if parent is not None:
            parent.nested = stack
            parent.physical_id = stack.id
        return stack

    def _add(self, stack: Stack, name: str, type: str) -> Resource:
        resource = Resource(name, type, stack, str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
        stack.resources[name] = resource
        return resource

    def _event(self, stack: Stack, name: str, physical_id: str, status: str, reason: str) -> None:
        stack.events.append(Event(str(uuid.uuid4()), next(self._seq), utcnow(), stack, name, physical_id,
                                  status, reason))
        overflow = len(stack.events) - self.scenario.max_events_per_stack
        if overflow > 0:  # Heat purges the oldest events of a stack past its limit
            del stack.events[:overflow]

    def _set_resource(self, resource: Resource, status: str, reason: str = "state changed") -> None:
        resource.status, resource.reason, resource.updated = status, reason, utcnow()
        self._event(resource.stack, resource.name, resource.physical_id, status, reason)

    def _set_stack(self, stack: Stack, status: str, reason: str) -> None:
        stack.status, stack.reason, stack.updated = status, reason, utcnow()
        self._event(stack, stack.name, stack.id, status, reason)

    def start_deployment(self) -> None:
        """Create the scenario's stack: every server waits for its node's agent."""
        with self.lock:
            root = self.root = self._new_stack(self.scenario.stack, None)
            self._set_stack(root, "CREATE_IN_PROGRESS", "Stack CREATE started")
            for role in self.scenario.roles:
                group = self._add(root, role.name, "OS::Heat::ResourceGroup")
                self._set_resource(group, "CREATE_IN_PROGRESS")
                self._new_stack(f"{root.name}-{role.name}-{_suffix(self.rng)}", group)
                self._set_stack(group.nested, "CREATE_IN_PROGRESS", "Stack CREATE started")
                for index in range(role.count):
                    self._add_member(role, group, index, "CREATE")
            if self.scenario.create_timeout:
                self.clock.later(self.scenario.create_timeout, self._time_out, root)

    def _add_member(self, role: Role, group: Resource, index: int, action: str) -> Member:
        member = self._add(group.nested, str(index), f"OS::TripleO::{role.name}")
        self._set_resource(member, "CREATE_IN_PROGRESS")
        member_stack = self._new_stack(f"{group.nested.name}-{index}-{_suffix(self.rng)}", member)
        self._set_stack(member_stack, "CREATE_IN_PROGRESS", "Stack CREATE started")
        server = self._add(member_stack, role.name, f"OS::TripleO::{role.name}Server")
        self._set_resource(server, "CREATE_IN_PROGRESS")
        server_stack = self._new_stack(f"{member_stack.name}-{role.name}-{_suffix(self.rng)}", server)
        self._set_stack(server_stack, "CREATE_IN_PROGRESS", "Stack CREATE started")
        deployed = self._add(server_stack, "deployed-server", DEPLOYED_SERVER_TYPE)
        self._set_resource(deployed, "CREATE_IN_PROGRESS")
        node = Member(role.name, index, role.hosts[index] if index < len(role.hosts) else "",
                      member, server, deployed, "")
        container = f"ov-{deployed.physical_id[:8]}-{_suffix(self.rng)}"
        node.metadata_url = self.metadata.publish(container, deployed.physical_id,
                                                  lambda node=node: self._resource_metadata(node),
                                                  lambda client, node=node: self._polled(node))
        if self.scenario.transport == "POLL_SERVER_HEAT":
            node.user_id = uuid.UUID(int=self.rng.getrandbits(128), version=4).hex
            node.password = uuid.UUID(int=self.rng.getrandbits(128), version=4).hex
            self.keystone.add_user(node.user_id, node.password)
        deployed.metadata = self._resource_metadata(node)
        self.members.append(node)
        return node

    def _resource_metadata(self, node: Member) -> dict:
        """What the deployed-server resource's metadata says the node's agent must poll."""
        if self.scenario.transport == "POLL_SERVER_HEAT":
            stack = node.deployed_server.stack
            heat = {"auth_url": f"{self.base_url}/identity/v3", "user_id": node.user_id, "password": node.password,
                    "project_id": self.project_id, "stack_id": f"{stack.name}/{stack.id}",
                    "resource_name": node.deployed_server.name, "region_name": self.scenario.region}
            occ = {"collectors": ["heat", "local"], "heat": heat, "request": None}
        else:
            occ = {"collectors": ["request", "local"], "request": {"metadata_url": node.metadata_url}, "heat": None}
        return {"deployments": self._deployments(node), "os-collect-config": {**occ, "zaqar": None, "cfn": None}}

    def _deployments(self, node: Member) -> list[dict]:
        return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, node.deployed_server.physical_id)),
                 "name": f"{node.role}Deployment", "group": "hiera",
                 "inputs": [{"name": "deploy_server_id", "value": node.deployed_server.physical_id}],
                 "config": {"role": node.role, "index": node.index}}]

    def _polled(self, node: Member) -> None:
        with self.lock:
            if node.polled_at is not None:
                return
            node.polled_at = utcnow()
        self.clock.later(self.scenario.deployment_time, self._complete, node)

    def _complete(self, node: Member) -> None:
        with self.lock:
            if node.completed or self.root.status.endswith("FAILED"):
                return
            node.completed = True
            for resource in (node.deployed_server, node.server, node.member):
                if resource.nested is not None:
                    self._set_stack(resource.nested, "CREATE_COMPLETE", "Stack CREATE completed successfully")
                self._set_resource(resource, "CREATE_COMPLETE")
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        root = self.root
        for group in root.resources.values():
            if group.status.endswith("IN_PROGRESS") and all(
                    m.status == "CREATE_COMPLETE" for m in group.nested.resources.values()):
                action = group.status.split("_")[0]
                self._set_stack(group.nested, f"{action}_COMPLETE", f"Stack {action} completed successfully")
                self._set_resource(group, f"{action}_COMPLETE")
        if root.status.endswith("IN_PROGRESS") and all(
                g.status.endswith("COMPLETE") for g in root.resources.values()):
            action = root.status.split("_")[0]
            self._set_stack(root, f"{action}_COMPLETE", f"Stack {action} completed successfully")

    def _time_out(self, stack: Stack) -> None:
        with self.lock:
            if stack.status.endswith("IN_PROGRESS"):
                action = stack.status.split("_")[0]
                self._set_stack(stack, f"{action}_FAILED", "Timed out")

    def scale(self, role_name: str, count: int) -> list[Member]:
        """Add ``count`` members to a role (a stack update); they start in CREATE_IN_PROGRESS."""
        with self.lock:
            role = next((r for r in self.scenario.roles if r.name == role_name), None)
            if role is None:
                raise KeyError(f"no role {role_name}")
            group = self.root.resources[role.name]
            first = len(group.nested.resources)
            if first + count > len(role.hosts):
                raise ValueError(f"role {role_name} has {len(role.hosts)} hosts; cannot grow to {first + count}")
            self._set_stack(self.root, "UPDATE_IN_PROGRESS", "Stack UPDATE started")
            self._set_resource(group, "UPDATE_IN_PROGRESS")
            self._set_stack(group.nested, "UPDATE_IN_PROGRESS", "Stack UPDATE started")
            role.count = first + count
            return [self._add_member(role, group, index, "CREATE") for index in range(first, first + count)]

    # -- the API -----------------------------------------------------------------------

    def routes(self, router: Router) -> None:
        base = "/heat/v1/{project}"
        router.add("GET", "/heat", self.versions, heat_error, auth=False)
        router.add("GET", base + "/stacks", self.list_stacks, heat_error)
        router.add("GET", base + "/stacks/{stack}", self.redirect, heat_error)
        router.add("GET", base + "/stacks/{stack}/{sub}", self.redirect_or_show, heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/resources", self.list_resources, heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/resources/{resource}", self.show_resource, heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/resources/{resource}/metadata", self.resource_metadata,
                   heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/events", self.list_events, heat_error)

    def versions(self, request: Request) -> Response:
        return Response(300, {"versions": [{"id": "v1.0", "status": "CURRENT",
                                            "links": [{"rel": "self", "href": f"{self.base_url}/heat/v1/"}]}]})

    def _stack(self, name_or_id: str, stack_id: str | None = None) -> Stack:
        with self.lock:
            stack = self.stacks.get(stack_id or name_or_id) or next(
                (s for s in self.stacks.values() if s.name == name_or_id), None)
        if stack is None or (stack_id and stack.name != name_or_id and stack.id != name_or_id):
            raise HttpError(404, "Not Found", f"The Stack ({name_or_id}) could not be found.", "EntityNotFound")
        return stack

    def _stack_url(self, stack: Stack) -> str:
        return f"{self.endpoint}/stacks/{stack.name}/{stack.id}"

    def _stack_body(self, stack: Stack) -> dict:
        return {"id": stack.id, "stack_name": stack.name, "stack_status": stack.status,
                "stack_status_reason": stack.reason, "creation_time": heat_time(stack.created),
                "updated_time": heat_time(stack.updated), "deletion_time": None, "description": "",
                "parent": stack.parent.stack.id if stack.parent else None, "stack_owner": None,
                "stack_user_project_id": self.project_id, "tags": None, "timeout_mins": None,
                "disable_rollback": True, "parameters": {"OS::stack_name": stack.name, "OS::stack_id": stack.id},
                "outputs": [], "capabilities": [], "notification_topics": [], "template_description": "",
                "links": [{"href": self._stack_url(stack), "rel": "self"}]}

    def list_stacks(self, request: Request) -> Response:
        with self.lock:
            stacks = [s for s in self.stacks.values() if s.parent is None or request.arg("show_nested") == "True"]
            return Response(200, {"stacks": [self._stack_body(s) for s in stacks]})

    def redirect(self, request: Request, collection: str = "") -> Response:
        """``/stacks/{name}`` and its collections redirect to the canonical ``/stacks/{name}/{id}``."""
        stack = self._stack(request.match["stack"])
        query = "&".join(f"{k}={v}" for k, values in request.query.items() for v in values)
        location = self._stack_url(stack) + (f"/{collection}" if collection else "") + (f"?{query}" if query else "")
        return Response(302, {"explanation": "The resource was found at", "code": 302}, {"Location": location})

    def redirect_or_show(self, request: Request) -> Response:
        sub = request.match["sub"]
        if sub in ("resources", "events", "template", "environment", "files", "outputs"):
            return self.redirect(request, sub)
        stack = self._stack(request.match["stack"], sub)
        with self.lock:
            return Response(200, {"stack": self._stack_body(stack)})

    def _resource_body(self, resource: Resource, nested_listing: bool) -> dict:
        stack = resource.stack
        links = [{"href": f"{self._stack_url(stack)}/resources/{resource.name}", "rel": "self"},
                 {"href": self._stack_url(stack), "rel": "stack"}]
        if resource.nested is not None:
            links.append({"href": self._stack_url(resource.nested), "rel": "nested"})
        body = {"resource_name": resource.name, "logical_resource_id": resource.name,
                "physical_resource_id": resource.physical_id, "resource_type": resource.type,
                "resource_status": resource.status, "resource_status_reason": resource.reason,
                "required_by": [], "creation_time": heat_time(resource.created),
                "updated_time": heat_time(resource.updated or resource.created), "links": links}
        if nested_listing and stack.parent is not None:
            body["parent_resource"] = stack.parent.name
        return body

    @staticmethod
    def _depth(request: Request) -> int:
        raw = request.arg("nested_depth", "0")
        try:
            depth = int(raw)
            if depth < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, "Bad Request", "Only integer is acceptable by 'nested_depth'.", "Invalid") from None
        return depth

    def list_resources(self, request: Request) -> Response:
        unknown = sorted(set(request.query) - set(RESOURCE_PARAMS))
        if unknown:
            raise HttpError(400, "Bad Request", f"Invalid filter parameters {unknown}", "HTTPBadRequest")
        depth = self._depth(request)
        stack = self._stack(request.match["stack"], request.match["stack_id"])
        filters = {k: v for k, v in request.query.items() if k in RESOURCE_FILTERS}
        with self.lock:
            found = []
            for owner, _level in stack.descendants(depth):
                for resource in owner.resources.values():
                    values = {"type": resource.type, "status": resource.status.split("_", 1)[-1],
                              "name": resource.name, "action": resource.status.split("_", 1)[0],
                              "id": resource.physical_id, "physical_resource_id": resource.physical_id}
                    if all(values[k] in wanted for k, wanted in filters.items()):
                        found.append(self._resource_body(resource, depth > 0))
            return Response(200, {"resources": found})

    def _resource(self, request: Request) -> Resource:
        stack = self._stack(request.match["stack"], request.match["stack_id"])
        resource = stack.resources.get(request.match["resource"])
        if resource is None:
            raise HttpError(404, "Not Found", f"The Resource ({request.match['resource']}) could not be found.",
                            "ResourceNotFound")
        return resource

    def show_resource(self, request: Request) -> Response:
        with self.lock:
            resource = self._resource(request)
            return Response(200, {"resource": {**self._resource_body(resource, False),
                                               "attributes": {}, "description": ""}})

    def resource_metadata(self, request: Request) -> Response:
        with self.lock:
            resource = self._resource(request)
            metadata = resource.metadata
            caller = self.keystone.token_user(request.headers.get("x-auth-token")) if self.keystone else None
            node = next((m for m in self.members if m.user_id and m.user_id == caller
                         and m.deployed_server is resource), None)
        if node is not None:  # the node's heat collector polling its own resource
            self._polled(node)
        return Response(200, {"metadata": metadata})

    def _event_body(self, event: Event, with_root: bool) -> dict:
        stack = event.stack
        stack_url = self._stack_url(stack)
        links = [{"href": f"{stack_url}/resources/{event.resource_name}/events/{event.id}", "rel": "self"},
                 {"href": f"{stack_url}/resources/{event.resource_name}", "rel": "resource"},
                 {"href": stack_url, "rel": "stack"}]
        if with_root:
            links.append({"href": self._stack_url(stack.root), "rel": "root_stack"})
        return {"id": event.id, "event_time": heat_time(event.time), "resource_name": event.resource_name,
                "logical_resource_id": event.resource_name, "physical_resource_id": event.physical_resource_id,
                "resource_status": event.status, "resource_status_reason": event.reason, "links": links}

    def list_events(self, request: Request) -> Response:
        depth = self._depth(request)
        stack = self._stack(request.match["stack"], request.match["stack_id"])
        sort_dir = request.arg("sort_dir", "asc")
        if sort_dir not in ("asc", "desc"):
            raise HttpError(400, "Bad Request", "Unknown sort direction, must be 'desc' or 'asc'", "Invalid")
        with self.lock:
            events = sorted((e for s, _ in stack.descendants(depth) for e in s.events), key=lambda e: e.seq,
                            reverse=sort_dir == "desc")
            marker = request.arg("marker")
            if marker:
                position = next((i for i, e in enumerate(events) if e.id == marker), None)
                if position is not None:  # an unknown (purged) marker lists from the start
                    events = events[position + 1:]
            limit = request.arg("limit")
            if limit:
                events = events[:int(limit)]
            return Response(200, {"events": [self._event_body(e, depth > 0) for e in events]})
