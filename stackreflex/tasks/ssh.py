"""SSH to nodes with verified host keys: an unknown or changed key is refused, never trusted silently.

The operator's ``~/.ssh/config`` (setting ``ssh_config_file``) is honoured as ``ssh`` would on the
undercloud: looked up by the name stackreflex dials (the inventory's address), it gives HostName,
User, Port, IdentityFile and ProxyJump (one jump host or a chain ``a,b``, each looked up in the
config too; a jump host's own ProxyJump is not followed: write the chain). For a node, what the
inventory says of it, then settings the operator set, win over the config, which wins over the
defaults (user ``stack``, port 22); a jump host is the config's (``user@host:port`` in ProxyJump
first), the settings' user and key only filling in. Every hop's host key is checked against
known_hosts, named by the HostName it resolves to (``[host]:port`` off port 22).
"""

import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from ..core.errors import StackreflexError
from ..core.settings import Settings
from .inventory import Host, InventoryError, load_inventory

#: Seconds one node command may take.
COMMAND_TIMEOUT = 60.0


class SSHError(StackreflexError):
    """A node could not be reached or refused us over SSH."""


class CommandFailed(StackreflexError):
    """A command on a node exited non-zero."""


@dataclass(frozen=True)
class Hop:
    """One SSH connection as it will be dialled: the target node or a jump host on its way."""

    #: The name asked for (inventory address, ProxyJump entry), looked up in the ssh config.
    name: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    #: ``ProxyJump bastion (~/.ssh/config line 4)`` for a jump host, ``node X`` for the target.
    label: str
    #: What to pass to `stackreflex nodes trust` for this hop (its port, unless the config gives it).
    trust_as: str


class _Client(paramiko.SSHClient):
    """An SSH client that closes the jump hosts' connections it was opened through."""

    def __init__(self) -> None:
        super().__init__()
        self.jumps: list[paramiko.SSHClient] = []

    def close(self) -> None:
        super().close()
        while self.jumps:
            self.jumps.pop().close()


def open_ssh(
    settings: Settings,
    host: str | Host,
    *,
    port: int | None = None,
    user: str | None = None,
    key_file: Path | None = None,
    known_hosts: Path | None = None,
) -> paramiko.SSHClient:
    """Connect to ``host`` (through its ProxyJump hosts, if any); the caller closes the client,
    which closes the jump connections too."""
    target, jumps = route(settings, host, port=port, user=user, key_file=key_file)
    known = Path(known_hosts or settings.ssh_known_hosts).expanduser()
    client = _Client()
    try:
        sock = _through(settings, jumps, target, known, client.jumps)
        _connect(settings, client, target, known, sock)
    except BaseException:
        client.close()
        raise
    return client


def route(
    settings: Settings,
    host: str | Host,
    *,
    port: int | None = None,
    user: str | None = None,
    key_file: Path | None = None,
) -> tuple[Hop, list[Hop]]:
    """How ``host`` is reached: the target hop and the jump hosts before it, first hop first.

    Precedence per value: the caller's (the inventory's) word, then settings the operator set,
    then the ssh config, then stackreflex's defaults."""
    node = host if isinstance(host, Host) else _inventory_node(settings, host, port)
    name = node.address if node else str(host)
    port = port or (node.port if node else None)
    user = user or (node.user if node else None)
    key_file = key_file or (node.key_file if node else None)
    config, path = _ssh_config(settings)
    found = config.lookup(name) if config else {}
    explicit = settings.model_fields_set
    keys = [str(Path(k).expanduser()) for k in (key_file, settings.ssh_key_file) if k]
    missing = next((k for k in keys if not Path(k).is_file()), None)
    if missing:
        raise SSHError(f"node {name}: SSH key file {missing} does not exist")
    keys += _identity_files(found)
    target = Hop(
        name=name,
        hostname=found.get("hostname", name),
        port=port or (settings.ssh_port if "ssh_port" in explicit else _port(found, path, name, settings.ssh_port)),
        user=user or (settings.ssh_user if "ssh_user" in explicit else found.get("user", settings.ssh_user)),
        key_files=tuple(dict.fromkeys(keys)),
        label=f"node {name}",
        trust_as=f"{name}:{port}" if port and port != 22 else name,
    )
    if "proxycommand" in found and "proxyjump" not in found:
        raise SSHError(f"node {name}: ProxyCommand ({_where(path, 'proxycommand')}) is not supported; use ProxyJump")
    chain = found.get("proxyjump", "none")
    if chain.strip().lower() == "none":
        return target, []
    where = _where(path, "proxyjump", chain)
    return target, [_jump(settings, config, path, entry.strip(), where) for entry in chain.split(",")]


