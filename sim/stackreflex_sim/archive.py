"""A node's filesystem as backups see it: a realistic tree seeded per node kind (some of the
paths the runbooks archive missing on purpose, as on a real deployment without that service),
GNU ``tar`` over it producing real tar (and gzip) streams, and the file tools around it:
``du -sbc``, ``sha256sum``, ``cp [-p] [-r]``, ``tail -n N`` and ``sed 's/$/TEXT/'``."""

import base64
import fnmatch
import hashlib
import io
import json
import posixpath
import random
import re
import secrets
import stat
import tarfile
import time
import uuid
from collections import defaultdict

from .nodes import SimNode, node_command

#: uid of the owners of the seeded files (a container's service users keep Kolla's ids).
UIDS = {
    "root": 0,
    "stack": 1000,
    "heat-admin": 1000,
    "mysql": 42434,
    "rabbitmq": 42439,
    "redis": 42460,
    "nova": 42436,
    "keystone": 42425,
    "glance": 42415,
    "swift": 42445,
    "ceph": 167,
}
DIR_SIZE = 4096
TAR_USAGE = "Try 'tar --help' or 'tar --usage' for more information.\n"


def _tree(node: SimNode) -> tuple[set[str], dict[str, set[str]]]:
    """Every directory, and each directory's entries (names)."""
    directories = node.directories()
    entries: dict[str, set[str]] = defaultdict(set)
    for path in [*node.files, *directories]:
        if path != "/":
            entries[posixpath.dirname(path)].add(posixpath.basename(path))
    return directories, entries


def _absolute(node: SimNode, path: str, cwd: str | None = None) -> str:
    """A path as the command sees it: relative ones from ``cwd`` (the SSH user's home: sudo keeps it)."""
    return posixpath.normpath(posixpath.join(cwd or f"/home/{node.user}", path))


# -- tar -----------------------------------------------------------------------------------


class _TarUsage(Exception):
    pass


def _tar_options(args: list[str]) -> tuple[dict, list[tuple[str, str, tuple[str, ...]]], list[str]]:
    """GNU tar's command line: short clusters (``-zcf ARCHIVE``), long options, the old style
    (``czf ARCHIVE``). ``--exclude`` and ``-C`` are positional: they apply to the operands after
    them. Returns the options, the operands (path, directory, excludes) and the positional
    options that came after the last operand (which apply to nothing)."""
    args = list(args)
    if args and not args[0].startswith("-"):
        args[0] = "-" + args[0]
    opts = {
        "mode": None,
        "archive": None,
        "gzip": False,
        "verbose": False,
        "ignore_failed_read": False,
        "xattrs": False,
        "absolute": False,
    }
    operands, excludes, trailing, cwd, only_operands = [], [], [], None, False

    def value(name: str, inline: str | None) -> str:
        if inline:
            return inline
        if not args:
            raise _TarUsage(
                f"option requires an argument -- '{name}'"
                if len(name) == 1
                else f"option '--{name}' requires an argument"
            )
        return args.pop(0)

    def set_mode(mode: str) -> None:
        if opts["mode"] not in (None, mode):
            raise _TarUsage("You may not specify more than one '-Acdtrux', '--delete' or  '--test-label' option")
        opts["mode"] = mode

    while args:
        arg = args.pop(0)
        if only_operands or not arg.startswith("-") or arg == "-":
            operands.append((arg, cwd, tuple(excludes)))
            trailing = []
        elif arg == "--":
            only_operands = True
        elif arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if name == "exclude":
                pattern = value(name, inline if eq else None)
                excludes.append(pattern)
                trailing.append(f"--exclude '{pattern}'")
            elif name == "file":
                opts["archive"] = value(name, inline if eq else None)
            elif name == "directory":
                cwd = value(name, inline if eq else None)
                trailing.append(f"-C '{cwd}'")
            elif name in ("create", "list"):
                set_mode(name[0] if name == "create" else "t")
            elif name in ("gzip", "gunzip", "verbose", "xattrs", "ignore-failed-read", "absolute-names"):
                opts[{"gunzip": "gzip", "absolute-names": "absolute"}.get(name, name.replace("-", "_"))] = True
            elif name not in (
                "selinux",
                "acls",
                "no-xattrs",
                "one-file-system",
                "numeric-owner",
                "totals",
                "preserve-permissions",
                "same-permissions",
                "warning",
                "sparse",
            ):
                raise _TarUsage(f"unrecognized option '{arg}'")
        else:
            cluster = arg[1:]
            for i, letter in enumerate(cluster):
                if letter in "fC":
                    given = value(letter, cluster[i + 1 :] or None)
                    if letter == "f":
                        opts["archive"] = given
                    else:
                        cwd = given
                        trailing.append(f"-C '{cwd}'")
                    break
                if letter in "ct":
                    set_mode(letter)
                elif letter == "x":
                    raise _TarUsage("extracting (-x) is not simulated here")
                elif letter in "zvP":
                    opts[{"z": "gzip", "v": "verbose", "P": "absolute"}[letter]] = True
                elif letter not in "pS":
                    raise _TarUsage(f"invalid option -- '{letter}'")
    return opts, operands, trailing


