"""Heat v1: TripleO-shaped stacks of deployed servers, their software deployments, metadata,
signals and events, as the real Heat runs them.

The stack tree mirrors a deployed-server overcloud (tripleo-heat-templates'
``deployed-server/deployed-server.yaml`` and a role's member template)::

    overcloud
      <Role>                    OS::Heat::ResourceGroup   → overcloud-<Role>-<r1>
        <index>                 OS::TripleO::<Role>       → overcloud-<Role>-<r1>-<index>-<r2>      (member stack)
          <Role>                OS::TripleO::<Role>Server → …-<Role>-<r3>                          (server stack)
            deployed-server       OS::Heat::DeployedServer     CREATE_COMPLETE at once
            InstanceIdConfig      OS::Heat::StructuredConfig
            InstanceIdDeployment  OS::Heat::StructuredDeployment   waits for the node's agent
            HostsEntryConfig      OS::Heat::SoftwareConfig
            HostsEntryDeployment  OS::Heat::SoftwareDeployment     waits for the node's agent
          NetworkDeployment     OS::TripleO::SoftwareDeployment    created once the server stack completes
          <Role>Deployment      OS::Heat::StructuredDeployment

As in Heat, an ``OS::Heat::DeployedServer`` only sets its id, makes its transport
credentials and fills its metadata: it is ``CREATE_COMPLETE`` at once. What waits for the
node are its software deployments: each stays ``IN_PROGRESS`` until the node's agent fetches
it (in the ``deployments`` of the server's metadata), runs it, and signals the result with
the deployment's signal transport. A non-zero ``deploy_status_code`` fails the deployment
with Heat's own reason, and the failure climbs the stack tree with Heat's error paths.
"""

import itertools
import random
import string
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit

from .clock import SimClock, utcnow
from .http import HttpError, Request, Response, Router
from .scenario import Role, Scenario
from .swift import MetadataStore

#: Query parameters Heat accepts when listing resources.
RESOURCE_FILTERS = ("type", "status", "name", "action", "id", "physical_resource_id")
RESOURCE_PARAMS = (*RESOURCE_FILTERS, "nested_depth", "with_detail")
DEPLOYED_SERVER_TYPE = "OS::Heat::DeployedServer"
#: How a deployed server's agent gets its metadata, and how a deployment is signalled back.
POLL_TRANSPORTS = ("POLL_TEMP_URL", "POLL_SERVER_HEAT", "POLL_SERVER_CFN")
SIGNAL_TRANSPORTS = ("TEMP_URL_SIGNAL", "HEAT_SIGNAL", "CFN_SIGNAL", "NO_SIGNAL")
#: The keys of every collector Heat writes into ``os-collect-config`` (those not in use are null).
COLLECTOR_KEYS = {
    "heat": ("user_id", "password", "auth_url", "project_id", "stack_id", "resource_name", "region_name"),
    "zaqar": ("user_id", "password", "auth_url", "project_id", "queue_id", "region_name"),
    "cfn": ("metadata_url", "access_key_id", "secret_access_key", "stack_name", "path"),
    "request": ("metadata_url",),
}


def heat_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def heat_error(error: HttpError) -> object:
    return {
        "code": error.status,
        "title": error.title,
        "explanation": error.message,
        "error": {
            "type": error.error_type or error.title.replace(" ", ""),
            "message": error.message,
            "traceback": None,
        },
    }


def _suffix(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(12))


def failure_text(error: str, path: list[str], message: str) -> str:
    """A resource failure as Heat words it (``HeatExceptionWithPath``): ``Error:
    resources.Controller.resources[0]…: message``; list indexes are written ``[n]``."""
    shown = ""
    for item in path:
        shown += f"[{item}]" if item.isdigit() else (f".{item}" if shown else item)
    return (f"{error}: " if error else "") + (f"{shown}: " if shown else "") + message


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
    #: Heat's physical resource name, which an event shows until the resource has its id
    placeholder: str
    physical_id: str = ""
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
class Deployment:
    """Heat's software deployment record behind a deployment resource (``/software_deployments``)."""

    id: str
    node: "Member" = field(repr=False)
    resource: Resource = field(repr=False)
    name: str
    group: str
    config_id: str
    transport: str
    inputs: list[dict] = field(default_factory=list)
    action: str = "CREATE"
    status: str = "IN_PROGRESS"
    status_reason: str = "Deploy data available"
    output_values: dict = field(default_factory=dict)
    created: datetime = field(default_factory=utcnow)
    updated: datetime | None = None


