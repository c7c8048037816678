"""What the nodes' systems and the control plane's clusters report to an operator's tools.

Every node: ``systemctl list-units`` (failed units), ``df -P -B1``, ``chronyc -n tracking``,
``ntpstat``, ``rpm -q``, ``ovs-vswitchd --version``. Controllers: ``pcs status`` (Pacemaker 2.1
text), ``rabbitmqctl cluster_status --formatter json`` (RabbitMQ 3.9), ``ceph -s|osd df|df -f json``
(Quincy; Ceph nodes answer too), ``/etc/haproxy/haproxy.cfg`` and HAProxy's stats page: a real
HTTP listener per controller on its own address serving the stats CSV behind basic auth.

Nothing is stored but what must persist (the stats password, Ceph's fsid, when a fault was first
seen): every answer is computed from the nodes (kind, reachability) and the faults in force when
asked, so a fault changes exactly the output it names and a rebooting controller drops out of
its clusters on the others.
"""

import base64
import hmac
import json
import re
import secrets
import string
import threading
import time
import uuid
import weakref
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from .nodes import SimNode, node_command

#: The key of this module's state in ``SimNode.shared`` and ``SimNode.extra``.
KEY = "system"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
#: Where TripleO's containerised HAProxy really reads it from (the same file, bind-mounted).
HAPROXY_CFG_GENERATED = "/var/lib/config-data/puppet-generated/haproxy" + HAPROXY_CFG
STATS_USER = "admin"
NTP_SERVER = "192.168.24.1"  # the undercloud's ctlplane address, TripleO's usual NTP source
PACKAGES = {
    "openvswitch": ["2.17.0-103.el9fdp"],
    "kernel": ["5.14.0-284.11.1.el9_2", "5.14.0-284.30.1.el9_2"],
}  # older first, as rpm lists them


class _State:
    """What the simulator's systems keep between commands (shared by every node)."""

    def __init__(self, nodes: list[SimNode]):
        self.nodes = nodes
        self.started = time.time()
        self.password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))
        self.fsid = str(uuid.uuid4())
        self._seen: dict[int, tuple] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # the stats password stays out of reprs and logs
        return f"<system state of {len(self.nodes)} nodes>"

    def since(self, fault) -> float:
        """When a fault was first seen in force: HAProxy's lastchg, Pacemaker's last-rc-change."""
        with self._lock:
            ref, when = self._seen.get(id(fault), (None, 0.0))
            if ref is None or ref() is not fault:  # a new fault (ids of cleared ones get reused)
                ref, when = weakref.ref(fault), time.time()
                self._seen[id(fault)] = (ref, when)
            return when


def _state(node: SimNode) -> _State:
    """The simulator's state (attach() shares it; a node never attached is a cluster of one)."""
    return node.shared.setdefault(KEY, _State([node]))


def kind_of(node: SimNode) -> str:
    """The node's kind; guessed from its host name while nothing has set it."""
    if node.kind:
        return node.kind
    match = re.search(r"controller|compute|ceph|undercloud", short(node).lower())
    return match.group(0) if match else ""


def short(node: SimNode) -> str:
    return node.hostname.split(".")[0]


def controllers(node: SimNode) -> list[SimNode]:
    """Every controller of the simulator, in index order (down ones included)."""
    found = [n for n in _state(node).nodes if kind_of(n) == "controller"]
    return sorted(found, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n.hostname)])


def _aimed(target: str, node: SimNode) -> bool:
    """NODE in a fault target: the node's address or its host name (short or full)."""
    return target in (node.address, node.hostname) or (
        not target.replace(".", "").isdigit() and target.split(".")[0] == short(node)
    )


def _faults(node: SimNode, kind: str) -> list:
    return [f for f in node.faults.active(kind) if _aimed(f.target, node)]


def _not_here(node: SimNode, name: str, *kinds: str):
    """``command not found`` where the tool is not installed (None where it is)."""
    return None if kind_of(node) in kinds else (127, b"", f"bash: {name}: command not found\n".encode())


def _unsupported(name: str, supported: str):
    return 1, b"", f"{name}: only '{supported}' is simulated here\n".encode()


