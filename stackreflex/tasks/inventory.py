"""Which physical node is which Heat member: roles → ordered host lists.

From a file (YAML: ``roles: {Role: [host, ...]}``, optional ``hostnames: {name: address}``,
``undercloud: address`` and,
for stacks that are not TripleO-shaped, ``servers: {resource path or name property: address}``)
or from the ``OVERCLOUD_ROLES`` + ``<Role>_hosts`` variables operators already use.
A host may carry its SSH port: ``192.0.2.10:2222``.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import StackreflexError


class InventoryError(StackreflexError):
    """The inventory is missing, malformed or does not cover a node Heat is waiting for."""


@dataclass(frozen=True)
class Host:
    address: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Host":
        text = str(text).strip()
        # one colon: address:port; none (or an IPv6 address): no port
        address, _, port = text.partition(":") if text.count(":") == 1 else (text, "", "")
        try:
            return cls(address, int(port) if port else None)
        except ValueError:
            raise InventoryError(f"host {text!r}: the port after ':' must be a number") from None

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" if self.port else self.address


@dataclass
class Inventory:
    roles: dict[str, list[Host]] = field(default_factory=dict)
    hostnames: dict[str, Host] = field(default_factory=dict)
    servers: dict[str, Host] = field(default_factory=dict)
    #: The undercloud's SSH address (the undercloud checks and backup run there).
    undercloud: Host | None = None

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for role, hosts in self.roles.items():
            for index, host in enumerate(hosts):
                where = f"{role}[{index}]"
                if host.address in seen:
                    raise InventoryError(f"host {host.address} is listed twice: {seen[host.address]} and {where}")
                seen[host.address] = where

    def undercloud_host(self) -> Host:
        """The undercloud's address, or an error saying how to give it."""
        if self.undercloud is None:
            raise InventoryError(
                "the inventory names no undercloud: add 'undercloud: ADDRESS' to the inventory "
                "file (or set UNDERCLOUD_HOST)"
            )
        return self.undercloud

    def host_for(
        self, role: str | None, index: int | None, *, path: str | None = None, name: str | None = None
    ) -> Host:
        """The node for a member: by role and index, else by resource path or name property.
        Callers pass what Heat says of the member, never an event's word for it: the inventory
        is the only map from a Heat member to a host."""
        for key in (path, name):
            if key and key in self.servers:
                return self.servers[key]
            if key and key in self.hostnames:
                return self.hostnames[key]
        if role is None or index is None:
            raise InventoryError(
                f"server {path or name}: not a TripleO role member, and the inventory has no "
                "'servers' entry for its path or name"
            )
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InventoryError(f"{role}[{index!r}]: a member index is a whole number from 0")
        hosts = self.roles.get(role)
        if hosts is None:
            raise InventoryError(
                f"role {role} is not in the inventory (known: {', '.join(self.roles) or 'none'}); "
                f"add it to OVERCLOUD_ROLES and set {role}_hosts"
            )
        if index >= len(hosts):
            raise InventoryError(
                f"role {role} has {len(hosts)} host(s) in the inventory but Heat is creating "
                f"member {index}: add its host to {role}_hosts"
            )
        return hosts[index]


def node_of_host(path: Path | None, hostname: str, environ: Mapping[str, str] | None = None) -> Host:
    """The SSH address of a compute host named as Nova names it: the inventory's ``hostnames``
    entry (full or short name), else the name itself (resolved by DNS)."""
    try:
        inventory = load_inventory(path, environ)
    except InventoryError:
        if path is not None:
            raise
        inventory = Inventory()
    for name in (hostname, hostname.split(".")[0]):
        if name in inventory.hostnames:
            return inventory.hostnames[name]
    return Host.parse(hostname)


def load_inventory(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Inventory:
    """The inventory file if given, else ``OVERCLOUD_ROLES`` and ``<Role>_hosts``."""
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InventoryError(f"inventory {path}: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("roles", {}), dict):
            raise InventoryError(f"inventory {path}: expected a mapping with 'roles: {{Role: [host, ...]}}'")
        return Inventory(
            roles={role: [Host.parse(h) for h in (hosts or [])] for role, hosts in raw.get("roles", {}).items()},
            hostnames={k: Host.parse(v) for k, v in (raw.get("hostnames") or {}).items()},
            servers={k: Host.parse(v) for k, v in (raw.get("servers") or {}).items()},
            undercloud=Host.parse(raw["undercloud"]) if raw.get("undercloud") else None,
        )
    env = os.environ if environ is None else environ
    roles = env.get("OVERCLOUD_ROLES", "").split()
    if not roles:
        raise InventoryError(
            "no node inventory: pass --inventory FILE (or set STACKREFLEX_INVENTORY), or set "
            "OVERCLOUD_ROLES and <Role>_hosts "
            '(e.g. OVERCLOUD_ROLES="ControllerDeployedServer" '
            'ControllerDeployedServer_hosts="192.0.2.10 192.0.2.11 192.0.2.12")'
        )
    missing = [r for r in roles if f"{r}_hosts" not in env]
    if missing:
        raise InventoryError(f"OVERCLOUD_ROLES names {', '.join(missing)} but {missing[0]}_hosts is not set")
    return Inventory(
        roles={r: [Host.parse(h) for h in env[f"{r}_hosts"].split()] for r in roles},
        undercloud=Host.parse(env["UNDERCLOUD_HOST"]) if env.get("UNDERCLOUD_HOST") else None,
    )
