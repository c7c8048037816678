"""Which physical node is which Heat member: roles → ordered host lists.

An inventory file is read in whichever of these forms it is written (told apart by content):

- stackreflex's own YAML: ``roles: {Role: [host, ...]}``, optional ``hostnames: {name: address}``,
  ``undercloud: address`` and, for stacks that are not TripleO-shaped,
  ``servers: {resource path or name property: address}``. A host may carry its SSH port:
  ``192.0.2.10:2222``.
- TripleO's ``tripleo-ansible-inventory.yaml`` (``tripleo-ansible-inventory --static-yaml-inventory``;
  ``~/overcloud-deploy/<stack>/`` on newer releases), and plain Ansible inventories, YAML or INI.

In an Ansible-shaped inventory the roles are, in this order of preference:

1. the groups whose own ``vars`` carry ``tripleo_role_name`` (TripleO writes it on each role
   group: ``Controller``, ``Compute``, ``CephStorage``…), named by it; their hosts are ordered by
   the number their name ends with (``overcloud-controller-2`` before ``-10``), which is the Heat
   member index TripleO's hostname format gives them;
2. else the children of the stack group (``allovercloud``'s children, or ``overcloud``);
3. else every group that lists hosts itself (not ``Undercloud``, ``all``, ``ungrouped``);

in 2 and 3 hosts keep the file's order. Service groups (``nova_compute``, ``mysql``…) only name
roles as children, so they are not roles. Each host's address is its ``ansible_host`` (else its
name), its SSH user, port and key ``ansible_user``/``ansible_ssh_user``, ``ansible_port`` and
``ansible_ssh_private_key_file``, group vars inherited as Ansible does (a child group's over its
parent's, the host's own over both); every host's name also maps to it (``hostnames``), so Nova's
host names and Heat's server names find it. The undercloud is the ``Undercloud`` group's host. A
TripleO inventory merged from several stacks names each role once per stack: give stackreflex the
stack's own inventory instead.

Without a file: the ``OVERCLOUD_ROLES`` + ``<Role>_hosts`` variables operators already use.
"""

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import StackreflexError


class InventoryError(StackreflexError):
    """The inventory is missing, malformed or does not cover a node Heat is waiting for."""


@dataclass(frozen=True)
class Host:
    address: str
    port: int | None = None
    #: The SSH user and key the inventory gives this node (else the settings' and ssh config's).
    user: str | None = None
    key_file: Path | None = None

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


def node_of_host(path: Path | None, hostname: str, environ: dict[str, str] | None = None) -> Host:
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


def load_inventory(path: Path | None = None, environ: dict[str, str] | None = None) -> Inventory:
    """The inventory file if given (any form the module docstring lists), else ``OVERCLOUD_ROLES``
    and ``<Role>_hosts``."""
    if path is not None:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(f"inventory {path}: {exc}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            if _looks_like_ini(text):
                return _from_groups(path, _ini_groups(path, text))
            raise InventoryError(f"inventory {path}: neither YAML nor an Ansible INI inventory: {exc}") from None
        if raw is None:
            return Inventory()
        if isinstance(raw, dict) and _looks_like_ansible(raw):
            return _from_groups(path, _yaml_groups(path, raw))
        if not isinstance(raw, dict) and _looks_like_ini(text):
            return _from_groups(path, _ini_groups(path, text))
        if not isinstance(raw, dict) or not isinstance(raw.get("roles", {}), dict):
            raise InventoryError(
                f"inventory {path}: expected stackreflex's 'roles: {{Role: [host, ...]}}' or an Ansible "
                "inventory (groups with hosts/children/vars, YAML or INI)"
            )
        if not set(raw) & {"roles", "hostnames", "servers", "undercloud"}:
            odd = [str(k) for k, v in raw.items() if not (v is None or (isinstance(v, dict) and set(v) <= _GROUP_KEYS))]
            raise InventoryError(
                f"inventory {path}: {', '.join(odd)}: neither stackreflex's keys (roles, hostnames, servers, "
                "undercloud) nor Ansible groups (mappings of hosts, children and vars)"
            )
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


# -- Ansible inventories ----------------------------------------------------------------------

#: Groups that are never roles.
NOT_ROLES = {"all", "ungrouped", "undercloud", "excluded_overcloud"}
_GROUP_KEYS = {"hosts", "children", "vars"}


@dataclass
class _Group:
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Groups:
    """An Ansible inventory, flattened: groups by name and each host's own vars."""

    groups: dict[str, _Group] = field(default_factory=dict)
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group())

    def add_host(self, group: str, host: str, variables: dict[str, Any]) -> None:
        if host not in self.group(group).hosts:
            self.group(group).hosts.append(host)
        self.hostvars.setdefault(host, {}).update(variables)


