"""SSH to nodes with verified host keys: an unknown or changed key is refused, never trusted silently."""

import socket
import threading
from collections.abc import Mapping
from pathlib import Path

import paramiko

from ..core.errors import StackreflexError
from ..core.settings import Settings

#: Seconds one node command may take.
COMMAND_TIMEOUT = 60.0


class SSHError(StackreflexError):
    """A node could not be reached or refused us over SSH."""


class CommandFailed(StackreflexError):
    """A command on a node exited non-zero."""


def open_ssh(
    settings: Settings,
    host: str,
    *,
    port: int | None = None,
    user: str | None = None,
    key_file: Path | None = None,
    known_hosts: Path | None = None,
) -> paramiko.SSHClient:
    """Connect to ``host`` as the configured user; the caller closes the client."""
    client = paramiko.SSHClient()
    known = Path(known_hosts or settings.ssh_known_hosts).expanduser()
    entry = host_key_entry(host, port or settings.ssh_port)
    for key_type, key in (_recorded_keys(known).lookup(entry) or {}).items():
        client.get_host_keys().add(entry, key_type, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    target = f"{user or settings.ssh_user}@{host}"
    # what to trust: the node as it is reached, with its port unless it is SSH's own
    trusted = f"{host}:{port}" if port and port != 22 else host
    try:
        client.connect(
            host,
            port=port or settings.ssh_port,
            username=user or settings.ssh_user,
            key_filename=str(key_file or settings.ssh_key_file) if (key_file or settings.ssh_key_file) else None,
            timeout=settings.ssh_timeout,
            banner_timeout=settings.ssh_timeout,
            auth_timeout=settings.ssh_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException:
        client.close()
        raise SSHError(
            f"node {trusted}: SSH host key changed since it was recorded in {known}; if the node was "
            f"rebuilt, run `stackreflex nodes trust {trusted}` after checking its fingerprint"
        ) from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise SSHError(
                f"node {trusted}: SSH host key not in {known}; run `stackreflex nodes trust {trusted}` "
                "(or point STACKREFLEX_SSH_KNOWN_HOSTS at the file that has it)"
            ) from None
        raise SSHError(f"node {host}: SSH as {target} failed: {exc}") from None
    except OSError as exc:
        client.close()
        raise SSHError(f"node {host}: unreachable over SSH port {port or settings.ssh_port}: {exc}") from None
    return client


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
    """Record the key the node presents now in known_hosts (replacing an older one).

    Returns (key type, SHA256 fingerprint, what happened: ``added``, ``replaced`` or ``unchanged``).
    """
    path = Path(known_hosts or settings.ssh_known_hosts).expanduser()
    port = port or settings.ssh_port
    try:
        with socket.create_connection((address, port), timeout=settings.ssh_timeout) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.start_client(timeout=settings.ssh_timeout)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
    except (OSError, paramiko.SSHException) as exc:
        raise SSHError(f"node {address}: cannot read its host key on port {port}: {exc}") from None
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    name = host_key_entry(address, port)
    old: Mapping[str, paramiko.PKey] = keys.lookup(name) or {}
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
