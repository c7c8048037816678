"""Neutron v2.0: the agents (ML2/OVS, as TripleO deploys it) the pre-upgrade validations list.

Every controller runs the Open vSwitch, DHCP, L3 and Metadata agents; every compute host its
Open vSwitch agent. Hosts are named as TripleO's ``neutron::host`` names them, the node's FQDN
(``overcloud-controller-0.localdomain``, Nova's ``compute-10.localdomain``). A compute host's
agent is dead while Nova sees that host's service down (its node is rebooting).
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import utcnow
from .http import HttpError, Request, Response, Router
from .scenario import Scenario

PREFIX = "/network/v2.0"
#: The attributes a list may filter on (``is_filter`` in neutron-lib's agent definitions).
FILTERS = ("id", "agent_type", "binary", "topic", "host", "admin_state_up", "alive", "description", "availability_zone")
#: Query parameters that are not filters (paging, sorting, fields).
NOT_FILTERS = ("fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir")
#: agent type → binary, topic, availability zone (the L2 and metadata agents have none)
KINDS = {
    "Open vSwitch agent": ("neutron-openvswitch-agent", "N/A", None),
    "DHCP agent": ("neutron-dhcp-agent", "dhcp_agent", "nova"),
    "L3 agent": ("neutron-l3-agent", "l3_agent", "nova"),
    "Metadata agent": ("neutron-metadata-agent", "N/A", None),
}


def neutron_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else None


def neutron_error(error: HttpError) -> object:
    if error.status == 401:  # keystonemiddleware answers before Neutron does
        return {"error": {"code": 401, "title": error.title, "message": error.message}}
    default = {400: "HTTPBadRequest", 404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}.get(
        error.status, "HTTPInternalServerError"
    )
    return {"NeutronError": {"type": error.error_type or default, "message": error.message, "detail": ""}}


def to_boolean(value: str) -> bool:
    """neutron-lib's ``convert_to_boolean``, with its error."""
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise HttpError(
        400, "Bad Request", f"Invalid input for operation: '{value}' cannot be converted to boolean.", "InvalidInput"
    )


@dataclass(eq=False)
class Agent:
    id: str
    agent_type: str
    host: str
    address: str
    started: datetime
    #: for an agent on a compute host: the Nova host whose service state it follows
    compute_host: str | None = None
    admin_state_up: bool = True


class Neutron:
    def __init__(self, scenario: Scenario, base_url: str, nova):
        self.scenario, self.base_url, self.nova = scenario, base_url, nova
        started = utcnow() - timedelta(days=1)
        self.agents: dict[str, Agent] = {}
        for role in scenario.roles:
            name = role.name.lower().replace("deployedserver", "")
            if name.startswith("controller"):
                for i in range(role.count):
                    host = f"{scenario.stack}-{name}-{i}.localdomain"
                    for kind in KINDS:
                        self._add(kind, host, role.hosts[i] if i < len(role.hosts) else "", started)
        for host in scenario.compute_hosts:
            self._add("Open vSwitch agent", host, scenario.compute_addresses.get(host, ""), started, host)

    def _add(self, kind: str, host: str, address: str, started: datetime, compute_host: str | None = None) -> None:
        agent = Agent(
            str(uuid.uuid5(uuid.NAMESPACE_DNS, f"agent-{KINDS[kind][0]}-{host}")),
            kind,
            host,
            address,
            started,
            compute_host,
        )
        self.agents[agent.id] = agent

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/network"

    def routes(self, router: Router) -> None:
        router.add("GET", "/network", self.versions, neutron_error, auth=False)
        router.add("GET", PREFIX + "/agents", self.list_agents, neutron_error)
        router.add("GET", PREFIX + "/agents/{agent}", self.show_agent, neutron_error)

    def versions(self, request: Request) -> Response:
        return Response(
            200,
            {
                "versions": [
                    {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{self.endpoint}/v2.0/"}]}
                ]
            },
        )

    def _down_since(self, agent: Agent) -> datetime | None:
        """When the agent's node went down (its last heartbeat), or None while it is up."""
        if agent.compute_host is None:
            return None
        with self.nova.lock:
            service = self.nova.services.get(agent.compute_host)
            return service.updated if service is not None and service.state == "down" else None

    def _agent_body(self, agent: Agent) -> dict:
        binary, topic, zone = KINDS[agent.agent_type]
        down_since = self._down_since(agent)
        configurations = {
            "Open vSwitch agent": {
                "ovs_hybrid_plug": False,
                "in_distributed_mode": False,
                "datapath_type": "system",
                "vhostuser_socket_dir": "/var/run/openvswitch",
                "tunneling_ip": agent.address,
                "arp_responder_enabled": False,
                "devices": 0,
                "log_agent_heartbeats": False,
                "l2_population": False,
                "tunnel_types": ["vxlan"],
                "extensions": ["qos"],
                "enable_distributed_routing": False,
                "bridge_mappings": {"datacentre": "br-ex"} if agent.compute_host is None else {},
            },
            "DHCP agent": {
                "subnets": 0,
                "dhcp_lease_duration": 86400,
                "networks": 0,
                "ports": 0,
                "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
                "log_agent_heartbeats": False,
            },
            "L3 agent": {
                "agent_mode": "legacy",
                "gateway_external_network_id": "",
                "handle_internal_only_routers": True,
                "routers": 0,
                "interfaces": 0,
                "floating_ips": 0,
                "interface_driver": "openvswitch",
                "log_agent_heartbeats": False,
                "ex_gw_ports": 0,
            },
            "Metadata agent": {
                "log_agent_heartbeats": False,
                "nova_metadata_host": "",
                "nova_metadata_port": 8775,
                "metadata_proxy_socket": "/var/lib/neutron/metadata_proxy",
            },
        }[agent.agent_type]
        return {
            "id": agent.id,
            "agent_type": agent.agent_type,
            "binary": binary,
            "topic": topic,
            "host": agent.host,
            "admin_state_up": agent.admin_state_up,
            "alive": down_since is None,
            "availability_zone": zone,
            "configurations": configurations,
            "created_at": neutron_time(agent.started),
            "started_at": neutron_time(agent.started),
            "heartbeat_timestamp": neutron_time(down_since or utcnow()),
            "description": None,
            "resources_synced": True if agent.agent_type == "Open vSwitch agent" else None,
        }

    @staticmethod
    def _fields(body: dict, request: Request) -> dict:
        fields = [f for f in request.query.get("fields", []) if f]
        return {k: v for k, v in body.items() if k in fields} if fields else body

    def list_agents(self, request: Request) -> Response:
        """Every agent matching the filters (any of a filter's values, as Neutron's ``?host=a&host=b``)."""
        invalid = [k for k in request.query if k not in FILTERS and k not in NOT_FILTERS]
        if invalid:
            raise HttpError(400, "Bad Request", f"{invalid} is invalid attribute for filtering")
        wanted = {
            k: [to_boolean(v) if k in ("admin_state_up", "alive") else v for v in values if v]
            for k, values in request.query.items()
            if k in FILTERS
        }
        bodies = [self._agent_body(a) for a in self.agents.values()]
        found = [b for b in bodies if all(not values or b[k] in values for k, values in wanted.items())]
        return Response(200, {"agents": [self._fields(b, request) for b in found]})

    def show_agent(self, request: Request) -> Response:
        agent = self.agents.get(request.match["agent"])
        if agent is None:
            raise HttpError(404, "Not Found", f"Agent {request.match['agent']} could not be found.", "AgentNotFound")
        return Response(200, {"agent": self._fields(self._agent_body(agent), request)})