def _looks_like_ansible(raw: dict[Any, Any]) -> bool:
    """Every top-level value is a group: empty, or a mapping of hosts/children/vars."""
    return all(v is None or (isinstance(v, dict) and set(v) <= _GROUP_KEYS) for v in raw.values()) and any(
        isinstance(v, dict) and v for v in raw.values()
    )


def _looks_like_ini(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "#;"]
    return bool(lines) and bool(re.fullmatch(r"\[[^\[\]\s]+\]", lines[0]))


def _yaml_groups(path: Path, raw: dict[Any, Any]) -> _Groups:
    parsed = _Groups()

    def visit(name: str, body: Any, parent: str | None) -> None:
        group = parsed.group(name)
        if parent is not None and name not in parsed.group(parent).children:
            parsed.group(parent).children.append(name)
        if body is None:
            return
        if not isinstance(body, dict) or not set(body) <= _GROUP_KEYS:
            raise InventoryError(f"inventory {path}: group {name}: expected a mapping of hosts, children and vars")
        hosts, children, variables = (body.get(k) or {} for k in ("hosts", "children", "vars"))
        if not all(isinstance(x, dict) for x in (hosts, children, variables)):
            raise InventoryError(f"inventory {path}: group {name}: hosts, children and vars must be mappings")
        for host, host_vars in hosts.items():
            if host_vars is not None and not isinstance(host_vars, dict):
                raise InventoryError(f"inventory {path}: host {host} in {name}: its vars must be a mapping")
            parsed.add_host(name, str(host), host_vars or {})
        group.vars.update(variables)
        for child, child_body in children.items():
            visit(str(child), child_body, name)

    for name, body in raw.items():
        visit(str(name), body, None)
    return parsed


def _ini_groups(path: Path, text: str) -> _Groups:
    """Ansible's INI form: ``[group]`` host lines (``name key=value ...``), ``[group:vars]``,
    ``[group:children]``."""
    parsed = _Groups()
    group, kind = "ungrouped", "hosts"
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        header = re.fullmatch(r"\[([^\[\]:\s]+)(?::(vars|children))?\]", line)
        if header:
            group, kind = header.group(1), header.group(2) or "hosts"
            parsed.group(group)
            continue
        where = f"inventory {path} line {number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc}") from None
        if kind == "children":
            if words and words[0] not in parsed.group(group).children:
                parsed.group(group).children.append(words[0])
            continue
        if kind == "vars":
            name, equals, value = line.partition("=")
            if not equals:
                raise InventoryError(f"{where}: expected key=value in [{group}:vars]")
            parsed.group(group).vars[name.strip()] = value.strip().strip("\"'")
            continue
        if re.search(r"\[[^\]]*:[^\]]*\]", words[0]):
            raise InventoryError(f"{where}: host ranges ({words[0]}) are not supported: list each host")
        variables: dict[str, Any] = {}
        for word in words[1:]:
            name, equals, value = word.partition("=")
            if not equals:
                raise InventoryError(f"{where}: host {words[0]}: expected key=value, not {word!r}")
            variables[name] = value
        parsed.add_host(group, words[0], variables)
    return parsed