def _columns(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Rows aligned as df and systemctl print them (the last column unpadded)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        " ".join(
            c.rjust(w) if i in right else (c if i == len(r) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        )
        + "\n"
        for r in rows
    )


# -- every node ------------------------------------------------------------------------------


def list_units(node: SimNode, args: list[str]):
    """``systemctl list-units [--state=S] [--plain --no-legend --no-pager] [PATTERN…]``, called by
    SimNode._cmd_systemctl: running services and the units fault unit_failed names."""
    states = {s for a in args if a.startswith("--state=") for s in a.split("=", 1)[1].split(",")}
    patterns = [a for a in args if not a.startswith("-")]
    failed = {f.args[0] if "." in f.args[0] else f.args[0] + ".service" for f in _faults(node, "unit_failed") if f.args}
    units = {f"{name}.service": ("loaded", "active", "running") for name, s in node.services.items() if s.active}
    units.update(dict.fromkeys(failed, ("loaded", "failed", "failed")))
    rows = [
        [unit, *state, _description(unit)]
        for unit, state in sorted(units.items())
        if (not states or states & set(state[1:]))
        and (not patterns or any(fnmatch(unit, p) or fnmatch(unit, p + ".service") for p in patterns))
    ]
    return 0, _columns(rows).encode() if rows else b"", b""


def _description(unit: str) -> str:
    """A unit's Description=: tripleo-ansible's for its container units, else (none) the unit's name."""
    name = unit.rsplit(".", 1)[0]
    return f"{name.removeprefix('tripleo_')} container" if name.startswith("tripleo_") else unit


#: The root filesystem's size in bytes and the fraction used, by node kind; the pseudo filesystems.
_ROOT = {
    "controller": (107374182400, 0.31),
    "compute": (85899345920, 0.18),
    "ceph": (53687091200, 0.12),
    "undercloud": (107374182400, 0.42),
}
_PSEUDO = {
    "/dev": ("devtmpfs", 4194304, 0.0),
    "/dev/shm": ("tmpfs", 16663232512, 0.0),
    "/run": ("tmpfs", 6665293824, 0.004),
}


def _without_types(args: list[str]) -> list[str]:
    return [a for i, a in enumerate(args) if a != "-x" and (i == 0 or args[i - 1] != "-x")]


@node_command("df")
def df(node: SimNode, args: list[str], stdin: bytes):
    """``df -P -B1 [PATH…]``: POSIX output in bytes; fault disk_full fills ``/`` to 99%."""
    excluded = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "-x"}
    args = _without_types(args)
    if "-P" not in args or "-B1" not in args:
        return _unsupported("df", "df -P -B1 [-x TYPE…] [PATH...]")
    size, fraction = _ROOT.get(kind_of(node), (85899345920, 0.15))
    used = int(size * fraction)
    if _faults(node, "disk_full"):
        used = size - 966367641  # 0.9 GiB left: 99%
    mounts = dict(_PSEUDO, **{"/": ("/dev/vda2", size, used / size)})
    paths = [a for a in args if not a.startswith("-")]
    chosen = (
        [max((m for m in mounts if p == m or p.startswith(m.rstrip("/") + "/")), key=len) for p in paths]
        if paths
        else [
            m
            for m in ("/dev", "/dev/shm", "/run", "/")
            if m == "/" or excluded.isdisjoint({"devtmpfs"} if m == "/dev" else {"tmpfs"})
        ]
    )
    rows = [["Filesystem", "1-blocks", "Used", "Available", "Capacity", "Mounted on"]]
    for mount in chosen:
        device, total, share = mounts[mount]
        taken = used if mount == "/" else int(total * share)
        rows.append([device, str(total), str(taken), str(total - taken), f"{-(-taken * 100 // total)}%", mount])
    return 0, _columns(rows, right={1, 2, 3, 4}).encode(), b""


def _synced(node: SimNode) -> bool:
    return not _faults(node, "clock_unsynced")


@node_command("chronyc")
def chronyc(node: SimNode, args: list[str], stdin: bytes):
    """``chronyc [-n] tracking``; fault clock_unsynced: no reference, stratum 0, not synchronised."""
    if [a for a in args if a != "-n"] != ["tracking"]:
        return _unsupported("chronyc", "chronyc -n tracking")
    if _synced(node):
        ref = f"{''.join(f'{int(o):02X}' for o in NTP_SERVER.split('.'))} ({NTP_SERVER})"
        values = [
            ref,
            "3",
            time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(time.time() - 37)),
            "0.000021355 seconds slow of NTP time",
            "-0.000012211 seconds",
            "0.000034125 seconds",
            "11.683 ppm fast",
            "-0.001 ppm",
            "0.022 ppm",
            "0.001462567 seconds",
            "0.000376314 seconds",
            "64.4 seconds",
            "Normal",
        ]
    else:
        values = [
            "00000000 ()",
            "0",
            "Thu Jan 01 00:00:00 1970",
            "0.000000000 seconds fast of NTP time",
            "+0.000000000 seconds",
            "0.000000000 seconds",
            "0.000 ppm slow",
            "+0.000 ppm",
            "0.000 ppm",
            "1.000000000 seconds",
            "1.000000000 seconds",
            "0.0 seconds",
            "Not synchronised",
        ]
    names = [
        "Reference ID",
        "Stratum",
        "Ref time (UTC)",
        "System time",
        "Last offset",
        "RMS offset",
        "Frequency",
        "Residual freq",
        "Skew",
        "Root delay",
        "Root dispersion",
        "Update interval",
        "Leap status",
    ]
    return 0, "".join(f"{n:<16}: {v}\n" for n, v in zip(names, values, strict=False)).encode(), b""


