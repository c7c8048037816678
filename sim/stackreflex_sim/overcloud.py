"""The simulated overcloud as one HTTP server: start it, point openstacksdk at it, drive it."""

from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from . import databases, system
from .archive import seed_filesystem
from .cfn import Cfn
from .cinder import Cinder
from .clock import SimClock
from .faults import Fault, Faults
from .glance import Glance
from .heat import Heat
from .http import HttpError, Request, Response, Router, SimHTTPServer
from .ironic import Ironic
from .keystone import Keystone
from .neutron import Neutron
from .nodes import Service, SimNode
from .nova import Nova
from .scenario import Scenario, load_scenario
from .swift import MetadataStore


@dataclass
class Overcloud:
    """Keystone, Heat and the metadata store behind ``http://host:port``."""

    scenario: Scenario
    server: SimHTTPServer
    keystone: Keystone
    heat: Heat
    metadata: MetadataStore
    nova: Nova
    cinder: Cinder
    glance: Glance
    faults: Faults
    nodes: dict[str, SimNode] = field(default_factory=dict)
    neutron: Neutron | None = None
    ironic: Ironic | None = None
    _system: system.System | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scenario_file: Path | None = None,
        seed: int = 0,
        state_dir: Path | None = None,
        authorized_keys: list[paramiko.PKey] = (),
    ) -> "Overcloud":
        """Serve on ``host:port`` (0: a free port) in a background thread, start every node's
        SSH server (host keys kept in ``state_dir``), and begin the deployment."""
        scenario = scenario or load_scenario(scenario_file)
        router = Router()
        holder: dict = {}
        faults = Faults()
        for spec in scenario.faults:
            faults.add(Fault(**spec))
        server = SimHTTPServer((host, port), router, lambda request: holder["keystone"].authenticate(request), faults)
        base_url = f"http://{host}:{server.server_address[1]}"
        clock = SimClock(scenario.speed)
        keystone = holder["keystone"] = Keystone(scenario, base_url)
        metadata = MetadataStore(base_url, keystone.project_id, scenario.temp_url_key, scenario.temp_url_lifetime)
        heat = Heat(scenario, base_url, keystone.project_id, metadata, clock, seed, keystone)
        glance = Glance(scenario, base_url, clock, faults)
        nova = Nova(scenario, base_url, clock, faults, glance)
        cinder = Cinder(scenario, base_url, clock, faults, nova, glance)
        neutron, ironic = Neutron(scenario, base_url, nova), Ironic(scenario, base_url, faults)
        keystone.services.update(
            {
                "orchestration": ("heat", heat.endpoint),
                "compute": ("nova", nova.endpoint),
                "volumev3": ("cinderv3", cinder.endpoint),
                "image": ("glance", glance.endpoint),
                "cloudformation": ("heat-cfn", heat.cfn_endpoint.rstrip("/")),
                "network": ("neutron", neutron.endpoint),
                "baremetal": ("ironic", ironic.endpoint),
            }
        )
        for service in (keystone, heat, metadata, nova, cinder, glance, neutron, ironic, Cfn(heat)):
            service.routes(router)
        overcloud = cls(
            scenario, server, keystone, heat, metadata, nova, cinder, glance, faults, neutron=neutron, ironic=ironic
        )
        if state_dir is not None:
            overcloud._start_nodes(state_dir, list(authorized_keys), clock)
        router.add("POST", "/sim/scale", overcloud._scale_request, None, auth=False)
        router.add("POST", "/sim/faults", overcloud._fault_request, None, auth=False)
        router.add("DELETE", "/sim/faults", overcloud._clear_faults_request, None, auth=False)
        router.add("GET", "/sim/faults", overcloud._faults_request, None, auth=False)
        router.add("GET", "/sim/nodes", overcloud._nodes_request, None, auth=False)
        server.serve_in_thread()
        heat.start_deployment()
        return overcloud

    def _start_nodes(self, state_dir: Path, keys: list[paramiko.PKey], clock) -> None:
        shared: dict = {}  # the control plane's clusters, one for every node
        for role in self.scenario.roles:
            kind = next(
                (
                    k
                    for word, k in (("Controller", "controller"), ("Compute", "compute"), ("Ceph", "ceph"))
                    if word in role.name
                ),
                "",
            )
            for index, address in enumerate(role.hosts):
                hostname = f"{self.scenario.stack}-{role.name.lower().replace('deployedserver', '')}-{index}"
                self._start_node(address, hostname, state_dir, keys, clock, kind, shared)
        for host, address in self.scenario.compute_addresses.items():
            node = self._start_node(address, host, state_dir, keys, clock, "compute", shared)
            node.services.setdefault("tripleo_nova_compute", Service(enabled=True, active=True))
            node.on_power.append(lambda up, host=host: self.nova.power(host, up))
        if self.scenario.undercloud:
            self._start_node(self.scenario.undercloud, "undercloud", state_dir, keys, clock, "undercloud", shared)
        self._system = system.attach(list(self.nodes.values()))

    def _start_node(
        self, address: str, hostname: str, state_dir: Path, keys: list[paramiko.PKey], clock, kind: str, shared: dict
    ) -> SimNode:
        node = self.nodes[address] = SimNode(
            address,
            hostname,
            self.scenario.ssh_user,
            keys,
            state_dir,
            clock,
            port=self.scenario.ssh_port,
            reboot_time=self.scenario.reboot_time,
            faults=self.faults,
            deployment_time=self.scenario.deployment_time,
            kind=kind,
            shared=shared,
        )
        seed_filesystem(node, self.scenario)
        databases.attach(node, self.scenario)
        return node.start()

    def inventory(self) -> dict:
        """A stackreflex inventory of the simulated nodes: each role's members, each compute
        host's node and the undercloud, as ``address:port``."""
        inventory = {
            "roles": {
                r.name: [f"{h}:{self.nodes[h].port}" for h in r.hosts if h in self.nodes] for r in self.scenario.roles
            },
            "hostnames": {
                host.split(".")[0]: f"{address}:{self.nodes[address].port}"
                for host, address in self.scenario.compute_addresses.items()
                if address in self.nodes
            },
        }
        if self.scenario.undercloud in self.nodes:
            inventory["undercloud"] = f"{self.scenario.undercloud}:{self.nodes[self.scenario.undercloud].port}"
        return inventory

    def known_hosts_lines(self) -> list[str]:
        """known_hosts entries for every node (what `stackreflex nodes trust` would record)."""
        return [f"[{n.address}]:{n.port} {n.key.get_name()} {n.key.get_base64()}" for n in self.nodes.values()]

    @property
    def base_url(self) -> str:
        return self.keystone.base_url

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/identity/v3"

    def environment(self) -> dict[str, str]:
        """The ``OS_*`` variables of a stackrc pointing at this overcloud."""
        return {
            "OS_AUTH_URL": self.auth_url,
            "OS_USERNAME": self.scenario.user,
            "OS_PASSWORD": self.scenario.password,
            "OS_PROJECT_NAME": self.scenario.project,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_REGION_NAME": self.scenario.region,
            "OS_IDENTITY_API_VERSION": "3",
            "OS_INTERFACE": "public",
        }

    def clouds_yaml(self, name: str = "stackreflex-sim") -> str:
        s = self.scenario
        return (
            f"clouds:\n  {name}:\n    auth:\n      auth_url: {self.auth_url}\n      username: {s.user}\n"
            f"      password: {s.password}\n      project_name: {s.project}\n      user_domain_name: Default\n"
            f"      project_domain_name: Default\n    region_name: {s.region}\n    identity_api_version: 3\n"
            f"    interface: public\n"
        )

    def connect(self):
        """An openstacksdk connection to this overcloud."""
        import openstack

        return openstack.connect(
            auth={
                "auth_url": self.auth_url,
                "username": self.scenario.user,
                "password": self.scenario.password,
                "project_name": self.scenario.project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            region_name=self.scenario.region,
            identity_api_version="3",
            interface="public",
            load_yaml_config=False,
            load_envvars=False,
        )

    def node_states(self) -> list[dict]:
        """Each node: role, index, host, its member's status, when it first polled, where its
        deployments stand (URLs and credentials left out)."""
        with self.heat.lock:
            return [
                {
                    "role": m.role,
                    "index": m.index,
                    "host": m.host,
                    "status": m.member.status,
                    "polled_at": m.polled_at.isoformat() if m.polled_at else None,
                    "deployments": {d.name: d.status for d in m.deployments},
                }
                for m in self.heat.members
            ]

    # The admin API (loopback only, no token): drives a running simulator from `stackreflex sim`.

    def _scale_request(self, request: Request) -> Response:
        body = request.json()
        try:
            added = self.heat.scale(str(body.get("role")), int(body.get("count", 0)))
        except (KeyError, ValueError) as exc:
            raise HttpError(400, "Bad Request", str(exc).strip("'")) from None
        return Response(200, {"added": [{"role": m.role, "index": m.index, "host": m.host} for m in added]})

    def _fault_request(self, request: Request) -> Response:
        body = request.json()
        try:
            fault = self.faults.add(
                Fault(
                    **{
                        k: body[k]
                        for k in ("kind", "target", "count", "status", "seconds", "match", "code", "args")
                        if k in body
                    }
                )
            )
        except (TypeError, ValueError) as exc:
            raise HttpError(400, "Bad Request", str(exc)) from None
        return Response(200, {"fault": vars(fault)})

    def _clear_faults_request(self, request: Request) -> Response:
        self.faults.clear()
        return Response(200, {"faults": []})

    def _faults_request(self, request: Request) -> Response:
        return Response(200, {"faults": self.faults.listing()})

    def _nodes_request(self, request: Request) -> Response:
        return Response(200, {"nodes": self.node_states(), "stack_status": self.heat.root.status})

    def stop(self) -> None:
        if self._system is not None:
            self._system.stop()
        for node in self.nodes.values():
            node.stop()
        self.server.shutdown()
        self.server.server_close()
