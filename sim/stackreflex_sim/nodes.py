"""Simulated nodes over real SSH: one paramiko server per node, each on its own loopback
address, with a host key that survives restarts and public-key authentication.

Commands run against the node's own state (files, services). The interpreter knows what
agent configuration needs, and answers ``command not found`` (exit 127) for anything else:
``sudo [-n]``, ``cat``, ``test -e|-f|-d``, ``rm [-r] [-f]``, ``mkdir [-p]``,
``install [-m MODE] [-o USER] /dev/stdin PATH`` and ``install -d``, ``mv -f``, ``chmod``, ``stat -c %a``,
``systemctl start|stop|restart|enable|is-active|status``, ``curl -w %{http_code} URL`` (a real
request from the node's address), ``hostname``, ``reboot``, ``true``, ``sh -c SCRIPT``; a small
shell chains them (``&&``, ``||``, ``;``), pipes them (``|``) and redirects (``> FILE``). Other
modules register more (``node_command``). ``/proc/sys/kernel/random/boot_id`` changes on every
boot. The SFTP subsystem serves the same files (sftp.py). Like sshd with ``AllowTcpForwarding``,
a node forwards ``direct-tcpip`` channels to loopback addresses (so one node can be another's
ProxyJump host), connecting from its own address; others are administratively prohibited.
"""

import http.client
import ipaddress
import logging
import posixpath
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import paramiko

from .agent import Agent
from .clock import SimClock
from .faults import Faults
from .sftp import SimSFTPServer

#: The template os-apply-config would render over /etc/os-collect-config.conf.
#: The logger of the simulated nodes' sshd (paramiko's server transports).
SSHD_LOG = "stackreflex.sim.sshd"


class _ClientHangUps(logging.Filter):
    """A client that hangs up is no error for an sshd (OpenSSH logs it at INFO), but paramiko's
    server transport logs it at ERROR, which would print in every demo; it is INFO here too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith("Socket exception"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            # the logger let it through as an ERROR: as INFO it passes only where INFO is logged
            return logging.getLogger(SSHD_LOG).isEnabledFor(logging.INFO)
        return True


logging.getLogger(SSHD_LOG).addFilter(_ClientHangUps())

OAC_TEMPLATE = "/usr/libexec/os-apply-config/templates/etc/os-collect-config.conf"
#: Real seconds between ``reboot`` answering and the node dropping its connections.
SHUTDOWN_DELAY = 0.5
#: Simulated seconds a node stays unreachable after ``reboot``.
DEFAULT_REBOOT_TIME = 30.0
BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: Real seconds between accepting an exec request and running it (see _Server).
EXEC_START_DELAY = 0.05


def host_key(state_dir: Path, address: str) -> paramiko.PKey:
    """The node's host key, created once and kept in ``state_dir``."""
    path = state_dir / f"{address}.key"
    if path.exists():
        return paramiko.ECDSAKey(filename=str(path))
    state_dir.mkdir(parents=True, exist_ok=True)
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(path))
    return key


#: Commands other modules teach the nodes (``@node_command("pcs")``): name → fn(node, args, stdin).
COMMANDS: dict[str, "Callable[[SimNode, list[str], bytes], tuple[int, bytes, bytes]]"] = {}


def _split(tokens: list[str], separator: str) -> list[list[str]]:
    """``tokens`` cut at each ``separator``."""
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == separator:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def node_command(*names: str):
    """Register a node command implemented outside this module (system state, databases…)."""

    def register(fn):
        for name in names:
            COMMANDS[name] = fn
        return fn

    return register


@dataclass
class Service:
    enabled: bool = False
    active: bool = False