@node_command("ntpstat")
def ntpstat(node: SimNode, args: list[str], stdin: bytes):
    if _synced(node):
        return (
            0,
            (
                f"synchronised to NTP server ({NTP_SERVER}) at stratum 3\n   time correct to within 2 ms\n"
                "   polling server every 64 s\n"
            ).encode(),
            b"",
        )
    return 1, b"unsynchronised\n  time server re-starting\n   polling server every 8 s\n", b""


def installed(node: SimNode) -> dict[str, list[str]]:
    """Package → its installed VERSION-RELEASEs; fault package_mismatch NODE PKG VERSION replaces one."""
    packages = {name: list(versions) for name, versions in PACKAGES.items()}
    for fault in _faults(node, "package_mismatch"):
        if len(fault.args) >= 2:
            packages[fault.args[0]] = [fault.args[1]]
    return packages


@node_command("rpm")
def rpm(node: SimNode, args: list[str], stdin: bytes):
    """``rpm -q [--qf FORMAT] NAME…`` (NAME, VERSION, RELEASE, ARCH tags; \\n and \\t escapes)."""
    rest, form = list(args), "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"
    for i, arg in enumerate(rest):
        if arg in ("--qf", "--queryformat"):
            form = rest.pop(i + 1)
            rest.pop(i)
            break
        if arg.startswith(("--qf=", "--queryformat=")):
            form = rest.pop(i).split("=", 1)[1]
            break
    if not rest or rest[0] != "-q":
        return _unsupported("rpm", "rpm -q [--qf FORMAT] NAME...")
    packages, out, status = installed(node), "", 0
    for name in rest[1:]:
        if name not in packages:
            out, status = out + f"package {name} is not installed\n", 1
        for full in packages.get(name, []):
            version, _, release = full.partition("-")
            tags = {"NAME": name, "VERSION": version, "RELEASE": release, "ARCH": "x86_64"}
            line = re.sub(r"%\{(\w+)\}", lambda m, tags=tags: tags.get(m.group(1).upper(), "(none)"), form)
            out += line.replace("\\n", "\n").replace("\\t", "\t")
    return status, out.encode(), b""


@node_command("ovs-vswitchd")
def ovs_vswitchd(node: SimNode, args: list[str], stdin: bytes):
    """``ovs-vswitchd --version``: the installed (so, after a restart, running) Open vSwitch."""
    if args != ["--version"]:
        return _unsupported("ovs-vswitchd", "ovs-vswitchd --version")
    return 0, f"ovs-vswitchd (Open vSwitch) {_ovs(node)}\nDPDK 21.11.2\n".encode(), b""


def _ovs(node: SimNode) -> str:
    return installed(node)["openvswitch"][-1].partition("-")[0]


@node_command("ovs-appctl")
def ovs_appctl(node: SimNode, args: list[str], stdin: bytes):
    """``ovs-appctl version``: the running ovs-vswitchd answers (here: the installed one, as after a restart)."""
    if args != ["version"]:
        return _unsupported("ovs-appctl", "ovs-appctl version")
    return 0, f"ovs-vswitchd (Open vSwitch) {_ovs(node)}\n".encode(), b""


# -- Pacemaker -------------------------------------------------------------------------------


class Bundle(NamedTuple):
    """A TripleO Pacemaker bundle: its replicas are guest nodes (NAME-N, running the agent) or
    bare containers (NAME-podman-N); one replica per controller unless ``single``."""

    name: str
    image: str
    agent: str
    roles: tuple[str, ...]  # promotable: the first running replica is promoted, the others not
    guest: bool = True
    single: bool = False


BUNDLES = [
    Bundle("galera-bundle", "openstack-mariadb", "ocf:heartbeat:galera", ("Promoted",)),
    Bundle("rabbitmq-bundle", "openstack-rabbitmq", "ocf:heartbeat:rabbitmq-cluster", ("Started",)),
    Bundle("redis-bundle", "openstack-redis", "ocf:heartbeat:redis", ("Promoted", "Unpromoted")),
    Bundle("haproxy-bundle", "openstack-haproxy", "ocf:heartbeat:podman", ("Started",), guest=False),
    Bundle("ovn-dbs-bundle", "openstack-ovn-northd", "ocf:ovn:ovndb-servers", ("Promoted", "Unpromoted")),
    Bundle(
        "openstack-cinder-volume",
        "openstack-cinder-volume",
        "ocf:heartbeat:podman",
        ("Started",),
        guest=False,
        single=True,
    ),
]
#: The VIPs (TripleO's vip_data.json keys), unless the node's own vip_data.json names them.
VIPS = {
    "controller_virtual_ip": "192.168.24.10",
    "public_virtual_ip": "10.0.0.10",
    "internal_api_virtual_ip": "172.17.1.10",
    "redis_vip": "172.17.1.11",
    "ovn_dbs_vip": "172.17.1.12",
    "storage_virtual_ip": "172.17.3.10",
    "storage_mgmt_virtual_ip": "172.17.4.10",
}
PACEMAKER_VERSION = "2.1.5-9.el9_2-a3f44794f94"