@node_command("tar")
def tar(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    try:
        opts, operands, trailing = _tar_options(args)
        if opts["mode"] is None:
            raise _TarUsage("You must specify one of the '-Acdtrux', '--delete' or '--test-label' options")
        if opts["mode"] == "c" and not operands:
            raise _TarUsage("Cowardly refusing to create an empty archive")
    except _TarUsage as exc:
        return 2, b"", f"tar: {exc}\n{TAR_USAGE}".encode()
    if opts["mode"] == "t":
        return _tar_list(node, opts, stdin)
    return _tar_create(node, opts, operands, trailing)


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    """GNU's default for --exclude: a wildcard matching the whole name or any of its tails
    after a '/' (unanchored)."""
    tails = [name] + [name[i + 1 :] for i, c in enumerate(name) if c == "/"]
    return any(fnmatch.fnmatchcase(tail, pattern.rstrip("/") or "/") for pattern in patterns for tail in tails)


def _tar_create(node, opts, operands, trailing) -> tuple[int, bytes, bytes]:
    err, listing, failed = [], [], False
    if trailing:
        err.append(
            "tar: The following options were used after any non-optional arguments in archive create "
            "or update mode.  These options are positional and affect only arguments that follow them.  "
            "Please, rearrange them properly."
        )
        err += [f"tar: {option} has no effect" for option in trailing]
        failed = True
    archive = None if opts["archive"] in (None, "-") else _absolute(node, opts["archive"])
    directories, entries = _tree(node)
    if archive is not None:
        if posixpath.dirname(archive) not in directories:
            return (
                2,
                b"",
                (
                    f"tar: {opts['archive']}: Cannot open: No such file or directory\n"
                    f"tar: Error is not recoverable: exiting now\n"
                ).encode(),
            )
        node.files[archive] = b""  # tar opens (and truncates) its archive first
        entries[posixpath.dirname(archive)].add(posixpath.basename(archive))
    buffer, stripped = io.BytesIO(), False
    with tarfile.open(
        fileobj=buffer,
        mode="w:gz" if opts["gzip"] else "w",
        format=tarfile.PAX_FORMAT if opts["xattrs"] else tarfile.GNU_FORMAT,
    ) as out:

        def add(path: str, name: str, excludes) -> None:
            nonlocal stripped
            if _excluded(name, excludes):
                return
            if path == archive:
                err.append(f"tar: {name}: file is the archive; not dumped")
                return
            member = name if opts["absolute"] else name.lstrip("/")
            if member != name and not stripped:
                err.append("tar: Removing leading `/' from member names")
                stripped = True
            is_dir = path not in node.files
            info = tarfile.TarInfo(member.rstrip("/") or ".")
            owner = node.owners.get(path, "root")
            info.uname, info.gname = owner, owner
            info.uid = info.gid = UIDS.get(owner, 1001)
            info.mtime = int(time.time())
            info.mode = node.modes.get(path, 0o755 if is_dir else 0o644)
            if is_dir:
                info.type = tarfile.DIRTYPE
                out.addfile(info)
            else:
                info.size = len(node.files[path])
                out.addfile(info, io.BytesIO(node.files[path]))
            listing.append(name.rstrip("/") + ("/" if is_dir else ""))
            if is_dir:
                for entry in sorted(entries.get(path, ())):
                    add(posixpath.join(path, entry), name.rstrip("/") + "/" + entry, excludes)

        for operand, cwd, excludes in operands:
            start = _absolute(node, cwd) if cwd else None
            if cwd and start not in directories:
                return (
                    2,
                    b"",
                    "".join(line + "\n" for line in err).encode()
                    + (
                        f"tar: {cwd}: Cannot open: No such file or directory\n"
                        "tar: Error is not recoverable: exiting now\n"
                    ).encode(),
                )
            path = _absolute(node, operand, start)
            if path in node.files or path in directories:
                add(path, operand, excludes)
            elif opts["ignore_failed_read"]:
                err.append(f"tar: {operand}: Warning: Cannot stat: No such file or directory")
            else:
                err.append(f"tar: {operand}: Cannot stat: No such file or directory")
                failed = True
    data = buffer.getvalue()
    if archive is not None:
        node.files[archive] = data
        node.modes[archive] = 0o644
    if failed:
        err.append("tar: Exiting with failure status due to previous errors")
    verbose = "".join(line + "\n" for line in listing).encode() if opts["verbose"] else b""
    stderr = "".join(line + "\n" for line in err).encode()
    if archive is None:
        return (2 if failed else 0), data, verbose + stderr
    return (2 if failed else 0), verbose, stderr


def _tar_list(node, opts, stdin) -> tuple[int, bytes, bytes]:
    if opts["archive"] in (None, "-"):
        data = stdin
    else:
        path = _absolute(node, opts["archive"])
        if path not in node.files:
            return (
                2,
                b"",
                (
                    f"tar: {opts['archive']}: Cannot open: No such file or directory\n"
                    "tar: Error is not recoverable: exiting now\n"
                ).encode(),
            )
        data = node.files[path]
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, EOFError, OSError):
        return (
            2,
            b"",
            b"tar: This does not look like a tar archive\ntar: Exiting with failure status due to previous errors\n",
        )
    lines = []
    for m in members:
        name = m.name + ("/" if m.isdir() else "")
        if opts["verbose"]:
            owner = f"{m.uname or m.uid}/{m.gname or m.gid}"
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.mtime))
            name = (
                f"{stat.filemode(m.mode | (stat.S_IFDIR if m.isdir() else stat.S_IFREG))} {owner} "
                f"{m.size:>{max(19 - len(owner), len(str(m.size)))}} {stamp} {name}"
            )
        lines.append(name + "\n")
    return 0, "".join(lines).encode(), b""