def _from_groups(path: Path, parsed: _Groups) -> Inventory:
    groups = parsed.groups
    depth = _depths(groups)
    ancestry = _ancestry(groups)

    def host(name: str) -> Host:
        variables: dict[str, Any] = {}
        for group in sorted(ancestry.get(name, set()), key=lambda g: (depth[g], g)):
            variables.update(groups[group].vars)
        variables.update(parsed.hostvars.get(name, {}))
        for key, value in variables.items():
            if key.startswith("ansible_") and isinstance(value, str) and "{{" in value:
                raise InventoryError(f"inventory {path}: host {name}: {key} is a template; stackreflex reads values")
        address = str(_first(variables, "ansible_host", "ansible_ssh_host") or name)
        port = _first(variables, "ansible_port", "ansible_ssh_port")
        key = _first(variables, "ansible_ssh_private_key_file", "ansible_private_key_file")
        try:
            port_number = int(port) if port not in (None, "") else None
        except (TypeError, ValueError):
            raise InventoryError(f"inventory {path}: host {name}: ansible_port {port!r} is not a number") from None
        user = _first(variables, "ansible_user", "ansible_ssh_user")
        return Host(address, port_number, str(user) if user else None, Path(str(key)).expanduser() if key else None)

    tagged: dict[str, str] = {}  # role → its group
    for name, group in groups.items():
        role = group.vars.get("tripleo_role_name")
        if role and name.lower() not in NOT_ROLES:
            if str(role) in tagged:
                raise InventoryError(
                    f"inventory {path}: role {role} is named by groups {tagged[str(role)]} and {name}: an "
                    "inventory merged from several stacks; give the stack's own "
                    "(~/overcloud-deploy/<stack>/tripleo-ansible-inventory.yaml)"
                )
            tagged[str(role)] = name
    if tagged:
        roles = {role: sorted(_members(groups, group), key=_natural) for role, group in tagged.items()}
    else:
        stacks = groups["allovercloud"].children if "allovercloud" in groups else []
        stacks = stacks or (["overcloud"] if "overcloud" in groups else [])
        names = [c for s in stacks for c in groups[s].children] or [
            n for n, g in groups.items() if g.hosts and n.lower() not in NOT_ROLES
        ]
        roles = {n: _members(groups, n) for n in dict.fromkeys(names) if n.lower() not in NOT_ROLES}
    undercloud_group = next((g for n, g in groups.items() if n.lower() == "undercloud" and g.hosts), None)
    every = [h for hosts in roles.values() for h in hosts]
    return Inventory(
        roles={role: [host(h) for h in hosts] for role, hosts in roles.items() if hosts},
        hostnames={h: host(h) for h in dict.fromkeys(every)},
        undercloud=host(undercloud_group.hosts[0]) if undercloud_group else None,
    )


def _first(variables: dict[str, Any], *names: str) -> Any:
    return next((variables[n] for n in names if variables.get(n) not in (None, "")), None)


def _natural(name: str) -> tuple[str, int]:
    """``overcloud-controller-10`` after ``-2``: by the prefix, then the number the name ends with."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def _members(groups: dict[str, _Group], name: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """The hosts of a group and of its children (a cycle is not followed twice)."""
    if name in seen or name not in groups:
        return []
    hosts = list(groups[name].hosts)
    for child in groups[name].children:
        hosts += [h for h in _members(groups, child, seen | {name}) if h not in hosts]
    return hosts


def _depths(groups: dict[str, _Group]) -> dict[str, int]:
    """How deep each group sits under ``all`` (a child deeper than its parent), as Ansible orders vars."""
    depth = dict.fromkeys(groups, 1)
    depth["all"] = 0
    for _ in range(len(groups)):
        changed = False
        for name, group in groups.items():
            for child in group.children:
                if child in depth and depth[child] < depth[name] + 1 <= len(groups):
                    depth[child], changed = depth[name] + 1, True
        if not changed:
            break
    return depth


def _ancestry(groups: dict[str, _Group]) -> dict[str, set[str]]:
    """Each host's groups: those listing it and every parent above them, and ``all``."""
    parents: dict[str, set[str]] = {}
    for name, group in groups.items():
        for child in group.children:
            parents.setdefault(child, set()).add(name)
    result: dict[str, set[str]] = {}
    for name, group in groups.items():
        above, todo = {name}, [name]
        while todo:
            for parent in parents.get(todo.pop(), set()):
                if parent not in above:
                    above.add(parent)
                    todo.append(parent)
        for host in group.hosts:
            result.setdefault(host, {"all"} if "all" in groups else set()).update(above)
    return result