def _vips(node: SimNode) -> list[str]:
    """The VIP addresses, each one IPaddr2 resource (networks sharing an address share it)."""
    vips = dict(VIPS)
    try:
        vips.update(json.loads(node.files.get("/etc/puppet/hieradata/vip_data.json", b"{}")))
    except ValueError:
        pass
    return list(dict.fromkeys(vips[k] for k in VIPS if isinstance(vips.get(k), str)))


def _pcs_time(seconds: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(seconds))


@node_command("pcs")
def pcs(node: SimNode, args: list[str], stdin: bytes):
    """``pcs status``: one cluster of the controllers; down ones OFFLINE and their replicas Stopped;
    fault pacemaker_resource_failed RES (a bundle, a replica or a VIP) stops it with a failed start."""
    if (missing := _not_here(node, "pcs", "controller")) is not None:
        return missing
    if args != ["status"]:
        return _unsupported("pcs", "pcs status")
    members = controllers(node)
    online = [c for c in members if c.reachable]
    failed = {f.target: f for f in node.faults.active("pacemaker_resource_failed")}
    lines, actions, guests, instances = [], [], [], 0

    def show(name: str, agent: str, host: SimNode | None, role: str, indent: str, *owners: str) -> bool:
        fault = next((failed[o] for o in (name, *owners) if o in failed), None)
        if fault is not None and host is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S +00:00", time.gmtime(_state(node).since(fault)))
            actions.append(
                f"  * {name}_start_0 on {short(host)} 'error' (1): call={41 + len(actions)}, "
                f"status='complete', exitreason='', last-rc-change='{when}', queued=0ms, exec=2046ms"
            )
        running = host is not None and host.reachable and fault is None
        lines.append(f"{indent}* {name}\t({agent}):\t {f'{role} {short(host)}' if running else 'Stopped'}")
        return running

    for i, vip in enumerate(_vips(node)):
        host = online[i % len(online)] if online else None
        instances += 1
        show(f"ip-{vip}", "ocf:heartbeat:IPaddr2", host, "Started", "  ")
    for bundle in BUNDLES:
        hosts = [online[0] if online else None] if bundle.single else members
        kind = "Container bundle" if bundle.single else "Container bundle set"
        lines.append(f"  * {kind}: {bundle.name} [cluster.common.tag/{bundle.image}:pcmklatest]:")
        promoted = False
        for i, host in enumerate(hosts):
            replica = f"{bundle.name}-{i}" if bundle.guest else f"{bundle.name}-podman-{i}"
            role = bundle.roles[1] if promoted else bundle.roles[0]
            if show(replica, bundle.agent, host, role, "    ", bundle.name):
                promoted = promoted or (role == "Promoted" and len(bundle.roles) > 1)
                if bundle.guest:
                    guests.append(f"{replica}@{short(host)}")
            instances += 3 if bundle.guest else 1  # a guest: its container, its remote connection, its agent
    dc = online[0] if online else node
    quorum = "with quorum" if 2 * len(online) > len(members) else "WITHOUT quorum"
    nodes = [f"  * Online: [ {' '.join(short(c) for c in online)} ]"]
    if len(online) < len(members):
        nodes.append(f"  * OFFLINE: [ {' '.join(short(c) for c in members if not c.reachable)} ]")
    if guests:
        nodes.append(f"  * GuestOnline: [ {' '.join(guests)} ]")
    guest_count = sum(len(members) for bundle in BUNDLES if bundle.guest)
    text = [
        "Cluster name: tripleo_cluster",
        "Cluster Summary:",
        "  * Stack: corosync",
        f"  * Current DC: {short(dc)} (version {PACEMAKER_VERSION}) - partition {quorum}",
        f"  * Last updated: {_pcs_time(time.time())}",
        f"  * Last change:  {_pcs_time(_state(node).started)} by root via cibadmin on {short(members[0])}",
        f"  * {len(members) + guest_count} nodes configured",
        f"  * {instances} resource instances configured",
        "",
        "Node List:",
        *nodes,
        "",
        "Full List of Resources:",
        *lines,
    ]
    if actions:
        text += ["", "Failed Resource Actions:", *actions]
    text += [
        "",
        "Daemon Status:",
        "  corosync: active/enabled",
        "  pacemaker: active/enabled",
        "  pcsd: active/enabled",
    ]
    return 0, ("\n".join(text) + "\n").encode(), b""


# -- RabbitMQ --------------------------------------------------------------------------------

#: RabbitMQ 3.9's feature flags (all enabled): name → (desc, doc_url).
FEATURE_FLAGS = {
    "drop_unroutable_metric": ("Count unroutable publishes to be dropped in stats", ""),
    "empty_basic_get_metric": ("Count AMQP `basic.get` on empty queues in stats", ""),
    "implicit_default_bindings": ("Default bindings are now implicit, instead of being stored in the database", ""),
    "maintenance_mode_status": ("Maintenance mode status", ""),
    "quorum_queue": ("Support queues of type `quorum`", "https://www.rabbitmq.com/quorum-queues.html"),
    "stream_queue": ("Support queues of type `stream`", "https://www.rabbitmq.com/stream.html"),
    "user_limits": ("Configure connection and channel limits for a user", ""),
    "virtual_host_metadata": ("Virtual host metadata (description, tags, etc)", ""),
}


