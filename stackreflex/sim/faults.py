"""Injectable faults: what the simulator should get wrong, where, and how many times."""

import re
import threading
from dataclasses import dataclass

#: The kinds of fault and what their target names.
FAULT_KINDS = {
    "node_unreachable": "node address",
    "host_key_changed": "node address",
    "ssh_auth_refused": "node address",
    "command_failure": "node address (match: part of the command)",
    "api_error": "regex on the request path (status: HTTP status, default 500)",
    "api_slow": "regex on the request path (seconds: delay)",
    "migration_failure": "server id or name",
    "no_valid_host": "server id or name",
    "snapshot_error": "volume id or name",
    "store_copy_failure": "Glance store id",
    "deployment_failure": "node address (match: part of the deployment's name; code: its exit status, default 1)",
    "agent_stopped": "node address: its os-collect-config stops polling",
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
                aimed = any(t is not None and (re.search(fault.target, t) if kind.startswith("api_")
                                               else fault.target == t) for t in targets)
                if fault.kind == kind and aimed and (not fault.match or fault.match in text):
                    fault.hits += 1
                    if fault.count and fault.hits >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def listing(self) -> list[dict]:
        with self._lock:
            return [vars(f).copy() for f in self._faults]