@dataclass(eq=False)
class Member:
    """One node of a role: its resources along the path, its transport credentials, its deployments."""

    role: str
    index: int
    host: str
    member: Resource
    server: Resource
    deployed_server: Resource
    #: POLL_TEMP_URL: where the node's metadata is served
    metadata_url: str = ""
    #: POLL_SERVER_HEAT: the node's own Keystone user; POLL_SERVER_CFN: its EC2 key pair
    user_id: str = ""
    password: str = ""
    access_key: str = ""
    secret_key: str = ""
    deployments: list[Deployment] = field(default_factory=list)
    polled_at: datetime | None = None
    completed: bool = False
    failed: bool = False


class Heat:
    """The orchestration service and the deployment it is running."""

    def __init__(
        self,
        scenario: Scenario,
        base_url: str,
        project_id: str,
        metadata: MetadataStore,
        clock: SimClock,
        seed: int = 0,
        keystone=None,
    ):
        if scenario.transport not in POLL_TRANSPORTS:
            raise ValueError(f"transport {scenario.transport}: use one of {', '.join(POLL_TRANSPORTS)}")
        if scenario.signal_transport not in SIGNAL_TRANSPORTS:
            raise ValueError(f"signal_transport {scenario.signal_transport}: use one of {', '.join(SIGNAL_TRANSPORTS)}")
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
        self.deployments: dict[str, Deployment] = {}
        #: EC2 key pairs (access key → secret) of the deployed servers and the CFN signal URLs
        self.ec2_keys: dict[str, str] = {}
        self._seq = itertools.count(1)
        self.root: Stack | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/heat/v1/{self.project_id}"

    @property
    def cfn_endpoint(self) -> str:
        """heat-api-cfn, where the ``cfn`` collector polls and CFN signals go."""
        return f"{self.base_url}/heat-cfn/v1/"

    # -- the model ---------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _new_stack(self, name: str, parent: Resource | None) -> Stack:
        stack = Stack(self._uuid(), name, parent)
        self.stacks[stack.id] = stack
        if parent is not None:
            parent.nested = stack
            parent.physical_id = stack.id
        return stack

    def _add(self, stack: Stack, name: str, type: str) -> Resource:
        resource = Resource(name, type, stack, f"{stack.name}-{name}-{_suffix(self.rng)}")
        stack.resources[name] = resource
        return resource

    def _event(self, stack: Stack, name: str, physical_id: str, status: str, reason: str) -> None:
        stack.events.append(
            Event(str(uuid.uuid4()), next(self._seq), utcnow(), stack, name, physical_id, status, reason)
        )
        overflow = len(stack.events) - self.scenario.max_events_per_stack
        if overflow > 0:  # Heat purges the oldest events of a stack past its limit
            del stack.events[:overflow]

    def _set_resource(self, resource: Resource, status: str, reason: str = "state changed") -> None:
        resource.status, resource.reason, resource.updated = status, reason, utcnow()
        self._event(resource.stack, resource.name, resource.physical_id or resource.placeholder, status, reason)

    def _set_stack(self, stack: Stack, status: str, reason: str) -> None:
        stack.status, stack.reason, stack.updated = status, reason, utcnow()
        self._event(stack, stack.name, stack.id, status, reason)

    def _begin_nested(self, resource: Resource, name: str, action: str = "CREATE") -> Stack:
        """A stack resource starts: its event (before it has an id), then its nested stack."""
        self._set_resource(resource, f"{action}_IN_PROGRESS")
        stack = self._new_stack(name, resource)
        self._set_stack(stack, f"{action}_IN_PROGRESS", f"Stack {action} started")
        return stack

    def start_deployment(self) -> None:
        """Create the scenario's stack: every server's deployments wait for its node's agent."""
        with self.lock:
            root = self.root = self._new_stack(self.scenario.stack, None)
            self._set_stack(root, "CREATE_IN_PROGRESS", "Stack CREATE started")
            for role in self.scenario.roles:
                group = self._add(root, role.name, "OS::Heat::ResourceGroup")
                self._begin_nested(group, f"{root.name}-{role.name}-{_suffix(self.rng)}")
                for index in range(role.count):
                    self._add_member(role, group, index)
            if self.scenario.create_timeout:
                self.clock.later(self.scenario.create_timeout, self._time_out, root)

    def _add_member(self, role: Role, group: Resource, index: int) -> Member:
        member = self._add(group.nested, str(index), f"OS::TripleO::{role.name}")
        member_stack = self._begin_nested(member, f"{group.nested.name}-{index}-{_suffix(self.rng)}")
        server = self._add(member_stack, role.name, f"OS::TripleO::{role.name}Server")
        server_stack = self._begin_nested(server, f"{member_stack.name}-{role.name}-{_suffix(self.rng)}")
        deployed = self._add(server_stack, "deployed-server", DEPLOYED_SERVER_TYPE)
        node = Member(role.name, index, role.hosts[index] if index < len(role.hosts) else "", member, server, deployed)
        self.members.append(node)
        self._create_deployed_server(node)
        self._create_deployments(
            node,
            server_stack,
            [
                (
                    "InstanceIdDeployment",
                    "OS::Heat::StructuredDeployment",
                    "apply-config",
                    "InstanceIdConfig",
                    "OS::Heat::StructuredConfig",
                ),
                (
                    "HostsEntryDeployment",
                    "OS::Heat::SoftwareDeployment",
                    "script",
                    "HostsEntryConfig",
                    "OS::Heat::SoftwareConfig",
                ),
            ],
        )
        return node

    def _create_deployed_server(self, node: Member) -> None:
        """``DeployedServer.handle_create``: an id, the transport's credentials, the metadata; no wait."""
        deployed = node.deployed_server
        self._set_resource(deployed, "CREATE_IN_PROGRESS")
        deployed.physical_id = self._uuid()
        transport = self.scenario.transport
        if transport == "POLL_TEMP_URL":
            container = f"ov-{deployed.stack.name[-14:]}-deployed-server-{_suffix(self.rng)}"
            node.metadata_url = self.metadata.publish(
                container, self._uuid(), lambda: deployed.metadata, lambda client: self.polled(node)
            )
        elif transport == "POLL_SERVER_HEAT":
            node.user_id, node.password = self._uuid().replace("-", ""), self._uuid().replace("-", "")
            self.keystone.add_user(node.user_id, node.password)
        else:
            node.access_key, node.secret_key = self._uuid().replace("-", ""), self._uuid().replace("-", "")
            self.ec2_keys[node.access_key] = node.secret_key
        deployed.metadata = self._metadata(node)
        self._set_resource(deployed, "CREATE_COMPLETE")

    def _metadata(self, node: Member) -> dict:
        """The deployed server's metadata: its deployments, and where its agent polls (Heat sets
        the keys of the collectors not in use to null)."""
        transport, stack = self.scenario.transport, node.deployed_server.stack
        occ: dict = {key: dict.fromkeys(keys) for key, keys in COLLECTOR_KEYS.items()}
        if transport == "POLL_SERVER_HEAT":
            collector = "heat"
            occ["heat"] = {
                "user_id": node.user_id,
                "password": node.password,
                "auth_url": f"{self.base_url}/identity/v3",
                "project_id": self.project_id,
                "stack_id": f"{stack.name}/{stack.id}",
                "resource_name": node.deployed_server.name,
                "region_name": self.scenario.region,
            }
        elif transport == "POLL_SERVER_CFN":
            collector = "cfn"
            occ["cfn"] = {
                "metadata_url": self.cfn_endpoint,
                "access_key_id": node.access_key,
                "secret_access_key": node.secret_key,
                "stack_name": stack.name,
                "path": f"{node.deployed_server.name}.Metadata",
            }
        else:
            collector = "request"
            occ["request"] = {"metadata_url": node.metadata_url}
        occ["collectors"] = [collector, "local"]
        return {"deployments": self._deployment_configs(node), "os-collect-config": occ}

    def _deployment_configs(self, node: Member) -> list[dict]:
        """What ``metadata_software_deployments`` gives: each deployment's derived config, by name."""
        return [
            {
                "id": d.config_id,
                "name": d.name,
                "group": d.group,
                "creation_time": heat_time(d.created),
                "config": {"deployment": d.name, "role": node.role, "index": node.index},
                "inputs": d.inputs,
                "outputs": [],
                "options": {},
            }
            for d in sorted(node.deployments, key=lambda d: d.name)
        ]

    def _create_deployments(self, node: Member, stack: Stack, specs: list[tuple]) -> None:
        """Deployments of ``node``'s server, each with its config: IN_PROGRESS until signalled."""
        for name, type, group, config_name, config_type in specs:
            config = self._add(stack, config_name, config_type)
            self._set_resource(config, "CREATE_IN_PROGRESS")
            config.physical_id = self._uuid()
            self._set_resource(config, "CREATE_COMPLETE")
            resource = self._add(stack, name, type)
            self._set_resource(resource, "CREATE_IN_PROGRESS")
            deployment = Deployment(
                self._uuid(), node, resource, name, group, self._uuid(), self.scenario.signal_transport
            )
            resource.physical_id = deployment.id
            deployment.inputs = self._inputs(deployment, node)
            self.deployments[deployment.id] = deployment
            node.deployments.append(deployment)
        node.deployed_server.metadata = self._metadata(node)
        for deployment in list(node.deployments):
            if deployment.transport == "NO_SIGNAL" and deployment.status == "IN_PROGRESS":
                self._deployment_done(deployment, "COMPLETE", "Not waiting for outputs signal", {})

    def _inputs(self, deployment: Deployment, node: Member) -> list[dict]:
        """The ``deploy_*`` inputs Heat derives for a deployment: where and how to signal it back."""
        stack = deployment.resource.stack
        values = {
            "deploy_server_id": node.deployed_server.physical_id,
            "deploy_action": deployment.action,
            "deploy_stack_id": f"{stack.name}/{stack.id}",
            "deploy_resource_name": deployment.name,
            "deploy_signal_transport": deployment.transport,
        }
        if deployment.transport == "TEMP_URL_SIGNAL":
            values["deploy_signal_id"] = self.metadata.signal_url(
                f"{stack.name[-14:]}-{deployment.name}-{_suffix(self.rng)}",
                self._uuid(),
                lambda body, d=deployment: self.signal(d.id, body),
            )
            values["deploy_signal_verb"] = "PUT"
        elif deployment.transport == "HEAT_SIGNAL":
            user, password = self._uuid().replace("-", ""), self._uuid().replace("-", "")
            self.keystone.add_user(user, password)
            values.update(
                deploy_auth_url=f"{self.base_url}/identity/v3",
                deploy_user_id=user,
                deploy_password=password,
                deploy_project_id=self.project_id,
                deploy_region_name=self.scenario.region,
            )
        elif deployment.transport == "CFN_SIGNAL":
            values["deploy_signal_id"] = self._cfn_signal_url(deployment)
            values["deploy_signal_verb"] = "POST"
        return [
            {"name": k, "type": "String", "value": v, "description": _INPUT_DESCRIPTIONS.get(k, "")}
            for k, v in values.items()
        ]

    def _cfn_signal_url(self, deployment: Deployment) -> str:
        """A pre-signed heat-api-cfn URL (EC2 signature version 2) that signals ``deployment``."""
        from .cfn import ec2_signature  # the signing rule lives with the API that checks it

        access, secret = self._uuid().replace("-", ""), self._uuid().replace("-", "")
        self.ec2_keys[access] = secret
        stack = deployment.resource.stack
        arn = f"arn:openstack:heat::{self.project_id}:stacks/{stack.name}/{stack.id}/resources/{deployment.name}"
        url = f"{self.cfn_endpoint}signal/{quote(arn, safe='')}"
        params = {
            "Timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "SignatureMethod": "HmacSHA256",
            "AWSAccessKeyId": access,
            "SignatureVersion": "2",
        }
        parts = urlsplit(url)
        params["Signature"] = ec2_signature(secret, "POST", parts.netloc, parts.path, params)
        return f"{url}?{urlencode(params)}"

    def polled(self, node: Member) -> None:
        with self.lock:
            node.polled_at = node.polled_at or utcnow()

    # -- signals and what they complete --------------------------------------------------------

    def signal(self, deployment_id: str, details: dict) -> None:
        """``signal_software_deployment``: a deployment's outputs, through any of its transports."""
        with self.lock:
            deployment = self.deployments.get(deployment_id)
            if deployment is None or deployment.status != "IN_PROGRESS":
                return
            code = details.get("deploy_status_code")
            if code is not None and str(code) != "0":
                self._deployment_done(
                    deployment,
                    "FAILED",
                    f"deploy_status_code : Deployment exited with non-zero status code: {code}",
                    details,
                )
            else:
                self._deployment_done(deployment, "COMPLETE", "Outputs received", details)

    def _deployment_done(self, deployment: Deployment, status: str, reason: str, outputs: dict) -> None:
        deployment.status, deployment.status_reason, deployment.updated = status, reason, utcnow()
        deployment.output_values = (
            {k: outputs.get(k) for k in ("deploy_stdout", "deploy_stderr", "deploy_status_code")} if outputs else {}
        )
        node = deployment.node
        node.deployed_server.metadata = self._metadata(node)
        if status == "FAILED":
            self._fail(deployment.resource, "Error", f"Deployment to server failed: {reason}")
        else:
            self._set_resource(deployment.resource, "CREATE_COMPLETE")
            self._advance(node)

    def _advance(self, node: Member) -> None:
        """The member's stacks move on as their deployments complete, as Heat's dependencies let them."""
        if node.failed or node.completed:
            return
        server_stack, member_stack = node.server.nested, node.member.nested
        if not _all_complete(server_stack):
            return
        if server_stack.status.endswith("IN_PROGRESS"):
            self._set_stack(server_stack, "CREATE_COMPLETE", "Stack CREATE completed successfully")
            self._set_resource(node.server, "CREATE_COMPLETE")
            self._create_deployments(
                node,
                member_stack,
                [
                    (
                        "NetworkDeployment",
                        "OS::TripleO::SoftwareDeployment",
                        "os-apply-config",
                        "NetworkConfig",
                        "OS::TripleO::Net::SoftwareConfig",
                    ),
                    (
                        f"{node.role}Deployment",
                        "OS::Heat::StructuredDeployment",
                        "hiera",
                        f"{node.role}Config",
                        "OS::Heat::StructuredConfig",
                    ),
                ],
            )
            return
        if _all_complete(member_stack):
            node.completed = True
            self._set_stack(member_stack, "CREATE_COMPLETE", "Stack CREATE completed successfully")
            self._set_resource(node.member, "CREATE_COMPLETE")
            self._maybe_finish()

    def _fail(self, resource: Resource, error: str, message: str, path: list[str] | None = None) -> None:
        """A resource fails, then its stack, then the stack resource above it, up to the root: each
        reason as Heat writes it (``Resource CREATE failed: Error: resources.X: …``), the levels above
        reading the failure back out of the reason below, as ``ResourceFailure`` does."""
        path = ["resources", resource.name] + (path or [])
        self._set_resource(resource, "CREATE_FAILED", failure_text(error, path, message))
        stack = resource.stack
        if stack.status.endswith("FAILED"):
            return
        reason = f"Resource CREATE failed: {failure_text(error, path, message)}"
        self._set_stack(stack, "CREATE_FAILED", reason)
        for member in self.members:
            if stack in (member.server.nested, member.member.nested):
                member.failed = True
        if stack.parent is not None:
            parsed = [part.strip() for part in reason.split(":")]
            self._fail(stack.parent, parsed[1], ": ".join(parsed[3:]), parsed[2].split("."))

    def _maybe_finish(self) -> None:
        root = self.root
        for group in root.resources.values():
            if group.status.endswith("IN_PROGRESS") and all(
                m.status == "CREATE_COMPLETE" for m in group.nested.resources.values()
            ):
                action = group.status.split("_")[0]
                self._set_stack(group.nested, f"{action}_COMPLETE", f"Stack {action} completed successfully")
                self._set_resource(group, f"{action}_COMPLETE")
        if root.status.endswith("IN_PROGRESS") and all(g.status.endswith("COMPLETE") for g in root.resources.values()):
            action = root.status.split("_")[0]
            self._set_stack(root, f"{action}_COMPLETE", f"Stack {action} completed successfully")

    def _time_out(self, stack: Stack) -> None:
        with self.lock:
            if stack.status.endswith("IN_PROGRESS"):
                action = stack.status.split("_")[0]
                self._set_stack(stack, f"{action}_FAILED", "Timed out")

    def scale(self, role_name: str, count: int) -> list[Member]:
        """Add ``count`` members to a role (a stack update); their deployments wait for their agents."""
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
            return [self._add_member(role, group, index) for index in range(first, first + count)]

    def member_of_stack(self, stack_name: str) -> Member | None:
        """The node whose server stack is ``stack_name`` (the CFN API finds resources so)."""
        return next((m for m in self.members if m.server.nested and m.server.nested.name == stack_name), None)

    # -- the API -----------------------------------------------------------------------

    def routes(self, router: Router) -> None:
        base = "/heat/v1/{project}"
        router.add("GET", "/heat", self.versions, heat_error, auth=False)
        router.add("GET", base + "/stacks", self.list_stacks, heat_error)
        router.add("GET", base + "/stacks/{stack}", self.redirect, heat_error)
        router.add("GET", base + "/stacks/{stack}/{sub}", self.redirect_or_show, heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/resources", self.list_resources, heat_error)
        router.add("GET", base + "/stacks/{stack}/{stack_id}/resources/{resource}", self.show_resource, heat_error)
        router.add(
            "GET", base + "/stacks/{stack}/{stack_id}/resources/{resource}/metadata", self.resource_metadata, heat_error
        )
        router.add(
            "POST", base + "/stacks/{stack}/{stack_id}/resources/{resource}/signal", self.resource_signal, heat_error
        )
        router.add("GET", base + "/stacks/{stack}/{stack_id}/events", self.list_events, heat_error)
        router.add("GET", base + "/software_deployments", self.list_deployments, heat_error)
        router.add("GET", base + "/software_deployments/metadata/{server_id}", self.deployments_metadata, heat_error)
        router.add("GET", base + "/software_deployments/{deployment_id}", self.show_deployment, heat_error)
        router.add("GET", base + "/software_configs/{config_id}", self.show_config, heat_error)

    def versions(self, request: Request) -> Response:
        return Response(
            300,
            {
                "versions": [
                    {"id": "v1.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{self.base_url}/heat/v1/"}]}
                ]
            },
        )

    def _stack(self, name_or_id: str, stack_id: str | None = None) -> Stack:
        with self.lock:
            # With an id, Heat looks the stack up by it alone: a right name beside a wrong id is not found.
            stack = (
                self.stacks.get(stack_id)
                if stack_id
                else self.stacks.get(name_or_id)
                or next((s for s in self.stacks.values() if s.name == name_or_id), None)
            )
        if stack is None or (stack_id and stack.name != name_or_id and stack.id != name_or_id):
            raise HttpError(404, "Not Found", f"The Stack ({name_or_id}) could not be found.", "EntityNotFound")
        return stack

    def _stack_url(self, stack: Stack) -> str:
        return f"{self.endpoint}/stacks/{quote(stack.name, safe='')}/{stack.id}"

    def _stack_body(self, stack: Stack) -> dict:
        return {
            "id": stack.id,
            "stack_name": stack.name,
            "stack_status": stack.status,
            "stack_status_reason": stack.reason,
            "creation_time": heat_time(stack.created),
            "updated_time": heat_time(stack.updated),
            "deletion_time": None,
            "description": "",
            "parent": stack.parent.stack.id if stack.parent else None,
            "stack_owner": None,
            "stack_user_project_id": self.project_id,
            "tags": None,
            "timeout_mins": None,
            "disable_rollback": True,
            "parameters": {"OS::stack_name": stack.name, "OS::stack_id": stack.id},
            "outputs": [],
            "capabilities": [],
            "notification_topics": [],
            "template_description": "",
            "links": [{"href": self._stack_url(stack), "rel": "self"}],
        }

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
        links = [
            {"href": f"{self._stack_url(stack)}/resources/{quote(resource.name, safe='')}", "rel": "self"},
            {"href": self._stack_url(stack), "rel": "stack"},
        ]
        if resource.nested is not None:
            links.append({"href": self._stack_url(resource.nested), "rel": "nested"})
        body = {
            "resource_name": resource.name,
            "logical_resource_id": resource.name,
            "physical_resource_id": resource.physical_id,
            "resource_type": resource.type,
            "resource_status": resource.status,
            "resource_status_reason": resource.reason,
            "required_by": [],
            "creation_time": heat_time(resource.created),
            "updated_time": heat_time(resource.updated or resource.created),
            "links": links,
        }
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
                    values = {
                        "type": resource.type,
                        "status": resource.status.split("_", 1)[-1],
                        "name": resource.name,
                        "action": resource.status.split("_", 1)[0],
                        "id": resource.physical_id,
                        "physical_resource_id": resource.physical_id,
                    }
                    if all(values[k] in wanted for k, wanted in filters.items()):
                        found.append(self._resource_body(resource, depth > 0))
            return Response(200, {"resources": found})

    def _resource(self, request: Request) -> Resource:
        stack = self._stack(request.match["stack"], request.match["stack_id"])
        resource = stack.resources.get(request.match["resource"])
        if resource is None:
            raise HttpError(
                404, "Not Found", f"The Resource ({request.match['resource']}) could not be found.", "ResourceNotFound"
            )
        return resource

    def show_resource(self, request: Request) -> Response:
        with self.lock:
            resource = self._resource(request)
            return Response(
                200, {"resource": {**self._resource_body(resource, False), "attributes": {}, "description": ""}}
            )

    def resource_metadata(self, request: Request) -> Response:
        with self.lock:
            resource = self._resource(request)
            metadata = resource.metadata
            caller = self.keystone.token_user(request.headers.get("x-auth-token")) if self.keystone else None
            node = next(
                (m for m in self.members if m.user_id and m.user_id == caller and m.deployed_server is resource), None
            )
        if node is not None:  # the node's heat collector polling its own resource
            self.polled(node)
        return Response(200, {"metadata": metadata})

    def resource_signal(self, request: Request) -> Response:
        """HEAT_SIGNAL: the deployment's stack user posts the outputs to its resource."""
        with self.lock:
            resource = self._resource(request)
            deployment = self.deployments.get(resource.physical_id)
        if deployment is None:
            raise HttpError(
                400,
                "Bad Request",
                f"Signal resource during {resource.status.split('_')[0]} is not supported.",
                "ResourceFailure",
            )
        self.signal(deployment.id, request.json())
        return Response(200, None)

    def _deployment_body(self, d: Deployment) -> dict:
        body = {
            "id": d.id,
            "server_id": d.node.deployed_server.physical_id,
            "config_id": d.config_id,
            "input_values": {},
            "output_values": d.output_values or None,
            "action": d.action,
            "status": d.status,
            "status_reason": d.status_reason,
            "creation_time": heat_time(d.created),
        }
        if d.updated:
            body["updated_time"] = heat_time(d.updated)
        return body

    def list_deployments(self, request: Request) -> Response:
        server_id = request.arg("server_id")
        with self.lock:
            found = [
                d
                for d in self.deployments.values()
                if server_id is None or d.node.deployed_server.physical_id == server_id
            ]
            return Response(200, {"software_deployments": [self._deployment_body(d) for d in found]})

    def show_deployment(self, request: Request) -> Response:
        with self.lock:
            deployment = self.deployments.get(request.match["deployment_id"])
            if deployment is None:
                raise HttpError(
                    404, "Not Found", f"Deployment with id {request.match['deployment_id']} not found", "NotFound"
                )
            return Response(200, {"software_deployment": self._deployment_body(deployment)})

    def deployments_metadata(self, request: Request) -> Response:
        with self.lock:
            node = next((m for m in self.members if m.deployed_server.physical_id == request.match["server_id"]), None)
            return Response(200, {"metadata": self._deployment_configs(node) if node else []})

    def show_config(self, request: Request) -> Response:
        with self.lock:
            deployment = next((d for d in self.deployments.values() if d.config_id == request.match["config_id"]), None)
            if deployment is None:
                raise HttpError(
                    404, "Not Found", f"Software config with id {request.match['config_id']} not found", "NotFound"
                )
            config = next(c for c in self._deployment_configs(deployment.node) if c["id"] == deployment.config_id)
            return Response(200, {"software_config": config})

    def _event_body(self, event: Event, with_root: bool) -> dict:
        stack = event.stack
        stack_url = self._stack_url(stack)
        links = [
            {"href": f"{stack_url}/resources/{event.resource_name}/events/{event.id}", "rel": "self"},
            {"href": f"{stack_url}/resources/{event.resource_name}", "rel": "resource"},
            {"href": stack_url, "rel": "stack"},
        ]
        if with_root:
            links.append({"href": self._stack_url(stack.root), "rel": "root_stack"})
        return {
            "id": event.id,
            "event_time": heat_time(event.time),
            "resource_name": event.resource_name,
            "logical_resource_id": event.resource_name,
            "physical_resource_id": event.physical_resource_id,
            "resource_status": event.status,
            "resource_status_reason": event.reason,
            "links": links,
        }

    def list_events(self, request: Request) -> Response:
        depth = self._depth(request)
        stack = self._stack(request.match["stack"], request.match["stack_id"])
        sort_dir = request.arg("sort_dir", "asc")
        if sort_dir not in ("asc", "desc"):
            raise HttpError(400, "Bad Request", "Unknown sort direction, must be 'desc' or 'asc'", "Invalid")
        with self.lock:
            events = sorted(
                (e for s, _ in stack.descendants(depth) for e in s.events),
                key=lambda e: e.seq,
                reverse=sort_dir == "desc",
            )
            marker = request.arg("marker")
            if marker:
                position = next((i for i, e in enumerate(events) if e.id == marker), None)
                if position is not None:  # an unknown (purged) marker lists from the start
                    events = events[position + 1 :]
            limit = request.arg("limit")
            if limit:
                events = events[: int(limit)]
            return Response(200, {"events": [self._event_body(e, depth > 0) for e in events]})


def _all_complete(stack: Stack) -> bool:
    return all(r.status.endswith("COMPLETE") and not r.status.startswith("INIT") for r in stack.resources.values())


#: Heat's descriptions of the inputs it derives (software_deployment.py).
_INPUT_DESCRIPTIONS = {
    "deploy_server_id": "ID of the server being deployed to",
    "deploy_action": "Name of the current action being deployed",
    "deploy_stack_id": "ID of the stack this deployment belongs to",
    "deploy_resource_name": "Name of this deployment resource in the stack",
    "deploy_signal_transport": "How the server should signal to heat with the deployment output values.",
    "deploy_signal_id": "ID of signal to use for signaling output values",
    "deploy_signal_verb": "HTTP verb to use for signaling outputvalues",
    "deploy_auth_url": "URL for API authentication",
    "deploy_user_id": "ID of the user to use for signalling output values",
    "deploy_password": "Password for API authentication",
    "deploy_project_id": "ID of project for API authentication",
    "deploy_region_name": "Region name for API authentication",
}