def _rabbit(node: SimNode) -> str:
    return f"rabbit@{short(node)}"


@node_command("rabbitmqctl")
def rabbitmqctl(node: SimNode, args: list[str], stdin: bytes):
    """``rabbitmqctl cluster_status --formatter json`` as seen from this controller: down
    controllers are not running; fault rabbit_partition [NODE] (default: the last controller)
    cuts that one off, each side seeing the other in ``partitions``."""
    if (missing := _not_here(node, "rabbitmqctl", "controller")) is not None:
        return missing
    if args[:1] != ["cluster_status"] or not ({"--formatter=json"} & set(args) or "--formatter json" in " ".join(args)):
        return _unsupported("rabbitmqctl", "rabbitmqctl cluster_status --formatter json")
    members = controllers(node)
    up = [c for c in members if c.reachable]
    cut = set()
    for fault in node.faults.active("rabbit_partition"):
        target = fault.target.removeprefix("rabbit@")
        cut |= {c for c in up if (_aimed(target, c) if target else c is members[-1])}
    side = [node] if node in cut else [c for c in up if c not in cut]
    others = [c for c in up if c not in side]
    listeners = {
        _rabbit(c): [
            {
                "node": _rabbit(c),
                "protocol": "amqp",
                "interface": c.address,
                "port": 5672,
                "purpose": "AMQP 0-9-1 and AMQP 1.0",
            },
            {
                "node": _rabbit(c),
                "protocol": "clustering",
                "interface": "[::]",
                "port": 25672,
                "purpose": "inter-node and CLI tool communication",
            },
        ]
        for c in side
    }
    status = {
        "cluster_name": f"{_rabbit(members[0])}.localdomain",
        "disk_nodes": [_rabbit(c) for c in members],
        "ram_nodes": [],
        "running_nodes": [_rabbit(c) for c in side],
        "alarms": [],
        "maintenance_status": {_rabbit(c): "not under maintenance" for c in side},
        "partitions": {_rabbit(c): [_rabbit(o) for o in others] for c in side} if cut else {},
        "listeners": listeners,
        "versions": {
            _rabbit(c): {"rabbitmq_name": "RabbitMQ", "rabbitmq_version": "3.9.21", "erlang_version": "24.3.4.2"}
            for c in side
        },
        "cpu_cores": {_rabbit(c): 8 for c in side},
        "feature_flags": [
            {
                "desc": desc,
                "doc_url": url,
                "name": name,
                "provided_by": "rabbit",
                "stability": "stable",
                "state": "enabled",
            }
            for name, (desc, url) in FEATURE_FLAGS.items()
        ],
    }
    return 0, (json.dumps(status) + "\n").encode(), b""


# -- Ceph ------------------------------------------------------------------------------------

OSD_KB = 104857600  # 100 GiB devices
#: The pools TripleO creates: name, pg_num, share of the raw space used.
POOLS = [(".mgr", 1, 0.0005), ("vms", 32, 0.34), ("volumes", 32, 0.45), ("images", 32, 0.2)]


def _osds(node: SimNode) -> list[dict]:
    """``ceph osd df``'s nodes: two OSDs per Ceph node (on the controllers when there is none),
    20-40% used, up while their host is."""
    hosts = [h for n in _state(node).nodes if kind_of(n) == "ceph" for h in (n, n)] or [
        h for c in controllers(node) for h in (c, c)
    ]
    copies = sum(pgs for _, pgs, _ in POOLS) * 3
    osds = []
    for i, host in enumerate(hosts):
        used = OSD_KB * (20 + i * 7 % 20) // 100
        osds.append(
            {
                "id": i,
                "device_class": "hdd",
                "name": f"osd.{i}",
                "type": "osd",
                "type_id": 0,
                "crush_weight": 0.09765625,
                "depth": 2,
                "pool_weights": {},
                "reweight": 1,
                "kb": OSD_KB,
                "kb_used": used,
                "kb_used_data": used - 1050624,
                "kb_used_omap": 2048,
                "kb_used_meta": 1048576,
                "kb_avail": OSD_KB - used,
                "utilization": used * 100 / OSD_KB,
                "var": 1.0,
                "pgs": copies // len(hosts) + (i < copies % len(hosts)),
                "status": "up" if host.reachable else "down",
            }
        )
    average = sum(o["utilization"] for o in osds) / len(osds)
    for osd in osds:
        osd["var"] = osd["utilization"] / average
    return osds


def _osd_df(osds: list[dict]) -> dict:
    total = {
        k: sum(o[k] for o in osds)
        for k in ("kb", "kb_used", "kb_used_data", "kb_used_omap", "kb_used_meta", "kb_avail")
    }
    return {
        "nodes": osds,
        "stray": [],
        "summary": {
            **{f"total_{k}": v for k, v in total.items()},
            "average_utilization": total["kb_used"] * 100 / total["kb"],
            "min_var": min(o["var"] for o in osds),
            "max_var": max(o["var"] for o in osds),
            "dev": 6.5,
        },
    }