def _jump(settings: Settings, config: paramiko.SSHConfig | None, path: Path | None, entry: str, where: str) -> Hop:
    """A ProxyJump entry ``[user@]host[:port]``, completed from its own ssh config block."""
    match = re.fullmatch(r"(?:([^@\s]+)@)?(\[[^\]]+\]|[^:\s]+)(?::(\d+))?", entry)
    if not match:
        raise SSHError(f"ProxyJump {entry!r} ({where}): expected [user@]host[:port]")
    user, name, port = match.group(1), match.group(2).strip("[]"), match.group(3)
    found = config.lookup(name) if config else {}
    keys = _identity_files(found)
    keys += [str(Path(settings.ssh_key_file).expanduser())] if settings.ssh_key_file else []
    return Hop(
        name=name,
        hostname=found.get("hostname", name),
        port=int(port) if port else _port(found, path, name, 22),
        user=user or found.get("user", settings.ssh_user),
        key_files=tuple(dict.fromkeys(keys)),
        label=f"ProxyJump {name} ({where})",
        trust_as=f"{name}:{port}" if port and port != "22" else name,
    )


def _identity_files(found: dict[str, Any]) -> list[str]:
    """The config's IdentityFile entries that exist (ssh skips the others, as it does its defaults)."""
    return [str(p) for p in (Path(k).expanduser() for k in found.get("identityfile", [])) if p.is_file()]


def _port(found: dict[str, Any], path: Path | None, name: str, default: int) -> int:
    if "port" not in found:
        return default
    try:
        return int(found["port"])
    except ValueError:
        raise SSHError(
            f"{name}: Port {found['port']!r} ({_where(path, 'port', found['port'])}) is not a number"
        ) from None


