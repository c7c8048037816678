"""Injectable faults: what the simulator should get wrong, where, and how many times."""

import re
import threading
from dataclasses import dataclass, field

#: The kinds of fault and what their target names.
FAULT_KINDS = {
    "node_unreachable": "node address",
    "host_key_changed": "node address",
    "ssh_auth_refused": "node address",
    "command_failure": "node address (match: part of the command; code: its exit status, default 1)",
    "command_slow": "node address (match: part of the command; seconds: how long it takes first)",
    "api_error": "regex on the request path (status: HTTP status, default 500)",
    "api_slow": "regex on the request path (seconds: delay)",
    "migration_failure": "server id or name",
    "no_valid_host": "server id or name",
    "snapshot_error": "volume id or name",
    "store_copy_failure": "Glance store id",
    "deployment_failure": "node address (match: part of the deployment's name; code: its exit status, default 1)",
    "agent_stopped": "node address: its os-collect-config stops polling",
    # the state pre-upgrade validations read (held until cleared; NODE: address or host name)
    "unit_failed": "NODE, then the unit (args): that systemd unit is failed",
    "disk_full": "NODE: its root filesystem is 99% used",
    "clock_unsynced": "NODE: chronyd has no synchronised source",
    "galera_desynced": "NODE: its Galera node is Donor/Desynced",
    "rabbit_partition": "NODE (default: the last controller): cut off from the RabbitMQ cluster",
    "pacemaker_resource_failed": "Pacemaker resource: it is failed and stopped",
    "ceph_health": "HEALTH_WARN or HEALTH_ERR, then its reason (args)",
    "package_mismatch": "NODE, then the package and the version it has (args)",
    "haproxy_backend_down": "HAProxy backend (proxy name): its servers are DOWN",
    "ironic_maintenance": "Ironic node name: in maintenance",
}


@dataclass
class Fault:
    kind: str
    target: str
    #: How many times it strikes (0: until cleared).
    count: int = 0
    status: int = 500
    seconds: float = 0.0
    match: str = ""
    #: deployment_failure: the exit status the deployment ends with.
    code: int = 1
    #: What else the fault names (the unit, the package and its version, Ceph's reason…).
    args: list[str] = field(default_factory=list)
    hits: int = 0


class Faults:
    """The active faults; services ask ``strike(kind, target)`` at the points where they apply."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def strike(self, kind: str, *targets: str, text: str = "") -> Fault | None:
        """The fault of this kind aimed at one of ``targets`` (counting the hit), or None."""
        with self._lock:
            for fault in self._faults:
                aimed = any(
                    t is not None and (re.search(fault.target, t) if kind.startswith("api_") else fault.target == t)
                    for t in targets
                )
                if fault.kind == kind and aimed and (not fault.match or fault.match in text):
                    fault.hits += 1
                    if fault.count and fault.hits >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def active(self, kind: str) -> list[Fault]:
        """The faults of a kind in force, without counting a hit: for state a node or service
        reports (a failed unit, a full disk) rather than an action that fails."""
        with self._lock:
            return [f for f in self._faults if f.kind == kind]

    def listing(self) -> list[dict]:
        with self._lock:
            return [vars(f).copy() for f in self._faults]