def _df(osds: list[dict]) -> dict:
    used, avail = (sum(o[k] for o in osds) * 1024 for k in ("kb_used", "kb_avail"))
    stats = {
        "total_bytes": used + avail,
        "total_avail_bytes": avail,
        "total_used_bytes": used,
        "total_used_raw_bytes": used,
        "total_used_raw_ratio": used / (used + avail),
    }
    max_avail = int(avail / 3 * 0.95)  # three replicas, up to the full ratio
    pools = [
        {
            "name": name,
            "id": i,
            "stats": {
                "stored": raw // 3,
                "objects": raw // 3 // 4194304 + 2,
                "kb_used": raw // 1024,
                "bytes_used": raw,
                "percent_used": raw / (raw + max_avail),
                "max_avail": max_avail,
            },
        }
        for i, (name, _, share) in enumerate(POOLS, start=1)
        for raw in [int(used * share)]
    ]
    return {
        "stats": dict(stats, num_osds=len(osds), num_per_pool_osds=len(osds), num_per_pool_omap_osds=len(osds)),
        "stats_by_class": {"hdd": stats},
        "pools": pools,
    }


def _health(node: SimNode, osds: list[dict], mons: list[SimNode]) -> dict:
    """MON_DOWN and OSD_DOWN while hosts are down; fault ceph_health's own check."""
    checks, up = {}, [m for m in mons if m.reachable]
    if len(up) < len(mons):
        checks["MON_DOWN"] = (
            f"{len(mons) - len(up)}/{len(mons)} mons down, quorum {','.join(map(short, up))}",
            "HEALTH_WARN",
        )
    if down := [o for o in osds if o["status"] == "down"]:
        checks["OSD_DOWN"] = (f"{len(down)} osds down", "HEALTH_WARN")
    for fault in node.faults.active("ceph_health"):
        checks["SIM_FAULT"] = (" ".join(fault.args), fault.target)
    severities = {s for _, s in checks.values()}
    return {
        "status": "HEALTH_ERR" if "HEALTH_ERR" in severities else "HEALTH_WARN" if severities else "HEALTH_OK",
        "checks": {
            k: {"severity": s, "summary": {"message": m, "count": 1}, "muted": False} for k, (m, s) in checks.items()
        },
        "mutes": [],
    }


def _status(node: SimNode, osds: list[dict]) -> dict:
    state, mons = _state(node), controllers(node)
    up, df_ = [m for m in mons if m.reachable], _df(osds)
    pgs = sum(p for _, p, _ in POOLS)
    return {
        "fsid": state.fsid,
        "health": _health(node, osds, mons),
        "election_epoch": 14,
        "quorum": [i for i, m in enumerate(mons) if m.reachable],
        "quorum_names": [short(m) for m in up],
        "quorum_age": int(time.time() - state.started),
        "monmap": {"epoch": 3, "min_mon_release_name": "quincy", "num_mons": len(mons)},
        "osdmap": {
            "epoch": 87,
            "num_osds": len(osds),
            "num_up_osds": len([o for o in osds if o["status"] == "up"]),
            "osd_up_since": int(state.started),
            "num_in_osds": len(osds),
            "osd_in_since": int(state.started),
            "num_remapped_pgs": 0,
        },
        "pgmap": {
            "pgs_by_state": [{"state_name": "active+clean", "count": pgs}],
            "num_pgs": pgs,
            "num_pools": len(POOLS),
            "num_objects": sum(p["stats"]["objects"] for p in df_["pools"]),
            "data_bytes": sum(p["stats"]["stored"] for p in df_["pools"]),
            "bytes_used": df_["stats"]["total_used_bytes"],
            "bytes_avail": df_["stats"]["total_avail_bytes"],
            "bytes_total": df_["stats"]["total_bytes"],
        },
        "fsmap": {"epoch": 1, "by_rank": [], "up:standby": 0},
        "mgrmap": {
            "available": bool(up),
            "num_standbys": max(len(up) - 1, 0),
            "modules": ["cephadm", "dashboard", "iostat", "nfs", "prometheus", "restful"],
            "services": {},
        },
        "servicemap": {
            "epoch": 1,
            "modified": time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(state.started)),
            "services": {},
        },
        "progress_events": {},
    }


@node_command("ceph")
def ceph(node: SimNode, args: list[str], stdin: bytes):
    """``ceph -s|status|osd df|df -f json|json-pretty``; fault ceph_health HEALTH_WARN|HEALTH_ERR REASON…"""
    if (missing := _not_here(node, "ceph", "controller", "ceph")) is not None:
        return missing
    words, fmt = list(args), "plain"
    for flag in ("-f", "--format"):
        if flag in words:
            i = words.index(flag)
            fmt = words[i + 1] if i + 1 < len(words) else ""
            del words[i : i + 2]
    answers = {
        ("-s",): _status,
        ("status",): _status,
        ("osd", "df"): lambda _, osds: _osd_df(osds),
        ("df",): lambda _, osds: _df(osds),
    }
    if fmt not in ("json", "json-pretty") or tuple(words) not in answers:
        return _unsupported("ceph", "ceph -s|osd df|df -f json")
    answer = answers[tuple(words)](node, _osds(node))
    return 0, (json.dumps(answer, indent=4 if fmt == "json-pretty" else None) + "\n").encode(), b""