# -- file tools ----------------------------------------------------------------------------


@node_command("du")
def du(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``du [-s] [-b] [-c] PATH...``: apparent sizes in bytes with -b (a directory counts 4096),
    else 1K blocks; -s only the paths given, else every directory under them too; -c a total."""
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    long_options = {a for a in args if a.startswith("--")}
    if set(flags) - set("sbc") or long_options - {"--bytes", "--total", "--summarize"}:
        return 1, b"", b"du: only -s, -b and -c are supported here\n"
    in_bytes, summary = "b" in flags or "--bytes" in args, "s" in flags or "--summarize" in args
    directories, entries = _tree(node)
    out, err, total, status = [], [], 0, 0

    def size(path: str, shown: str) -> int:
        if path in node.files:
            length = len(node.files[path])
            return length if in_bytes else -(-length // 4096) * 4
        used = (DIR_SIZE if in_bytes else 4) + sum(
            size(posixpath.join(path, e), posixpath.join(shown, e)) for e in sorted(entries.get(path, ()))
        )
        if not summary:
            out.append(f"{used}\t{shown}")
        return used

    for shown in [a for a in args if not a.startswith("-")] or ["."]:
        path = _absolute(node, shown)
        if path not in node.files and path not in directories:
            err.append(f"du: cannot access '{shown}': No such file or directory")
            status = 1
            continue
        used = size(path, shown)
        if summary or path in node.files:
            out.append(f"{used}\t{shown}")
        total += used
    if "c" in flags or "--total" in args:
        out.append(f"{total}\ttotal")
    return status, "".join(line + "\n" for line in out).encode(), "".join(line + "\n" for line in err).encode()


@node_command("sha256sum")
def sha256sum(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    paths = [a for a in args if not a.startswith("-")]
    if not paths:
        return 0, f"{hashlib.sha256(stdin).hexdigest()}  -\n".encode(), b""
    out, err, status = b"", b"", 0
    for shown in paths:
        path = _absolute(node, shown)
        if path in node.files:
            out += f"{hashlib.sha256(node.files[path]).hexdigest()}  {shown}\n".encode()
        else:
            status = 1
            why = "Is a directory" if path in node.directories() else "No such file or directory"
            err += f"sha256sum: {shown}: {why}\n".encode()
    return status, out, err


@node_command("cp")
def cp(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``cp [-p] [-f] [-r|-R|-a] SOURCE... DEST``: -p (and -a) keep the mode and the owner."""
    flags = "".join(a[1:] for a in args if a.startswith("-"))
    keep, recursive = "p" in flags or "a" in flags, bool(set(flags) & set("rRa"))
    paths = [a for a in args if not a.startswith("-")]
    if len(paths) < 2:
        return (
            1,
            b"",
            (
                f"cp: missing destination file operand after '{paths[0]}'\n" if paths else "cp: missing file operand\n"
            ).encode()
            + b"Try 'cp --help' for more information.\n",
        )
    directories = node.directories()
    dest, status, err = _absolute(node, paths[-1]), 0, b""
    into = dest in directories
    if len(paths) > 2 and not into:
        return 1, b"", f"cp: target '{paths[-1]}' is not a directory\n".encode()

    def copy(source: str, target: str) -> None:
        node.files[target] = node.files[source]
        node.modes[target] = node.modes.get(source, 0o644)
        if keep and source in node.owners:
            node.owners[target] = node.owners[source]

    for shown in paths[:-1]:
        source = _absolute(node, shown)
        target = posixpath.join(dest, posixpath.basename(source)) if into else dest
        if source in node.files:
            if posixpath.dirname(target) not in directories:
                status, err = (
                    1,
                    err + f"cp: cannot create regular file '{target}': No such file or directory\n".encode(),
                )
            else:
                copy(source, target)
        elif source in directories:
            if not recursive:
                status, err = 1, err + f"cp: -r not specified; omitting directory '{shown}'\n".encode()
                continue
            node.dirs.add(target)
            for path in [p for p in node.files if p.startswith(source + "/")]:
                node.dirs.add(posixpath.dirname(target + path[len(source) :]))
                copy(path, target + path[len(source) :])
        else:
            status, err = 1, err + f"cp: cannot stat '{shown}': No such file or directory\n".encode()
    return status, b"", err


@node_command("tail")
def tail(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``tail [-n N | -N] [FILE...]``: the last N lines (10 by default)."""
    count, paths, rest = 10, [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-n" and rest:
            count = int(rest.pop(0))
        elif re.fullmatch(r"-n?\d+", arg):
            count = int(arg.lstrip("-n"))
        else:
            paths.append(arg)
    last = lambda data: b"".join(data.splitlines(keepends=True)[-count:]) if count else b""  # noqa: E731
    if not paths:
        return 0, last(stdin), b""
    out, err, status = b"", b"", 0
    for n, shown in enumerate(paths):
        path = _absolute(node, shown)
        if path not in node.files:
            status, err = 1, err + f"tail: cannot open '{shown}' for reading: No such file or directory\n".encode()
            continue
        header = (f"{chr(10) if n else ''}==> {shown} <==\n".encode()) if len(paths) > 1 else b""
        out += header + last(node.files[path])
    return status, out, err


@node_command("sed")
def sed(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``sed 's/$/TEXT/' [FILE...]`` (and ``s/^/TEXT/``): TEXT appended to (put before) every line."""
    rest = [a for a in args if a != "-e"]
    match = re.fullmatch(r"s/([$^])/((?:[^/\\]|\\.)*)/", rest[0]) if rest else None
    if match is None:
        return 1, b"", b"sed: only the expressions 's/$/TEXT/' and 's/^/TEXT/' are supported here\n"
    text = re.sub(r"\\(.)", r"\1", match.group(2)).encode()
    data = b""
    for shown in rest[1:]:
        path = _absolute(node, shown)
        if path not in node.files:
            return 2, b"", f"sed: can't read {shown}: No such file or directory\n".encode()
        data += node.files[path]
    out = []
    for line in (data if rest[1:] else stdin).splitlines(keepends=True):
        body, end = (line[:-1], b"\n") if line.endswith(b"\n") else (line, b"")
        out.append((body + text if match.group(1) == "$" else text + body) + end)
    return 0, b"".join(out), b""


# -- the seeded filesystem -----------------------------------------------------------------


def _log(rng: random.Random, start: float, lines: list[str], count: int = 40) -> bytes:
    """An oslo.log-shaped log: ``count`` lines picked from ``lines``, a few seconds apart."""
    out, now = [], start
    for _ in range(count):
        now += rng.uniform(5, 120)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{rng.randrange(1000):03d}"
        out.append(
            f"{stamp} {rng.randrange(7, 99999)} {rng.choice(lines).format(req=uuid.UUID(int=rng.getrandbits(128)))}\n"
        )
    return "".join(out).encode()


def _syslog(rng: random.Random, start: float, host: str, lines: list[str], count: int = 60) -> bytes:
    out, now = [], start
    for _ in range(count):
        now += rng.uniform(5, 120)
        out.append(f"{time.strftime('%b %e %H:%M:%S', time.localtime(now))} {host} {rng.choice(lines)}\n")
    return "".join(out).encode()


def _ini(sections: dict[str, dict[str, str]]) -> bytes:
    return "".join(
        f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in values.items()) + "\n" for name, values in sections.items()
    ).encode()


SYSLOG = [
    "systemd[1]: Started Session 4 of user heat-admin.",
    "chronyd[812]: Selected source 192.0.2.1",
    "kernel: IPv6: ADDRCONF(NETDEV_UP): vlan20: link is not ready",
    "os-collect-config[1290]: Completed collection",
    "sshd[20151]: Accepted publickey for heat-admin from 192.0.2.1 port 51842 ssh2: ECDSA SHA256:x9Yw",
    "systemd-logind[781]: New session 4 of user heat-admin.",
    "dbus-daemon[770]: [system] Successfully activated service",
]
NOVA_API = [
    'INFO nova.osapi_compute.wsgi.server [req-{req} - - - - -] 172.16.2.8 "GET /v2.1/servers/detail HTTP/1.1" status: 200 len: 1874 time: 0.2104',
    'INFO nova.api.openstack.requestlog [req-{req} - - - - -] 172.16.2.8 "GET /v2.1/os-services" status: 200 len: 1412 microversion: 2.1 time: 0.0613',
    'WARNING oslo_config.cfg [req-{req} - - - - -] Deprecated: Option "api_paste_config" from group "DEFAULT" is deprecated',
]
KEYSTONE = [
    "INFO keystone.common.wsgi [req-{req} - - - - -] POST http://172.16.2.10:5000/v3/auth/tokens",
    "INFO keystone.common.wsgi [req-{req} - - - - -] GET http://172.16.2.10:35357/v3/projects",
    "WARNING keystone.common.fernet_utils [req-{req} - - - - -] key_repository is world readable: /etc/keystone/fernet-keys/",
]
COMPUTE = [
    "INFO nova.compute.resource_tracker [req-{req} - - - - -] Final resource view: phys_ram=262144MB used_ram=32768MB phys_disk=930GB used_disk=160GB total_vcpus=48 used_vcpus=16",
    "INFO nova.compute.manager [req-{req} - - - - -] [instance: {req}] During sync_power_state the instance has a pending task (spawning). Skip.",
    "INFO nova.virt.libvirt.imagecache [req-{req} - - - - -] image 6e7c1b0d-c7a4-4b8e-9d12-b0e5a9b6b7b1 at (/var/lib/nova/instances/_base/8b1f): checking",
]
IRONIC = [
    "INFO ironic.conductor.manager [req-{req} - - - - -] Successfully synced power state of node overcloud-controller-0",
    'INFO ironic.conductor.task_manager [req-{req} - - - - -] Node 4d3e5c1b moved to provision state "active" from state "deploying"',
    "WARNING ironic.drivers.modules.ipmitool [req-{req} - - - - -] IPMI power status failed, retrying",
]


def seed_filesystem(node: SimNode, scenario) -> None:
    """Realistic small files for the node's kind under the paths the backup runbooks archive
    (setdefault: files another module put there stay). /srv/node, /var/lib/cinder, /var/lib/heat,
    /var/lib/heat-cfntools and /var/lib/neutron are missing on overcloud nodes, /var/lib/docker
    on the undercloud: ``tar --ignore-failed-read`` meets what a real deployment has."""
    rng = random.Random(f"{node.hostname}/{node.kind}")
    start = time.time() - 86400
    host, address, kind = node.hostname, node.address, node.kind

    def put(path: str, content: bytes | str, mode: int = 0o644, owner: str | None = None) -> None:
        if path not in node.files:
            node.files[path] = content.encode() if isinstance(content, str) else content
            node.modes[path] = mode
            if owner:
                node.owners[path] = owner

    def directory(path: str, mode: int = 0o755, owner: str | None = None) -> None:
        node.dirs.add(path)
        node.modes.setdefault(path, mode)
        if owner:
            node.owners.setdefault(path, owner)

    node.dirs.update({"/var/tmp", "/root", f"/home/{node.user}"})
    short = host.split(".")[0]
    put("/etc/hostname", f"{short}\n")
    put(
        "/etc/hosts",
        f"127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n"
        f"::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n"
        f"{address} {short}.localdomain {short}\n",
    )
    put("/etc/resolv.conf", "# Generated by NetworkManager\nsearch localdomain\nnameserver 192.0.2.1\n")
    put(
        "/etc/chrony.conf",
        "server 192.0.2.1 iburst\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\nrtcsync\nlogdir /var/log/chrony\n",
    )
    put("/etc/redhat-release", "Red Hat Enterprise Linux release 9.2 (Plow)\n")
    put(
        "/etc/os-release",
        'NAME="Red Hat Enterprise Linux"\nVERSION="9.2 (Plow)"\nID="rhel"\nID_LIKE="fedora"\n'
        'VERSION_ID="9.2"\nPLATFORM_ID="platform:el9"\nPRETTY_NAME="Red Hat Enterprise Linux 9.2 (Plow)"\n',
    )
    put(
        "/etc/ssh/sshd_config",
        "HostKey /etc/ssh/ssh_host_ecdsa_key\nSyslogFacility AUTHPRIV\nPermitRootLogin no\n"
        "PasswordAuthentication no\nUseDNS no\nSubsystem sftp /usr/libexec/openssh/sftp-server\n",
        0o600,
    )
    put("/etc/sudoers.d/" + node.user, f"{node.user} ALL=(root) NOPASSWD:ALL\n", 0o440)
    put("/var/log/messages", _syslog(rng, start, short, SYSLOG), 0o600)
    put("/var/log/secure", _syslog(rng, start, short, [SYSLOG[4], SYSLOG[5]], 20), 0o600)
    put(
        "/var/log/cron",
        _syslog(rng, start, short, ["CROND[30211]: (root) CMD (run-parts /etc/cron.hourly)"], 10),
        0o600,
    )
    put("/root/.bashrc", "# .bashrc\nalias rm='rm -i'\nalias cp='cp -i'\nalias mv='mv -i'\n")
    if kind == "undercloud":
        _seed_undercloud(put, directory, rng, start, node, scenario)
        return
    # every overcloud node: os-net-config, Heat's software deployments, the agent's templates, heat-admin
    put(
        "/etc/os-net-config/config.json",
        json.dumps(
            {
                "network_config": [
                    {
                        "type": "ovs_bridge",
                        "name": "br-ex",
                        "use_dhcp": False,
                        "addresses": [{"ip_netmask": f"{address}/24"}],
                        "members": [{"type": "interface", "name": "nic1", "primary": True}],
                    }
                ]
            },
            indent=2,
        )
        + "\n",
        0o600,
    )
    for _n, name in enumerate(("HostsEntryDeployment", "NetworkDeployment", "AllNodesDeployment")):
        deployment = str(uuid.UUID(int=rng.getrandbits(128)))
        put(
            f"/var/lib/heat-config/deployed/{deployment}.json",
            json.dumps(
                {
                    "id": deployment,
                    "name": name,
                    "group": "script",
                    "inputs": [],
                    "options": {},
                    "outputs": [],
                    "config": "#!/bin/bash\nexit 0\n",
                }
            )
            + "\n",
            0o600,
        )
        put(
            f"/var/lib/heat-config/deployed/{deployment}.notify.json",
            json.dumps({"deploy_stdout": "", "deploy_stderr": "", "deploy_status_code": 0}) + "\n",
            0o600,
        )
    put("/var/lib/heat-config/heat-config", "[]\n", 0o600)
    put("/usr/libexec/os-apply-config/templates/var/run/heat-config/heat-config", "{{deployments}}\n")
    put(
        "/usr/libexec/os-apply-config/templates/etc/puppet/hiera.yaml",
        ":backends:\n  - json\n:hierarchy:\n  - service_configs\n  - vip_data\n",
    )
    directory("/home/heat-admin", 0o700, "heat-admin")
    directory("/home/heat-admin/.ssh", 0o700, "heat-admin")
    put(
        "/home/heat-admin/.ssh/authorized_keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc2aW0ga2V5IG9mIHRoZSB1bmRlcmNsb3Vk stack@undercloud\n",
        0o600,
        "heat-admin",
    )
    put("/home/heat-admin/.bash_profile", "# .bash_profile\n[ -f ~/.bashrc ] && . ~/.bashrc\n", 0o644, "heat-admin")
    put(
        "/var/lib/openvswitch/conf.db",
        "OVSDB JSON 21582 0b4a4cd2f5a6e3d9c4b1a2e3f4a5b6c7d8e9f0a1\n"
        '{"name":"Open_vSwitch","version":"8.3.0","tables":{}}\n',
        0o644,
    )
    if kind == "controller":
        _seed_controller(put, directory, rng, start, node)
    elif kind == "compute":
        _seed_compute(put, rng, start, node)
    elif kind == "ceph":
        _seed_ceph(put, rng, start, node)


def _seed_controller(put, directory, rng, start, node) -> None:
    host = node.hostname
    for service, conf, sections in (
        (
            "nova",
            "nova.conf",
            {
                "DEFAULT": {
                    "my_ip": node.address,
                    "enabled_apis": "osapi_compute,metadata",
                    "transport_url": f"rabbit://guest@{host}.internalapi.localdomain:5672/?ssl=0",
                },
                "api": {"auth_strategy": "keystone"},
                "scheduler": {"max_attempts": "3"},
            },
        ),
        (
            "keystone",
            "keystone.conf",
            {
                "DEFAULT": {"admin_bind_host": node.address},
                "token": {"provider": "fernet", "expiration": "3600"},
                "fernet_tokens": {"key_repository": "/etc/keystone/fernet-keys", "max_active_keys": "5"},
            },
        ),
        (
            "glance",
            "glance-api.conf",
            {
                "DEFAULT": {"bind_host": node.address, "enabled_backends": "default_backend:rbd"},
                "glance_store": {"default_backend": "default_backend"},
            },
        ),
        (
            "neutron",
            "neutron.conf",
            {"DEFAULT": {"bind_host": node.address, "core_plugin": "ml2", "service_plugins": "qos,ovn-router,trunk"}},
        ),
        ("heat", "heat.conf", {"DEFAULT": {"num_engine_workers": "4", "max_resources_per_stack": "-1"}}),
        ("cinder", "cinder.conf", {"DEFAULT": {"enabled_backends": "tripleo_ceph", "host": "hostgroup"}}),
    ):
        put(f"/etc/{service}/{conf}", _ini(sections), 0o640)
    put(
        "/etc/rabbitmq/rabbitmq.config",
        "[\n  {rabbit, [\n    {tcp_listen_options, [binary, {packet, raw}]},\n"
        "    {cluster_partition_handling, ignore}\n  ]}\n].\n",
    )
    put(
        "/etc/redis.conf",
        f"bind {node.address}\nport 6379\ndir /var/lib/redis\ndbfilename dump.rdb\nsave 900 1\nsave 300 10\n",
        0o640,
    )
    put(
        "/etc/corosync/corosync.conf",
        "totem {\n    version: 2\n    cluster_name: tripleo_cluster\n    transport: knet\n}\n"
        "quorum {\n    provider: corosync_votequorum\n}\n",
    )
    put("/var/log/nova/nova-api.log", _log(rng, start, NOVA_API))
    put(
        "/var/log/nova/nova-scheduler.log",
        _log(rng, start, ["INFO nova.scheduler.host_manager [req-{req} - - - - -] Host filter ignoring hosts: "], 20),
    )
    put("/var/log/keystone/keystone.log", _log(rng, start, KEYSTONE))
    put(
        "/var/log/mariadb/mariadb.log",
        _log(
            rng,
            start,
            [
                "[Note] WSREP: Member 1.0 (overcloud-controller-1) synced with group.",
                "[Note] WSREP: Shifting JOINED -> SYNCED (TO: 187123)",
            ],
            15,
        ),
    )
    put(
        f"/var/log/rabbitmq/rabbit@{host}.log",
        _log(
            rng,
            start,
            ["[info] <0.671.0> accepting AMQP connection <0.671.0> (172.16.2.8:42842 -> 172.16.2.10:5672)"],
            20,
        ),
    )
    put(
        "/var/log/redis/redis.log",
        _log(rng, start, ["* Background saving started by pid 31201", "* DB saved on disk"], 10),
    )
    put(
        "/var/lib/nova/.ssh/config",
        "Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n",
        0o600,
        "nova",
    )
    base = hashlib.sha1(host.encode()).hexdigest()
    put(f"/var/lib/nova/instances/_base/{base}", rng.randbytes(16384), 0o644, "nova")
    put(f"/var/lib/nova/instances/locks/nova-{base}", b"", 0o644, "nova")
    for n in range(2):
        put(
            f"/var/lib/keystone/fernet-keys/{n}",
            base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n",
            0o600,
            "keystone",
        )
        put(
            f"/var/lib/keystone/credential-keys/{n}",
            base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n",
            0o600,
            "keystone",
        )
    put("/var/lib/rabbitmq/.erlang.cookie", secrets.token_hex(10).upper(), 0o400, "rabbitmq")
    mnesia = f"/var/lib/rabbitmq/mnesia/rabbit@{host}"
    put(f"{mnesia}/cluster_nodes.config", f"{{['rabbit@{host}'],['rabbit@{host}']}}.\n", 0o644, "rabbitmq")
    put(f"{mnesia}/nodes_running_at_shutdown", f"['rabbit@{host}'].\n", 0o644, "rabbitmq")
    put(f"{mnesia}/rabbit_durable_queue.DCD", rng.randbytes(2048), 0o644, "rabbitmq")
    directory("/var/lib/haproxy", 0o755)


def _seed_compute(put, rng, start, node) -> None:
    put(
        "/etc/nova/nova.conf",
        _ini(
            {
                "DEFAULT": {
                    "my_ip": node.address,
                    "compute_driver": "libvirt.LibvirtDriver",
                    "instances_path": "/var/lib/nova/instances",
                },
                "libvirt": {"virt_type": "kvm", "cpu_mode": "host-model"},
            }
        ),
        0o640,
    )
    put("/etc/libvirt/qemu.conf", 'user = "qemu"\ngroup = "qemu"\nmax_files = 32768\n')
    put("/var/log/nova/nova-compute.log", _log(rng, start, COMPUTE))
    put("/var/lib/nova/instances/compute_nodes", json.dumps({node.hostname: time.time()}), 0o644, "nova")
    for _n in range(2):
        instance = f"/var/lib/nova/instances/{uuid.UUID(int=rng.getrandbits(128))}"
        put(f"{instance}/disk.info", json.dumps({f"{instance}/disk": "qcow2"}), 0o644, "nova")
        put(f"{instance}/console.log", "[    0.000000] Linux version 5.14.0-284.11.1.el9_2.x86_64\n" * 20, 0o600)


def _seed_ceph(put, rng, start, node) -> None:
    put(
        "/etc/ceph/ceph.conf",
        _ini(
            {
                "global": {
                    "fsid": str(uuid.UUID(int=rng.getrandbits(128))),
                    "mon_host": "[v2:172.16.1.10:3300/0,v1:172.16.1.10:6789/0]",
                }
            }
        ),
    )
    put(
        "/etc/ceph/ceph.client.admin.keyring",
        "[client.admin]\n\tkey = " + base64.b64encode(secrets.token_bytes(28)).decode() + "\n",
        0o600,
        "ceph",
    )
    for _osd in range(2):
        osd_id = rng.randrange(100)
        put(f"/var/lib/ceph/osd/ceph-{osd_id}/whoami", f"{osd_id}\n", 0o600, "ceph")
        put(f"/var/lib/ceph/osd/ceph-{osd_id}/type", "bluestore\n", 0o600, "ceph")
        put(f"/var/log/ceph/ceph-osd.{osd_id}.log", _log(rng, start, ["osd.{req} pg_epoch: 412 active+clean"], 20))


def _seed_undercloud(put, directory, rng, start, node, scenario) -> None:
    for service, conf, sections in (
        (
            "ironic",
            "ironic.conf",
            {
                "DEFAULT": {"enabled_hardware_types": "ipmi,redfish,idrac", "default_deploy_interface": "direct"},
                "conductor": {"automated_clean": "true"},
            },
        ),
        ("nova", "nova.conf", {"DEFAULT": {"compute_driver": "ironic.IronicDriver"}}),
        ("heat", "heat.conf", {"DEFAULT": {"max_resources_per_stack": "-1", "num_engine_workers": "4"}}),
        ("keystone", "keystone.conf", {"token": {"provider": "fernet"}}),
        ("glance", "glance-api.conf", {"glance_store": {"filesystem_store_datadir": "/var/lib/glance/images/"}}),
        ("mistral", "mistral.conf", {"DEFAULT": {"transport_url": "rabbit://guest@undercloud.ctlplane:5672/"}}),
        ("zaqar", "zaqar.conf", {"drivers": {"management_store": "sqlalchemy"}}),
    ):
        put(f"/etc/{service}/{conf}", _ini(sections), 0o640)
    put("/var/log/ironic/ironic-conductor.log", _log(rng, start, IRONIC))
    put(
        "/var/log/heat/heat-engine.log",
        _log(rng, start, ["INFO heat.engine.service [req-{req} - - - - -] Updating stack overcloud"], 20),
    )
    put("/var/log/nova/nova-compute.log", _log(rng, start, COMPUTE, 20))
    images = {
        "overcloud-full.qcow2": b"QFI\xfb\x00\x00\x00\x03" + rng.randbytes(65528),
        "overcloud-full.initrd": b"\x1f\x8b\x08\x00" + rng.randbytes(16380),
        "overcloud-full.vmlinuz": b"MZ" + rng.randbytes(8190),
    }
    for name, data in images.items():
        put(f"/var/lib/glance/images/{uuid.uuid5(uuid.NAMESPACE_DNS, name)}", data, 0o640, "glance")
    put(
        "/var/lib/certmonger/requests/20240101120000",
        "id=20240101120000\nkey_type=RSA\ncert_storage_location=/etc/pki/tls/certs/undercloud-front.crt\n",
        0o600,
    )
    put("/var/lib/certmonger/cas/20240101115959", "id=local\nca_type=INTERNAL:SELF\n", 0o600)
    put(
        "/var/lib/registry/docker/registry/v2/repositories/rhosp-rhel9/openstack-nova-api/_manifests/tags/17.1/"
        "current/link",
        "sha256:" + hashlib.sha256(b"openstack-nova-api").hexdigest(),
    )
    for _n in range(3):
        put(
            f"/srv/node/1/objects/{rng.randrange(1024)}/{rng.getrandbits(12):03x}/{uuid.uuid4().hex}/"
            f"{time.time():.5f}.data",
            rng.randbytes(4096),
            0o600,
            "swift",
        )
    put("/srv/node/1/accounts/0/000/0/0.db", rng.randbytes(2048), 0o600, "swift")
    directory("/home/stack", 0o700, "stack")
    put(
        "/home/stack/undercloud.conf",
        _ini(
            {
                "DEFAULT": {
                    "undercloud_hostname": "undercloud.localdomain",
                    "local_ip": f"{node.address}/24",
                    "local_interface": "eth1",
                }
            }
        ),
        0o644,
        "stack",
    )
    put(
        "/home/stack/stackrc",
        f"export OS_AUTH_TYPE=password\nexport OS_AUTH_URL=https://{node.address}:13000\n"
        "export OS_USERNAME=admin\nexport OS_PROJECT_NAME=admin\n"
        "export OS_IDENTITY_API_VERSION=3\nexport OS_CLOUD=undercloud\n",
        0o600,
        "stack",
    )
    names = [
        f"{scenario.stack}-{r.name.lower().replace('deployedserver', '')}-{i}"
        for r in scenario.roles
        for i in range(r.count)
    ]
    put(
        "/home/stack/instackenv.json",
        json.dumps(
            {
                "nodes": [
                    {"name": name, "pm_type": "ipmi", "pm_user": "admin", "pm_addr": f"192.0.2.{200 + i}"}
                    for i, name in enumerate(names)
                ]
            },
            indent=2,
        )
        + "\n",
        0o600,
        "stack",
    )
    put(
        "/home/stack/templates/node-info.yaml",
        "parameter_defaults:\n"
        + "".join(f"  {r.name.replace('DeployedServer', '')}Count: {r.count}\n" for r in scenario.roles),
        0o644,
        "stack",
    )