@dataclass(eq=False)
class SimNode:
    """One pre-provisioned node: its address, SSH server and state."""

    address: str
    hostname: str
    user: str
    authorized_keys: list[paramiko.PKey]
    state_dir: Path
    clock: SimClock
    port: int = 0
    reboot_time: float = DEFAULT_REBOOT_TIME
    faults: Faults = field(default_factory=Faults)
    #: Simulated seconds the agent takes to run one software deployment.
    deployment_time: float = 0.0
    #: The node's files (secrets among them: kept out of the repr).
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    modes: dict[str, int] = field(default_factory=dict)
    #: Owners of files and directories (``install -o``) that root does not own.
    owners: dict[str, str] = field(default_factory=dict)
    #: Directories that exist besides those holding a file (a file cannot be made where there is none).
    dirs: set[str] = field(default_factory=lambda: {"/etc", "/tmp", "/var/lib/os-collect-config"})
    services: dict[str, Service] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    #: Called with False when the node goes down for a reboot and True when it is back.
    on_power: list = field(default_factory=list)
    #: What the node is: ``controller``, ``compute``, ``ceph``, ``undercloud`` or ``""`` (other roles).
    kind: str = ""
    #: State shared by every node of the simulator (the control plane's clusters), keyed by module.
    shared: dict = field(default_factory=dict, repr=False)
    #: This node's own state kept by other modules, keyed by module.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.key = host_key(self.state_dir, self.address)
        self.impostor_key = host_key(self.state_dir / "impostors", self.address)  # for "host key changed"
        self.files.setdefault(OAC_TEMPLATE, b"[DEFAULT]\ncommand = os-refresh-config\n")
        self.services.setdefault("os-collect-config", Service(enabled=True))
        self.files[BOOT_ID] = f"{uuid.uuid4()}\n".encode()
        self.agent = Agent(
            self.address, self.files, self.lock, self.clock, self.faults, self.hostname, self.deployment_time
        )
        self._listener: socket.socket | None = None
        self._transports: list[paramiko.Transport] = []
        #: Where each SSH connection came from (a jump host's address when reached through it).
        self.peers: list[tuple[str, int]] = []

    # -- the SSH server --------------------------------------------------------------------

    def start(self) -> "SimNode":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]  # keep the same port across reboots
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"ssh-{self.address}").start()
        return self

    def stop(self) -> None:
        self.agent.stop()
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone leaves it accepting on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    @property
    def reachable(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, peer = listener.accept()
            except OSError:
                return
            self.peers.append(peer)
            if self.faults.strike("node_unreachable", self.address):
                client.close()
                continue
            transport = paramiko.Transport(client)
            transport.set_log_channel(SSHD_LOG)
            changed = self.faults.strike("host_key_changed", self.address)
            transport.add_server_key(self.impostor_key if changed else self.key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, SimSFTPServer, self)
            self._transports.append(transport)
            try:
                transport.start_server(server=_Server(self, transport))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    # -- the command interpreter -----------------------------------------------------------

    def run(self, command: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run a command line; returns (exit status, stdout, stderr)."""
        self.commands.append(command)
        slow = self.faults.strike("command_slow", self.address, text=command)
        if slow:
            time.sleep(slow.seconds)
        fault = self.faults.strike("command_failure", self.address, text=command)
        if fault:
            return fault.code, b"", f"simulated failure of: {command}\n".encode()
        return self.script(command, stdin)

    def script(self, text: str, stdin: bytes = b"", pipefail: bool = False) -> tuple[int, bytes, bytes]:
        """A shell command line, in small: pipelines chained with ``&&``, ``||`` and ``;``, each
        command's stdout piped (``|``) into the next one's stdin, ``> FILE`` and ``>> FILE``
        writing stdout to a file (``shlex`` does the quoting). Every pipeline gets ``stdin``."""
        lexer = shlex.shlex(text, posix=True, punctuation_chars="&|;>")
        lexer.whitespace_split, lexer.commenters = True, ""
        try:
            tokens = list(lexer)
        except ValueError as exc:
            return 2, b"", f"sh: syntax error: {exc}\n".encode()
        status, out, err, skip, pipeline = 0, b"", b"", False, []
        for token in [*tokens, ";"]:
            if token not in ("&&", "||", ";"):
                pipeline.append(token)
                continue
            if pipeline and not skip:
                status, o, e = self._pipeline(pipeline, stdin, pipefail)
                out, err = out + o, err + e
            pipeline, skip = [], (token == "&&" and status != 0) or (token == "||" and status == 0)
        return status, out, err

    def _pipeline(self, tokens: list[str], stdin: bytes, pipefail: bool = False) -> tuple[int, bytes, bytes]:
        """A pipeline's status is its last command's, or with ``pipefail`` the last non-zero one's."""
        status, failed, data, err = 0, 0, stdin, b""
        for command in _split(tokens, "|"):
            argv, target, append = [], None, False
            while command:
                token = command.pop(0)
                if token in (">", ">>") and command:
                    target, append = command.pop(0), token == ">>"
                elif set(token) <= set("&|;>"):
                    return 2, b"", f"sh: syntax error near unexpected token `{token}'\n".encode()
                else:
                    argv.append(token)
            status, data, e = self._run_one(argv, data)
            failed = status or failed
            err += e
            if target is not None and target != "/dev/null":
                with self.lock:
                    if not self._dir_exists(posixpath.dirname(target)):
                        return 1, b"", err + f"sh: {target}: No such file or directory\n".encode()
                    self.files[target] = (self.files.get(target, b"") if append else b"") + data
            if target is not None:
                data = b""
        return (failed if pipefail else status), data, err

    def _run_one(self, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        sudo = bool(argv) and argv[0] == "sudo"
        while argv and argv[0] == "sudo":
            argv = argv[2:] if argv[1:2] == ["-n"] else argv[1:]
        if not argv:
            return 0, b"", b""
        name, args = argv[0], argv[1:]
        handler = getattr(self, f"_cmd_{name.replace('-', '_')}", None)
        if handler is None and name in COMMANDS:
            handler = lambda args, stdin: COMMANDS[name](self, args, stdin)  # noqa: E731
        if handler is None:  # sudo says so itself, and exits 1 (not the shell's 127)
            return (
                (1, b"", f"sudo: {name}: command not found\n".encode())
                if sudo
                else (127, b"", f"bash: {name}: command not found\n".encode())
            )
        with self.lock:
            return handler(args, stdin)

    def _missing(self, name: str, path: str) -> tuple[int, bytes, bytes]:
        return 1, b"", f"{name}: cannot access '{path}': No such file or directory\n".encode()

    def _cmd_true(self, args, stdin):
        return 0, b"", b""

    def _cmd_hostname(self, args, stdin):
        return 0, f"{self.hostname}\n".encode(), b""

    def _cmd_cat(self, args, stdin):
        out = b""
        for path in args:
            if path not in self.files:
                return 1, out, f"cat: {path}: No such file or directory\n".encode()
            out += self.files[path]
        return 0, out, b""

    def _cmd_sh(self, args, stdin):
        pipefail = args[:2] == ["-o", "pipefail"]
        args = args[2:] if pipefail else args
        if len(args) < 2 or args[0] != "-c":
            return 2, b"", b"sh: only 'sh [-o pipefail] -c SCRIPT' is supported here\n"
        return self.script(args[1], stdin, pipefail=pipefail)

    _cmd_bash = _cmd_sh

    def _cmd_test(self, args, stdin):
        if len(args) == 2 and args[0] in ("-e", "-f", "-d"):
            found = {
                "-e": args[1] in self.files or self._dir_exists(args[1]),
                "-f": args[1] in self.files,
                "-d": args[1] not in self.files and self._dir_exists(args[1]),
            }[args[0]]
            return (0 if found else 1), b"", b""
        return 2, b"", b"test: unsupported expression\n"

    def _cmd_rm(self, args, stdin):
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        force, recursive = "f" in flags, "r" in flags or "R" in flags
        for path in (a.rstrip("/") or "/" for a in args if not a.startswith("-")):
            if path not in self.files and self._dir_exists(path):
                if not recursive:
                    return 1, b"", f"rm: cannot remove '{path}': Is a directory\n".encode()
                under = path.rstrip("/") + "/"
                for table in (self.files, self.modes, self.owners):
                    for name in [n for n in table if n.startswith(under)]:
                        del table[name]
                self.dirs -= {d for d in self.dirs if d == path or d.startswith(under)}
            elif path not in self.files and not force:
                return 1, b"", f"rm: cannot remove '{path}': No such file or directory\n".encode()
            for table in (self.files, self.modes, self.owners):
                table.pop(path, None)
        return 0, b"", b""

    def _cmd_mkdir(self, args, stdin):
        parents = "-p" in args
        for directory in (a.rstrip("/") for a in args if not a.startswith("-")):
            if not parents and not self._dir_exists(posixpath.dirname(directory)):
                return 1, b"", f"mkdir: cannot create directory '{directory}': No such file or directory\n".encode()
            self._make_dirs(directory)
        return 0, b"", b""

    def _make_dirs(self, directory: str) -> None:
        parts = directory.rstrip("/").split("/")
        self.dirs.update("/".join(parts[:n]) for n in range(2, len(parts) + 1))

    def directories(self) -> set[str]:
        """Every directory: those made, and those holding a file, with their parents."""
        found = {"/"}
        for path in [*self.dirs, *self.files]:
            while path not in ("/", ""):
                path = posixpath.dirname(path)
                found.add(path)
        return found | self.dirs

    def _dir_exists(self, path: str) -> bool:
        return (path.rstrip("/") or "/") in self.directories()

    def _cmd_install(self, args, stdin):
        mode, owner, rest = 0o755, None, list(args)
        for option in ("-m", "-o", "-g"):  # the group is not kept
            if option in rest:
                i = rest.index(option)
                value = rest[i + 1]
                del rest[i : i + 2]
                if option == "-m":
                    mode = int(value, 8)
                elif option == "-o":
                    owner = value
        if rest and rest[0] == "-d":  # install -d [-m MODE] [-o USER] DIR…: the directories and their parents
            for directory in rest[1:]:
                self._make_dirs(directory)
                self.modes[directory.rstrip("/")] = mode
                if owner:
                    self.owners[directory.rstrip("/")] = owner
            return 0, b"", b""
        if len(rest) != 2 or rest[0] != "/dev/stdin":
            return (
                1,
                b"",
                b"install: only 'install [-m MODE] /dev/stdin PATH' and 'install -d DIR' are supported here\n",
            )
        if not self._dir_exists(posixpath.dirname(rest[1])):
            return 1, b"", f"install: cannot create regular file '{rest[1]}': No such file or directory\n".encode()
        self.files[rest[1]] = stdin
        self.modes[rest[1]] = mode
        if owner:
            self.owners[rest[1]] = owner
        return 0, b"", b""

    def _cmd_mv(self, args, stdin):
        paths = [a for a in args if not a.startswith("-")]
        if len(paths) != 2:
            return 1, b"", b"mv: expected SOURCE DEST\n"
        source, dest = paths
        if source not in self.files:
            return self._missing("mv", source)
        self.files[dest] = self.files.pop(source)
        self.modes[dest] = self.modes.pop(source, 0o644)
        return 0, b"", b""

    def _cmd_chmod(self, args, stdin):
        if len(args) != 2 or args[1] not in self.files:
            return self._missing("chmod", args[-1] if args else "")
        self.modes[args[1]] = int(args[0], 8)
        return 0, b"", b""

    def _cmd_stat(self, args, stdin):
        if args[:2] != ["-c", "%a"] or len(args) != 3:
            return 1, b"", b"stat: only 'stat -c %a PATH' is supported here\n"
        if args[2] not in self.files:
            return self._missing("stat", args[2])
        return 0, f"{self.modes.get(args[2], 0o644):o}\n".encode(), b""

    def _cmd_systemctl(self, args, stdin):
        if args[:1] == ["list-units"]:  # the failed units validations look for: system.py
            from .system import list_units

            return list_units(self, args[1:])
        if len(args) != 2:
            return 1, b"", b"systemctl: expected ACTION UNIT\n"
        action, unit = args[0], args[1].removesuffix(".service")
        service = self.services.get(unit)
        if service is None:
            return (
                (3 if action in ("is-active", "status") else 5),
                b"",
                f"Unit {unit}.service could not be found.\n".encode(),
            )
        if action in ("start", "restart"):
            service.active = True
            if unit == "os-collect-config":
                self.agent.start()
        elif action == "stop":
            service.active = False
            if unit == "os-collect-config":
                self.agent.stop()
        elif action == "enable":
            service.enabled = True
        elif action == "is-active":
            return (0, b"active\n", b"") if service.active else (3, b"inactive\n", b"")
        elif action == "status":
            state = "active (running)" if service.active else "inactive (dead)"
            return (0 if service.active else 3), f"● {unit}.service\n   Active: {state}\n".encode(), b""
        else:
            return 1, b"", f"systemctl: unknown action {action}\n".encode()
        return 0, b"", b""

    def _cmd_curl(self, args, stdin):
        """``curl -sS -o /dev/null -w %{http_code} [--max-time N] URL``: a real request from this node."""
        url = next((a for a in args if a.startswith("http")), None)
        timeout = float(args[args.index("--max-time") + 1]) if "--max-time" in args else 10.0
        if url is None:
            return 2, b"", b"curl: no URL specified!\n"
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port or 80, timeout=timeout, source_address=(self.address, 0)
        )
        try:
            connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
            code = connection.getresponse().status
        except OSError as exc:
            return 7, b"000", f"curl: (7) Failed to connect to {parts.hostname} port {parts.port}: {exc}\n".encode()
        finally:
            connection.close()
        return 0, str(code).encode(), b""

    def _cmd_reboot(self, args, stdin):
        # systemd queues the reboot and returns; sshd stops a moment later, so the exit status
        # gets out first, as it does from a real node.
        timer = threading.Timer(SHUTDOWN_DELAY, self._reboot)
        timer.daemon = True
        timer.start()
        return 0, b"", b""

    def _reboot(self) -> None:
        self.stop()
        for service in self.services.values():
            service.active = False
        for hook in self.on_power:
            hook(False)
        self.clock.later(self.reboot_time, self._boot)

    def _boot(self) -> None:
        for name, service in self.services.items():
            service.active = service.enabled
            if name == "os-collect-config" and service.active:
                self.agent.start()
        self.files[BOOT_ID] = f"{uuid.uuid4()}\n".encode()
        self.start()
        for hook in self.on_power:
            hook(True)


class _Server(paramiko.ServerInterface):
    def __init__(self, node: SimNode, transport: paramiko.Transport):
        self.node = node
        self.transport = transport
        #: Forwarded connections opened, by channel id, until the channel is accepted.
        self.forwards: dict[int, socket.socket] = {}
        self._forwarding = threading.Lock()
        self._relaying = False

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if self.node.faults.strike("ssh_auth_refused", self.node.address):
            return paramiko.AUTH_FAILED
        if username == self.node.user and any(key == k for k in self.node.authorized_keys):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        host, port = destination
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            loopback = False
        if not loopback:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            sock = socket.create_connection((host, port), timeout=5, source_address=(self.node.address, 0))
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        sock.settimeout(None)
        with self._forwarding:
            self.forwards[chanid] = sock
            if not self._relaying:
                self._relaying = True
                threading.Thread(target=self._accept_forwards, daemon=True, name=f"fwd-{self.node.address}").start()
        return paramiko.OPEN_SUCCEEDED

    def _accept_forwards(self) -> None:
        """Take each channel paramiko opened for us; relay the forwarded ones (session channels
        are served by their exec requests)."""
        while self.transport.is_active():
            channel = self.transport.accept(timeout=1)
            if channel is None:
                continue
            with self._forwarding:
                sock = self.forwards.pop(channel.get_id(), None)
            if sock is not None:
                for read, write in ((channel.recv, sock.sendall), (sock.recv, channel.sendall)):
                    threading.Thread(target=_pump, args=(read, write, channel, sock), daemon=True).start()
        with self._forwarding:
            for sock in self.forwards.values():
                sock.close()
            self.forwards.clear()

    def check_channel_exec_request(self, channel, command):
        # paramiko confirms the exec request after this returns; the command must not answer
        # (and close the channel) before that confirmation, or the client sees "Channel closed".
        timer = threading.Timer(EXEC_START_DELAY, self._execute, args=(channel, command.decode()))
        timer.daemon = True
        timer.start()
        return True

    def _execute(self, channel: paramiko.Channel, command: str) -> None:
        stdin = b""
        if "/dev/stdin" in command or "--askpass" in command:
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                stdin += chunk
        try:
            status, out, err = self.node.run(command, stdin)
        except Exception as exc:
            logging.getLogger(SSHD_LOG).exception("simulated command failed: %s", command)
            status, out, err = 70, b"", f"simulator error: {type(exc).__name__}: {exc}\n".encode()
        try:
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(status)
            channel.close()
        except (EOFError, OSError, paramiko.SSHException):
            pass  # the connection went first (a reboot drops it), as on a real node


def _pump(read, write, channel: paramiko.Channel, sock: socket.socket) -> None:
    """Copy one direction of a forwarded connection; at its end (EOF or error) close both sides."""
    try:
        while data := read(65536):
            write(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        channel.close()
        try:  # wakes the other direction's recv(); close() alone leaves it blocked on Linux
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