# -- HAProxy ---------------------------------------------------------------------------------

#: TripleO's listens (puppet-tripleo writes them in name order): name, port, mode, their options.
PROXIES = [
    ("cinder", 8776, "http"),
    ("glance_api", 9292, "http"),
    ("heat_api", 8004, "http"),
    ("keystone_public", 5000, "http"),
    ("mysql", 3306, "tcp"),
    ("neutron", 9696, "http"),
    ("nova_osapi", 8774, "http"),
    ("redis", 6379, "tcp"),
]
_OPTIONS = {
    "http": [
        "mode http",
        "http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
        "http-request set-header X-Forwarded-Port %[dst_port]",
        "option httpchk",
        "option httplog",
    ],
    "mysql": [
        "option tcpka",
        "option httpchk",
        "option tcplog",
        "stick on dst",
        "stick-table type ip size 1000",
        "timeout client 90m",
        "timeout server 90m",
    ],
    "redis": [
        "balance first",
        "option tcp-check",
        "tcp-check send PING\\r\\n",
        "tcp-check expect string +PONG",
        "tcp-check send info\\ replication\\r\\n",
        "tcp-check expect string role:master",
        "tcp-check send QUIT\\r\\n",
        "tcp-check expect string +OK",
    ],
}
_CFG_HEAD = """# This file is managed by Puppet
global
  daemon
  group  haproxy
  log  /dev/log local0
  maxconn  20480
  pidfile  /var/run/haproxy.pid
  ssl-default-bind-ciphers  PROFILE=SYSTEM
  ssl-default-bind-options  no-sslv3 no-tlsv10
  stats  socket /var/lib/haproxy/stats mode 600 level user
  stats  timeout 2m
  user  haproxy

defaults
  log  global
  maxconn  4096
  mode  tcp
  retries  3
  timeout  http-request 10s
  timeout  queue 2m
  timeout  connect 10s
  timeout  client 2m
  timeout  server 2m
  timeout  check 10s
"""
#: The stats CSV's columns (HAProxy 2.4, management.txt section 9.1).
CSV_COLUMNS = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
]


def haproxy_cfg(node: SimNode, port: int) -> str:
    """The controller's haproxy.cfg: binds on its own address, one server per controller."""
    state, out = _state(node), [_CFG_HEAD]
    blocks = {
        name: [f"bind {node.address}:{port_} transparent", *_OPTIONS.get(name, _OPTIONS.get(mode, []))]
        + [
            f"server {short(c)}.internalapi.localdomain {c.address}:{port_} check fall 5 inter 2000 rise 2"
            for c in controllers(node)
        ]
        for name, port_, mode in PROXIES
    }
    blocks["haproxy.stats"] = [
        f"bind {node.address}:{port} transparent",
        "mode http",
        "stats enable",
        "stats uri /",
        f"stats auth {STATS_USER}:{state.password}",
    ]
    for name in sorted(blocks):
        out.append(f"\nlisten {name}\n" + "".join(f"  {line}\n" for line in blocks[name]))
    return "".join(out)


