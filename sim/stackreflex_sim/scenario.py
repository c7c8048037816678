"""Scenarios: the overcloud the simulator plays, read from YAML.

A role has a count and the addresses of its pre-provisioned nodes, the picture operators
give with ``OVERCLOUD_ROLES`` and ``<Role>_hosts``.
"""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml


class ScenarioError(ValueError):
    """A scenario file that cannot be read; its text names the file and the problem."""


@dataclass
class Role:
    name: str
    count: int
    hosts: list[str]


@dataclass
class Scenario:
    stack: str = "overcloud"
    project: str = "admin"
    user: str = "admin"
    password: str = "sim-password"
    region: str = "regionOne"
    roles: list[Role] = field(default_factory=list)
    #: Swift account key signing the metadata temp URLs.
    temp_url_key: str = "sim-temp-url-key"
    #: Lifetime of a temp URL (simulated seconds).
    temp_url_lifetime: float = 86400 * 365
    #: Simulated seconds a node's agent takes to run one software deployment.
    deployment_time: float = 5.0
    #: Simulated seconds after which a stack still in progress fails (0: never).
    create_timeout: float = 0.0
    #: Simulated seconds per real second.
    speed: float = 1.0
    #: Heat keeps at most this many events per stack.
    max_events_per_stack: int = 1000
    #: Metadata transport of the deployed servers: POLL_TEMP_URL, POLL_SERVER_HEAT or POLL_SERVER_CFN.
    transport: str = "POLL_TEMP_URL"
    #: How the software deployments are signalled back: TEMP_URL_SIGNAL (TripleO's), HEAT_SIGNAL,
    #: CFN_SIGNAL (Heat's default) or NO_SIGNAL (complete at once).
    signal_transport: str = "TEMP_URL_SIGNAL"
    #: The SSH user of the nodes (passwordless sudo) and the port their servers listen on (0: any).
    ssh_user: str = "stack"
    ssh_port: int = 0
    #: Simulated seconds a node is unreachable after ``reboot``.
    reboot_time: float = 30.0
    #: Projects owning servers (the first is the one the operator's token is scoped to).
    projects: list[str] = field(default_factory=lambda: ["admin", "tenant-a"])
    #: Compute hosts that carry workload: host name → number of servers on it.
    compute_hosts: dict[str, int] = field(default_factory=dict)
    #: SSH addresses of compute hosts (host name → loopback address): a node that reboots, taking
    #: its nova-compute service down and up with it.
    compute_addresses: dict[str, str] = field(default_factory=dict)
    #: The undercloud's Ironic nodes, by name (None: one per compute host, named by its short name;
    #: []: none, pre-provisioned servers only).
    baremetal_nodes: list[str] | None = None
    #: The undercloud node's SSH address ("": none).
    undercloud: str = "127.0.0.2"
    #: Telemetry keeps its data in MongoDB on the controllers (OSP 10 and earlier): hieradata names
    #: ``mongodb::server::bind_ip`` and the controllers answer ``mongodump``.
    telemetry_mongodb: bool = False
    #: Nova's ``max_concurrent_live_migrations`` per source host (Nova's default is 1; 0: no limit).
    max_concurrent_live_migrations: int = 1
    #: Every n-th server has volumes attached (0: none), this many each.
    volume_every: int = 3
    volumes_per_server: int = 1
    #: Cinder's availability zones; a zone named like a Glance store is that edge site's.
    volume_zones: list[str] = field(default_factory=lambda: ["nova", "central", "dcn0", "dcn1"])
    #: Images in Glance (in the default store) and the Glance stores.
    images: list[str] = field(default_factory=lambda: ["cirros"])
    stores: list[str] = field(default_factory=lambda: ["central", "dcn0", "dcn1"])
    #: Faults active from the start: [{kind, target, count?, status?, seconds?, match?}, ...]
    faults: list[dict] = field(default_factory=list)
    #: Highest Cinder microversion advertised (3.71: 2023.1 and later; 3.64: Wallaby).
    cinder_max_version: str = "3.71"
    #: Simulated seconds for a live migration, a cold migration, a stop/start, a snapshot, an image copy.
    live_migration_time: float = 10.0
    cold_migration_time: float = 10.0
    power_time: float = 2.0
    snapshot_time: float = 5.0
    image_copy_time: float = 10.0
    #: Simulated seconds to create a volume (from an image or a snapshot), to upload one to Glance.
    volume_create_time: float = 3.0
    image_upload_time: float = 5.0


def load_scenario(path: Path | None = None) -> Scenario:
    """Read a scenario file; without one, the default scenario shipped with the package."""
    try:
        text = path.read_text() if path else resources.files(__package__).joinpath("default.yaml").read_text()
        raw = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None
    roles = [
        Role(name, int(spec.get("count", len(spec.get("hosts", [])))), list(spec.get("hosts", [])))
        for name, spec in (raw.pop("roles", None) or {}).items()
    ]
    for role in roles:
        if len(role.hosts) < role.count:
            raise ScenarioError(f"scenario: role {role.name} has count {role.count} but only {len(role.hosts)} hosts")
    known = set(Scenario.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ScenarioError(f"scenario: unknown keys {', '.join(sorted(unknown))}")
    return Scenario(roles=roles, **raw)