def _through(
    settings: Settings, jumps: list[Hop], target: Hop, known: Path, opened: list[paramiko.SSHClient]
) -> paramiko.Channel | None:
    """Connect to each jump host in turn, each through the one before; the channel to ``target``
    from the last one (``None`` without jump hosts). Clients opened are appended to ``opened``."""
    sock: paramiko.Channel | None = None
    for index, hop in enumerate(jumps):
        client = _Client()
        opened.append(client)
        _connect(settings, client, hop, known, sock)
        following = jumps[index + 1] if index + 1 < len(jumps) else target
        transport = client.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel(
                "direct-tcpip",
                (following.hostname, following.port),
                ("127.0.0.1", 0),
                timeout=settings.ssh_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = f"{exc.args[1]}" if isinstance(exc, paramiko.ChannelException) else str(exc)
            raise SSHError(
                f"{hop.label}: cannot forward to {following.hostname}:{following.port} "
                f"(for {following.label}): {reason}"
            ) from None
    return sock


def _connect(
    settings: Settings, client: paramiko.SSHClient, hop: Hop, known: Path, sock: paramiko.Channel | None
) -> None:
    """Open ``client`` to ``hop`` with strict host-key checking; errors say which hop and why."""
    entry = host_key_entry(hop.hostname, hop.port)
    for key_type, key in (_recorded_keys(known).lookup(entry) or {}).items():
        client.get_host_keys().add(entry, key_type, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    trust = f"`stackreflex nodes trust {hop.trust_as}`"
    try:
        client.connect(
            hop.hostname,
            port=hop.port,
            username=hop.user,
            # paramiko tries each file of a list (its stubs say one file)
            key_filename=list(hop.key_files) or None,  # type: ignore[arg-type]
            timeout=settings.ssh_timeout,
            banner_timeout=settings.ssh_timeout,
            auth_timeout=settings.ssh_timeout,
            allow_agent=False,
            look_for_keys=False,
            sock=sock,
        )
    except paramiko.BadHostKeyException:
        raise SSHError(
            f"{hop.label}: SSH host key changed since it was recorded in {known} (as {entry}); if the "
            f"host was rebuilt, run {trust} after checking its fingerprint"
        ) from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise SSHError(
                f"{hop.label}: host key not trusted: {entry} is not in {known}; run {trust} "
                "(or point STACKREFLEX_SSH_KNOWN_HOSTS at the file that has it)"
            ) from None
        raise SSHError(f"{hop.label}: SSH as {hop.user}@{hop.hostname} failed: {exc}") from None
    except OSError as exc:
        raise SSHError(f"{hop.label}: {hop.hostname} unreachable over SSH port {hop.port}: {exc}") from None


_configs: dict[Path, tuple[tuple[int, int, int], paramiko.SSHConfig]] = {}


def _ssh_config(settings: Settings) -> tuple[paramiko.SSHConfig | None, Path | None]:
    """The operator's ssh config (parsed again when it changes), or none when there is no file."""
    if settings.ssh_config_file is None:
        return None, None
    path = Path(settings.ssh_config_file).expanduser()
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with _parsed_lock:
            cached = _configs.get(path)
        if cached is not None and cached[0] == version:
            return cached[1], path
        config = paramiko.SSHConfig.from_path(str(path))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, paramiko.ConfigParseError) as exc:
        raise SSHError(f"ssh config {path}: cannot be read: {exc}") from None
    with _parsed_lock:
        _configs[path] = (version, config)
    return config, path


def _where(path: Path | None, keyword: str, value: str | None = None) -> str:
    """``~/.ssh/config line 7``: where ``keyword [value]`` is written (first such line)."""
    if path is None:
        return "ssh config"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return str(path)
    for number, line in enumerate(lines, 1):
        words = re.split(r"[\s=]+", line.strip(), maxsplit=1)
        if words[0].lower() == keyword and (value is None or (len(words) > 1 and words[1].strip() == value)):
            return f"{path} line {number}"
    return str(path)


_inventories: dict[Path, tuple[tuple[int, int, int], list[Host]]] = {}


def _inventory_node(settings: Settings, address: str, port: int | None) -> Host | None:
    """The inventory's entry for a node dialled by address (it may carry its user and key)."""
    if settings.inventory is None:
        return None
    path = Path(settings.inventory).expanduser()
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with _parsed_lock:
            cached = _inventories.get(path)
        if cached is None or cached[0] != version:
            inventory = load_inventory(path)
            hosts = [h for hs in inventory.roles.values() for h in hs]
            hosts += [*inventory.hostnames.values(), *inventory.servers.values()]
            hosts += [inventory.undercloud] if inventory.undercloud else []
            cached = (version, hosts)
            with _parsed_lock:
                _inventories[path] = cached
    except (OSError, InventoryError):
        return None  # the caller reads the inventory itself and reports what is wrong with it
    for node in cached[1]:
        if node.address == address and (port is None or node.port in (None, port)):
            return node
    return None


_parsed: dict[Path, tuple[tuple[int, int, int], paramiko.HostKeys]] = {}
_parsed_lock = threading.Lock()


def _recorded_keys(known: Path) -> paramiko.HostKeys:
    """known_hosts, parsed again only when the file changes: with hundreds of nodes, parsing
    every key for every connection costs more CPU than the connection itself."""
    try:
        stat = known.stat()
    except FileNotFoundError:
        return paramiko.HostKeys()
    version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _parsed_lock:
        cached = _parsed.get(known)
        if cached is not None and cached[0] == version:
            return cached[1]
    keys = paramiko.HostKeys(str(known))
    with _parsed_lock:
        _parsed[known] = (version, keys)
    return keys


def host_key_entry(address: str, port: int | None) -> str:
    """How known_hosts names a host: ``addr`` on port 22, ``[addr]:port`` otherwise."""
    return address if not port or port == 22 else f"[{address}]:{port}"


def trust_host(
    settings: Settings, address: str, port: int | None = None, known_hosts: Path | None = None
) -> tuple[str, str, str]:
    """Record the key the node presents now in known_hosts (replacing an older one), reaching
    it through its ProxyJump hosts, whose keys must be trusted already.

    Returns (key type, SHA256 fingerprint, what happened: ``added``, ``replaced`` or ``unchanged``).
    """
    path = Path(known_hosts or settings.ssh_known_hosts).expanduser()
    target, jumps = route(settings, address, port=port)
    opened: list[paramiko.SSHClient] = []
    try:
        channel = _through(settings, jumps, target, path, opened)
        try:
            sock = channel or socket.create_connection((target.hostname, target.port), timeout=settings.ssh_timeout)
            transport = paramiko.Transport(sock)
            try:
                transport.start_client(timeout=settings.ssh_timeout)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise SSHError(
                f"{target.label}: cannot read its host key at {target.hostname} port {target.port}: {exc}"
            ) from None
    finally:
        for client in reversed(opened):
            client.close()
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    name = host_key_entry(target.hostname, target.port)
    old: Any = keys.lookup(name) or {}
    outcome = "unchanged" if old.get(key.get_name()) == key else ("replaced" if old else "added")
    if outcome != "unchanged":
        if name in keys:
            del keys[name]
        keys.add(name, key.get_name(), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys.save(str(path))
    return key.get_name(), key.fingerprint, outcome


def run(
    ssh: paramiko.SSHClient,
    command: str,
    *,
    stdin: bytes | None = None,
    sudo: bool = False,
    check: bool = True,
    host: str = "",
) -> tuple[int, str, str]:
    """Run a command on the node; with ``check``, a non-zero exit raises :class:`CommandFailed`."""
    line = f"sudo -n {command}" if sudo else command
    channel_in, channel_out, channel_err = ssh.exec_command(line, timeout=COMMAND_TIMEOUT)
    if stdin is not None:
        channel_in.write(stdin)
        channel_in.channel.shutdown_write()
    status = channel_out.channel.recv_exit_status()
    out, err = channel_out.read().decode(errors="replace"), channel_err.read().decode(errors="replace")
    if check and status != 0:
        raise CommandFailed(f"node {host}: `{line}` exited {status}: {err.strip()[:300]}")
    return status, out, err