def stats_csv(node: SimNode) -> str:
    """HAProxy's ``show stat`` CSV as this controller sees its backends: a server is DOWN while
    its controller is down, and every server of a proxy fault haproxy_backend_down names."""
    state, now = _state(node), time.time()
    down = {f.target: f for f in node.faults.active("haproxy_backend_down")}
    rows = []
    proxies = [("haproxy.stats", 0, "http"), *list(PROXIES)]
    for iid, (name, port, mode) in enumerate(sorted(proxies), start=2):
        base = {
            "pxname": name,
            "pid": 1,
            "iid": iid,
            "mode": mode,
            "scur": 0,
            "smax": 4,
            "stot": 310 + iid,
            "bin": 41235 * iid,
            "bout": 183347 * iid,
            "dreq": 0,
            "dresp": 0,
            "rate": 0,
            "rate_max": 3,
        }
        rows.append(dict(base, svname="FRONTEND", slim=4096, ereq=0, status="OPEN", sid=0, type=0, rate_lim=0))
        servers = [] if name == "haproxy.stats" else controllers(node)
        ups, last_change = 0, state.started
        for sid, c in enumerate(servers, start=1):
            power = c.extra.get(KEY, {})
            up = name not in down and c.reachable
            since = (
                state.since(down[name])
                if name in down
                else power.get("up_since", state.started)
                if c.reachable
                else power.get("down_since", now)
            )
            last_change = max(last_change, since)
            ups += up
            check = (
                {
                    "status": "UP",
                    "check_status": "L7OK",
                    "check_code": 200 if mode == "http" or name == "mysql" else "",
                    "check_duration": 1,
                    "check_desc": "Layer7 check passed",
                    "check_health": 6,
                    "chkfail": 0,
                    "chkdown": 0,
                    "downtime": 0,
                }
                if up
                else {
                    "status": "DOWN",
                    "check_status": "L4CON",
                    "check_code": "",
                    "check_duration": 0,
                    "check_desc": "Layer4 connection problem",
                    "last_chk": "Connection refused",
                    "check_health": 0,
                    "chkfail": 5,
                    "chkdown": 1,
                    "downtime": int(now - since),
                }
            )
            rows.append(
                dict(
                    base,
                    **check,
                    svname=f"{short(c)}.internalapi.localdomain",
                    qcur=0,
                    qmax=0,
                    slim="",
                    econ=0,
                    eresp=0,
                    wretr=0,
                    wredis=0,
                    weight=1,
                    act=1,
                    bck=0,
                    lastchg=int(now - since),
                    sid=sid,
                    lbtot=base["stot"] // max(len(servers), 1),
                    type=2,
                    check_rise=2,
                    check_fall=5,
                    addr=f"{c.address}:{port}",
                    uweight=1,
                )
            )
        backend_down = bool(servers) and not ups
        rows.append(
            dict(
                base,
                svname="BACKEND",
                qcur=0,
                qmax=0,
                slim=410,
                econ=0,
                eresp=0,
                wretr=0,
                wredis=0,
                status="DOWN" if backend_down else "UP",
                weight=ups,
                act=ups,
                bck=0,
                chkdown=int(backend_down),
                lastchg=int(now - last_change),
                downtime=int(now - last_change) if backend_down else 0,
                sid=0,
                lbtot=base["stot"],
                type=1,
                algo="first" if name == "redis" else "roundrobin",
                uweight=ups,
            )
        )
    header = "# " + ",".join(CSV_COLUMNS) + "\n"
    return header + "".join(",".join(str(r.get(c, "")) for c in CSV_COLUMNS) + ",\n" for r in rows) + "\n"


_UNAUTHORIZED = (
    b"<html><body><h1>401 Unauthorized</h1>\nYou need a valid user and password to access this "
    b"content.\n</body></html>\n"
)


class _StatsListener:
    """HAProxy's stats page on a controller: ``GET /;csv`` with basic auth. It goes down and
    comes back with its node (same port), as haproxy does with its controller."""

    def __init__(self, node: SimNode, system: "System"):
        self.node, self.system, self.port, self._server = node, system, 0, None

    def start(self) -> "_StatsListener":
        listener = self
        expected = "Basic " + base64.b64encode(f"{STATS_USER}:{_state(self.node).password}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                    return self._answer(
                        401, _UNAUTHORIZED, "text/html", ("WWW-Authenticate", 'Basic realm="HAProxy Statistics"')
                    )
                if ";csv" in self.path:
                    return self._answer(200, stats_csv(listener.node).encode(), "text/plain")
                self._answer(
                    200,
                    b"<html><head><title>Statistics Report for HAProxy</title></head>"
                    b"<body>Statistics Report for HAProxy</body></html>\n",
                    "text/html",
                )

            def _answer(self, code, body, content_type, *headers):
                self.send_response_only(code)
                for name, value in [
                    ("Content-Type", content_type),
                    ("Cache-Control", "no-cache"),
                    ("Content-Length", str(len(body))),
                    *headers,
                ]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the simulator's HAProxy keeps no access log
                pass

        server = ThreadingHTTPServer((self.node.address, self.port), Handler)
        server.daemon_threads = True
        self.port, self._server = server.server_address[1], server
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"haproxy-stats-{self.node.address}",
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def power(self, up: bool) -> None:
        self.node.extra.setdefault(KEY, {})["up_since" if up else "down_since"] = time.time()
        if up and not self.system.stopped:
            self.start()
        elif not up:
            self.stop()


class System:
    """This module attached to a simulator's nodes: what stops its stats listeners."""

    def __init__(self, nodes: list[SimNode]):
        self.stopped = False
        state = _State(nodes)
        for node in nodes:
            node.shared[KEY] = state
        self.listeners = [_StatsListener(n, self).start() for n in nodes if kind_of(n) == "controller"]
        for listener in self.listeners:
            text = haproxy_cfg(listener.node, listener.port).encode()
            listener.node.files[HAPROXY_CFG] = listener.node.files[HAPROXY_CFG_GENERATED] = text
            listener.node.modes[HAPROXY_CFG] = 0o640
            listener.node.on_power.append(listener.power)

    def stop(self) -> None:
        self.stopped = True
        for listener in self.listeners:
            listener.stop()


def attach(nodes: list[SimNode]) -> System:
    """Share one system state among the simulator's nodes and start each controller's HAProxy
    stats listener (written into its haproxy.cfg); ``stop()`` it with the simulator."""
    return System(nodes)
