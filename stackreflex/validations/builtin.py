"""The runbook's own checks (seed 001 §2.10–2.12, the pre-upgrade validations), as data.

Each runs the command the runbook has operators type (or the API call behind the
``openstack … list`` it has them read) and judges the answer the way the runbook says to.
"""

import json
import urllib.error
import urllib.request
from base64 import b64encode
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import parsers
from .registry import Check, Limits, Seen, Verdict

if TYPE_CHECKING:
    from openstack.connection import Connection

    from ..tasks.heat import Stack

#: Filesystems that are not disks: a full tmpfs is no reason to stop an upgrade.
NOT_DISKS = ("tmpfs", "devtmpfs", "overlay", "shm", "squashfs")
#: Seconds the HAProxy stats page may take.
STATS_TIMEOUT = 10.0


def _unreadable(seen: Seen, what: str) -> Verdict:
    """Only stderr is quoted: stdout may be a file that holds secrets (haproxy.cfg)."""
    detail = seen.stderr.strip().splitlines()
    return Verdict.failed(f"exit {seen.status}", "", f"could not read {what}: {detail[-1] if detail else 'no output'}")


# -- every node ---------------------------------------------------------------------------


def judge_failed_units(seen: Seen, limits: Limits) -> Verdict:
    if seen.status != 0:
        return _unreadable(seen, "the failed units")
    units = [line.split()[0] for line in seen.stdout.splitlines() if line.strip()]
    if units:
        return Verdict.failed(
            ", ".join(units),
            "none failed",
            f"{len(units)} failed unit(s) on {seen.node}: see `systemctl status {units[0]}`, "
            "fix it, then `systemctl reset-failed`",
        )
    return Verdict.passed("none failed", "none failed")


def judge_disk_space(seen: Seen, limits: Limits) -> Verdict:
    # df exits 1 when one mount cannot be read (a stale NFS export) but still lists the others
    disks = [fs for fs in parsers.df(seen.stdout) if fs.device not in NOT_DISKS]
    if not disks:
        return _unreadable(seen, "free disk space")
    tightest = min(disks, key=lambda fs: fs.free_percent)
    seen_text = f"{tightest.mount} {tightest.free_percent:.0f}% free ({tightest.available / 2**30:.1f} GiB)"
    threshold = f"≥ {limits.min_free_percent:g}% free"
    if tightest.free_percent < limits.min_free_percent:
        return Verdict.failed(
            seen_text,
            threshold,
            f"{tightest.mount} on {seen.node} is nearly full: free space "
            "before upgrading (logs, old images, container storage)",
        )
    if tightest.free_percent < 2 * limits.min_free_percent:
        return Verdict.warning(seen_text, threshold, f"{tightest.mount} on {seen.node} has little room to spare")
    return Verdict.passed(seen_text, threshold)


def judge_clock(seen: Seen, limits: Limits) -> Verdict:
    if seen.command.startswith("ntpstat"):
        if seen.status == 0:
            return Verdict.passed("synchronised (ntpstat)", "synchronised")
        if seen.status in (1, 2):
            return Verdict.failed(
                seen.stdout.strip().splitlines()[0] if seen.stdout.strip() else "unsynchronised",
                "synchronised",
                f"the clock of {seen.node} is not synchronised: check `ntpq -p`",
            )
        return _unreadable(seen, "the clock's synchronisation")
    if seen.status != 0:
        return _unreadable(seen, "chrony's tracking")
    leap = parsers.chrony_tracking(seen.stdout).get("Leap status", "")
    if leap == "Normal":
        return Verdict.passed("Leap status: Normal", "synchronised")
    return Verdict.failed(
        f"Leap status: {leap or 'unknown'}",
        "synchronised",
        f"chronyd on {seen.node} has no synchronised source: check `chronyc sources`",
    )


#: §2.10's minimum versions (qemu's only where it is installed: the computes).
MINIMUMS = {
    "openvswitch": "2.9",
    "qemu-img-rhev": "2.10",
    "qemu-kvm-common-rhev": "2.10",
    "qemu-kvm-rhev": "2.10",
    "qemu-kvm-tools-rhev": "2.10",
}
PACKAGES = ("openvswitch", "kernel")


def _below(version: str, minimum: str) -> bool:
    return parsers.newest([version, minimum]) == minimum and not version.startswith(minimum)


def judge_packages(seen_by_node: dict[str, Seen], limits: Limits) -> dict[str, Verdict]:
    """At least §2.10's versions, and the same openvswitch and kernel on every node of a role (a
    node left behind by the minor update is upgraded from a different base)."""
    newest: dict[str, dict[str, str]] = {}
    verdicts: dict[str, Verdict] = {}
    for node, seen in seen_by_node.items():
        versions = parsers.rpm_versions(seen.stdout)
        if not versions:
            verdicts[node] = _unreadable(seen, "the installed packages")
            continue
        newest[node] = {pkg: parsers.newest(versions.get(pkg, [])) or "not installed" for pkg in PACKAGES}
        old = [
            f"{pkg} {parsers.newest(versions[pkg])}"
            for pkg, minimum in MINIMUMS.items()
            if versions.get(pkg) and _below(parsers.newest(versions[pkg]), minimum)
        ]
        if old:
            verdicts[node] = Verdict.failed(
                ", ".join(old),
                "openvswitch ≥ 2.9, qemu-*-rhev ≥ 2.10",
                f"{old[0]} on {node} is older than §2.10 requires: update it first (§2.6)",
            )
    by_role: dict[str, list[str]] = {}
    for node in newest:
        by_role.setdefault(seen_by_node[node].role, []).append(node)
    for role, nodes in by_role.items():
        common = {pkg: _reference([newest[n][pkg] for n in nodes]) for pkg in PACKAGES}
        for node in (n for n in nodes if n not in verdicts):
            mine = newest[node]
            seen_text = ", ".join(f"{pkg} {mine[pkg]}" for pkg in PACKAGES)
            odd = [pkg for pkg in PACKAGES if mine[pkg] != common[pkg]]
            if odd and len(nodes) > 1:
                pkg = odd[0]
                verdicts[node] = Verdict.failed(
                    seen_text,
                    f"same as the other {role} nodes",
                    f"{pkg} {mine[pkg]} on {node}, {common[pkg]} on the other {role} "
                    "nodes: run the minor update on every node first (§2.6)",
                )
            else:
                verdicts[node] = Verdict.passed(seen_text, f"same as the other {role} nodes")
    return verdicts


def _reference(versions: list[str]) -> str:
    """The version a role's nodes should all have: most nodes' version, or, when no version has
    more nodes than every other, the newest of those tied (the others were left behind)."""
    counts = Counter(versions).most_common()
    tied = [v for v, n in counts if n == counts[0][1]]
    return tied[0] if len(tied) == 1 else parsers.newest(tied)


def judge_ovs_running(seen: Seen, limits: Limits) -> Verdict:
    lines = [line.strip() for line in seen.stdout.splitlines() if line.strip()]
    if seen.status != 0 or not lines or "Open vSwitch" not in lines[0]:
        return _unreadable(seen, "the running Open vSwitch")
    running, installed = lines[0].split()[-1], lines[-1]
    seen_text = f"running {running}, installed {installed}"
    if not installed.startswith(running):
        return Verdict.failed(
            seen_text,
            "running = installed",
            f"ovs-vswitchd on {seen.node} still runs {running}: reboot the node (§2.7–2.9) "
            "so the installed version runs",
        )
    return Verdict.passed(seen_text, "running = installed")


# -- the control plane ----------------------------------------------------------------------


def judge_pacemaker(seen: Seen, limits: Limits) -> Verdict:
    if seen.status != 0 or "Online:" not in seen.stdout:
        return _unreadable(seen, "the Pacemaker cluster status")
    status = parsers.pcs_status(seen.stdout)
    seen_text = (
        f"{len(status.online)} online, {len(status.offline)} offline, "
        f"{len(status.not_started)} not started, {len(status.failed_actions)} failed action(s)"
    )
    threshold = f"{limits.controllers or len(status.online)} online, nothing stopped or failed"
    problems = (
        ([f"offline: {' '.join(status.offline)}"] if status.offline else [])
        + ([f"not started: {status.not_started[0]}"] if status.not_started else [])
        + ([f"failed: {status.failed_actions[0]}"] if status.failed_actions else [])
        + ([f"daemon {status.daemons_down[0]}"] if status.daemons_down else [])
        + ([] if status.quorum else ["partition without quorum"])
        + (
            [f"{len(status.online)} of {limits.controllers} controllers online"]
            if limits.controllers and len(status.online) < limits.controllers and not status.offline
            else []
        )
    )
    if problems:
        return Verdict.failed(seen_text, threshold, "; ".join(problems) + ": `pcs status`, then `pcs resource cleanup`")
    return Verdict.passed(seen_text, threshold)


def judge_galera(seen: Seen, limits: Limits) -> Verdict:
    if seen.status != 0:
        return _unreadable(seen, "Galera's wsrep status")
    status = dict(line.split("\t", 1) for line in seen.stdout.splitlines() if "\t" in line)
    state, size = status.get("wsrep_local_state_comment", "?"), status.get("wsrep_cluster_size", "?")
    seen_text = f"{state}, cluster size {size}, {status.get('wsrep_cluster_status', '?')}"
    threshold = f"Synced, cluster size {limits.controllers or '= controllers'}, Primary"
    if state != "Synced":
        return Verdict.failed(
            seen_text,
            threshold,
            f"Galera on {seen.node} is {state}: wait for it to sync (or `pcs resource cleanup galera-bundle`)",
        )
    if status.get("wsrep_cluster_status") != "Primary":
        return Verdict.failed(seen_text, threshold, f"Galera on {seen.node} is not in the primary component")
    if limits.controllers and size != str(limits.controllers):
        return Verdict.failed(seen_text, threshold, f"Galera on {seen.node} sees {size} of {limits.controllers} nodes")
    return Verdict.passed(seen_text, threshold)


def judge_rabbitmq(seen: Seen, limits: Limits) -> Verdict:
    try:
        status = json.loads(seen.stdout) if seen.status == 0 else None
    except json.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        return _unreadable(seen, "the RabbitMQ cluster status")
    members = set(status.get("disk_nodes", [])) | set(status.get("ram_nodes", []))
    running = set(status.get("running_nodes", []))
    partitions = status.get("partitions") or {}
    alarms = status.get("alarms") or []
    seen_text = f"{len(running)} of {len(members)} running, {len(partitions)} partition(s), {len(alarms)} alarm(s)"
    threshold = "all running, no partitions, no alarms"
    if partitions:
        where = "; ".join(f"{node} cannot see {', '.join(cut)}" for node, cut in partitions.items())
        return Verdict.failed(
            seen_text, threshold, f"network partition: {where}: restart the cut-off node's rabbitmq-bundle replica"
        )
    if members - running:
        return Verdict.failed(seen_text, threshold, f"not running: {', '.join(sorted(members - running))}")
    if alarms:
        return Verdict.failed(seen_text, threshold, f"alarm: {alarms[0]}")
    return Verdict.passed(seen_text, threshold)


def judge_haproxy(seen: Seen, limits: Limits) -> Verdict:
    """Read the stats listener's address and credentials from haproxy.cfg, then its CSV."""
    if seen.status != 0:
        return _unreadable(seen, "haproxy.cfg")
    listener = parsers.haproxy_stats_listener(seen.stdout)
    if listener is None:
        return Verdict.failed(
            "no haproxy.stats listener",
            "every backend UP",
            f"haproxy.cfg on {seen.node} has no 'listen haproxy.stats' section with a bind",
        )
    url = f"http://{listener.address}:{listener.port}{listener.uri.rstrip('/')}/;csv"
    request = urllib.request.Request(url)
    if listener.user:
        token = b64encode(f"{listener.user}:{listener.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=STATS_TIMEOUT) as response:
            rows = parsers.haproxy_csv(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Verdict.failed(
            "stats unreadable",
            "every backend UP",
            f"HAProxy stats at {listener.address}:{listener.port}: {getattr(exc, 'reason', exc)}",
        )
    backends = [r for r in rows if r["svname"] == "BACKEND"]
    servers = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]
    down = sorted({r["pxname"] for r in [*backends, *servers] if r.get("status", "").startswith("DOWN")})
    maint = sorted({f"{r['pxname']}/{r['svname']}" for r in servers if r.get("status", "").startswith("MAINT")})
    seen_text = f"{len(backends) - len([b for b in backends if b['pxname'] in down])} of {len(backends)} backends UP"
    if down:
        return Verdict.failed(
            seen_text, "every backend UP", f"DOWN: {', '.join(down)}: check those services on the controllers"
        )
    if maint:
        return Verdict.warning(seen_text, "every backend UP", f"in maintenance: {', '.join(maint[:3])}")
    return Verdict.passed(seen_text, "every backend UP")


def _ceph(seen: Seen, key: str, kind: type, what: str) -> tuple[Any, Verdict | None]:
    """(the ``key`` of a ceph command's JSON answer, None) or (None, the verdict when there is none:
    skipped without Ceph, failed when unreadable)."""
    if seen.missing_tool:
        return None, Verdict.skipped(f"no Ceph client on {seen.node}: the deployment has no Ceph")
    try:
        value = json.loads(seen.stdout)[key] if seen.status == 0 else None
    except (json.JSONDecodeError, KeyError, TypeError):
        value = None
    return (value, None) if isinstance(value, kind) else (None, _unreadable(seen, what))


def judge_ceph_health(seen: Seen, limits: Limits) -> Verdict:
    health, otherwise = _ceph(seen, "health", dict, "`ceph -s`")
    if otherwise:
        return otherwise
    status = health.get("status") or health.get("overall_status", "?")  # Jewel says overall_status
    reasons = [
        f"{name}: {check.get('summary', {}).get('message', '')}" for name, check in (health.get("checks") or {}).items()
    ]
    if status == "HEALTH_OK":
        return Verdict.passed(status, "HEALTH_OK")
    reason = "; ".join(reasons) or "no reason given"
    if status == "HEALTH_WARN":
        return Verdict.warning(status, "HEALTH_OK", f"{reason} (`ceph health detail`)")
    return Verdict.failed(status, "HEALTH_OK", f"{reason}: fix Ceph before the upgrade (`ceph health detail`)")


def judge_osd_space(seen: Seen, limits: Limits) -> Verdict:
    osds, otherwise = _ceph(seen, "nodes", list, "`ceph osd df`")
    if otherwise:
        return otherwise
    if not osds:
        return Verdict.skipped("the Ceph cluster has no OSDs")
    fullest = max(osds, key=lambda osd: float(osd.get("utilization", 0)))
    used = float(fullest.get("utilization", 0))
    seen_text, threshold = (
        f"{fullest.get('name')} {used:.0f}% used (fullest of {len(osds)})",
        f"≤ {limits.osd_max_used_percent:g}% used",
    )
    if used > limits.osd_max_used_percent:
        return Verdict.failed(
            seen_text,
            threshold,
            f"{fullest.get('name')} is {used:.0f}% used: add capacity or free space before rebooting Ceph nodes (§2.8)",
        )
    return Verdict.passed(seen_text, threshold)


# -- the APIs (what `openstack … list` shows) -------------------------------------------------


def judge_network_agents(seen: Seen, limits: Limits) -> Verdict:
    agents = list(seen.answer)
    dead = [f"{a.agent_type} on {a.host}" for a in agents if not a.is_alive]
    off = [f"{a.agent_type} on {a.host}" for a in agents if a.is_alive and not a.is_admin_state_up]
    seen_text, threshold = f"{len(agents) - len(dead)} of {len(agents)} alive", "every agent alive"
    if dead:
        return Verdict.failed(
            seen_text,
            threshold,
            f"dead: {', '.join(dead[:3])}{' …' if len(dead) > 3 else ''}: check the agents' containers",
        )
    if off:
        return Verdict.warning(seen_text, threshold, f"administratively down: {', '.join(off[:3])}")
    return Verdict.passed(seen_text, threshold)


def _services(seen: Seen, what: str) -> Verdict:
    services = list(seen.answer)
    down = [f"{s.binary} on {s.host}" for s in services if s.state != "up" and s.status == "enabled"]
    disabled = [
        f"{s.binary} on {s.host}" + (f" ({s.disabled_reason})" if s.disabled_reason else "")
        for s in services
        if s.status != "enabled"
    ]
    seen_text, threshold = f"{len(services) - len(down)} of {len(services)} up", f"every enabled {what} service up"
    if down:
        return Verdict.failed(seen_text, threshold, f"down: {', '.join(down[:3])}{' …' if len(down) > 3 else ''}")
    if disabled:
        return Verdict.warning(seen_text, threshold, f"disabled: {', '.join(disabled[:3])}")
    return Verdict.passed(seen_text, threshold)


def judge_compute_services(seen: Seen, limits: Limits) -> Verdict:
    return _services(seen, "compute")


def judge_volume_services(seen: Seen, limits: Limits) -> Verdict:
    return _services(seen, "volume")


#: Ironic's states a node should not be in when an upgrade starts.
IRONIC_BAD = ("error", "deploy failed", "clean failed", "inspect failed", "rescue failed")


def judge_ironic_nodes(seen: Seen, limits: Limits) -> Verdict:
    nodes = list(seen.answer)
    if not nodes:
        return Verdict.skipped("Ironic has no nodes (pre-provisioned servers only)")
    problems = [
        f"{n.name or n.id} in maintenance ({n.maintenance_reason or 'no reason given'})"
        for n in nodes
        if n.is_maintenance
    ]
    problems += [f"{n.name or n.id} {n.provision_state}" for n in nodes if n.provision_state in IRONIC_BAD]
    problems += [
        f"{n.name or n.id} power {n.power_state}"
        for n in nodes
        if n.provision_state == "active" and n.power_state != "power on"
    ]
    seen_text = f"{len(nodes)} node(s), {len(problems)} with a problem"
    threshold = "no maintenance, no failed state, active nodes powered on"
    if problems:
        return Verdict.failed(
            seen_text, threshold, f"{'; '.join(problems[:3])}: `openstack baremetal node maintenance unset` once fixed"
        )
    return Verdict.passed(seen_text, threshold)


def judge_stack(seen: Seen, limits: Limits) -> Verdict:
    stack = seen.answer
    if stack.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        return Verdict.passed(stack.status, "CREATE_COMPLETE or UPDATE_COMPLETE")
    reason = (
        "an operation is under way on it: wait for it to end"
        if stack.status.endswith("IN_PROGRESS")
        else "its last operation did not complete: `openstack stack failures list` and deploy again"
    )
    return Verdict.failed(stack.status, "CREATE_COMPLETE or UPDATE_COMPLETE", f"stack {stack.name}: {reason}")


def _stack(conn: "Connection", stack: str) -> "Stack":
    from ..tasks.heat import find_stack

    return find_stack(conn, stack)


#: haproxy.cfg where containerised TripleO keeps it, else where a host-installed HAProxy does.
HAPROXY_CONFIG = (
    "sh -c 'cat /var/lib/config-data/puppet-generated/haproxy/etc/haproxy/haproxy.cfg || cat /etc/haproxy/haproxy.cfg'"
)
FAILED_UNITS = "systemctl list-units --state=failed --plain --no-legend --no-pager"
DISK = "df -P -B1 -x overlay -x tmpfs -x devtmpfs -x squashfs -x iso9660"
CLOCK = ("chronyc -n tracking", "ntpstat")
#: Health checks belong after a deployment as much as before an upgrade.
HEALTH = ("pre-upgrade", "post-deployment")

undercloud = [
    Check(
        "undercloud-failed-units",
        "no OpenStack, Neutron, httpd or docker unit has failed",
        "undercloud",
        "undercloud-node",
        judge_failed_units,
        command=f"{FAILED_UNITS} 'openstack*' 'neutron*' httpd docker",
        groups=HEALTH,
        source="001 §2.11",
    ),
    Check(
        "undercloud-disk-space",
        "every filesystem has the free space the upgrade needs",
        "undercloud",
        "undercloud-node",
        judge_disk_space,
        command=DISK,
        groups=HEALTH,
        source="001 §2.11",
    ),
    Check(
        "undercloud-clock",
        "the clock is synchronised (chrony, or ntpd)",
        "undercloud",
        "undercloud-node",
        judge_clock,
        command=CLOCK,
        groups=HEALTH,
        source="001 §2.11",
    ),
    Check(
        "undercloud-network-agents",
        "every Neutron agent is alive (openstack network agent list)",
        "undercloud",
        "api",
        judge_network_agents,
        query=lambda conn, stack: list(conn.network.agents()),
        groups=HEALTH,
        source="001 §2.11",
    ),
    Check(
        "undercloud-compute-services",
        "every enabled compute service is up (openstack compute service list)",
        "undercloud",
        "api",
        judge_compute_services,
        query=lambda conn, stack: list(conn.compute.services()),
        groups=HEALTH,
        source="001 §2.11",
    ),
    Check(
        "ironic-nodes",
        "no Ironic node in maintenance or a failed state (openstack baremetal node list)",
        "undercloud",
        "api",
        judge_ironic_nodes,
        query=lambda conn, stack: list(conn.baremetal.nodes(details=True)),
        groups=HEALTH,
        source="001 §2.11",
    ),
]

overcloud = [
    Check(
        "stack-status",
        "the overcloud stack's last operation completed",
        "overcloud",
        "api",
        judge_stack,
        query=_stack,
        cloud="undercloud",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "failed-units",
        "no systemd unit has failed",
        "overcloud",
        "each-node",
        judge_failed_units,
        command=FAILED_UNITS,
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "disk-space",
        "every filesystem has the free space the upgrade needs",
        "overcloud",
        "each-node",
        judge_disk_space,
        command=DISK,
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "clock-sync",
        "the clock is synchronised (chrony, or ntpd)",
        "overcloud",
        "each-node",
        judge_clock,
        command=CLOCK,
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "packages-consistent",
        "§2.10's minimum versions; the same openvswitch and kernel across a role",
        "overcloud",
        "each-node",
        judge_packages,
        across=True,
        command="rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' " + " ".join(dict.fromkeys([*PACKAGES, *MINIMUMS])),
        source="001 §2.10",
    ),
    Check(
        "ovs-running-version",
        "the Open vSwitch running is the one installed",
        "overcloud",
        "each-node",
        judge_ovs_running,
        command="ovs-appctl version && rpm -q --qf '%{VERSION}\\n' openvswitch",
        source="001 §2.10",
    ),
    Check(
        "pacemaker-status",
        "every controller online; no resource stopped or failed (pcs status)",
        "overcloud",
        "one-controller",
        judge_pacemaker,
        command="pcs status",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "galera-synced",
        "Galera synced, primary, with every controller (wsrep status)",
        "overcloud",
        "each-controller",
        judge_galera,
        command="mysql -s -N -e \"SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment',"
        "'wsrep_cluster_size','wsrep_cluster_status','wsrep_ready')\"",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "rabbitmq-cluster",
        "every RabbitMQ node running; no partition, no alarm",
        "overcloud",
        "one-controller",
        judge_rabbitmq,
        command="rabbitmqctl cluster_status --formatter json",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "haproxy-backends",
        "no HAProxy backend DOWN (the haproxy.stats listener's CSV)",
        "overcloud",
        "one-controller",
        judge_haproxy,
        command=HAPROXY_CONFIG,
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "ceph-health",
        "Ceph reports HEALTH_OK (ceph -s)",
        "overcloud",
        "one-controller",
        judge_ceph_health,
        command="ceph -s -f json",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "ceph-osd-space",
        "no OSD fuller than the threshold (ceph osd df)",
        "overcloud",
        "one-controller",
        judge_osd_space,
        command="ceph osd df -f json",
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "network-agents",
        "every overcloud Neutron agent is alive (openstack network agent list)",
        "overcloud",
        "api",
        judge_network_agents,
        query=lambda conn, stack: list(conn.network.agents()),
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "compute-services",
        "every enabled compute service is up (openstack compute service list)",
        "overcloud",
        "api",
        judge_compute_services,
        query=lambda conn, stack: list(conn.compute.services()),
        groups=HEALTH,
        source="001 §2.12",
    ),
    Check(
        "volume-services",
        "every enabled volume service is up (openstack volume service list)",
        "overcloud",
        "api",
        judge_volume_services,
        query=lambda conn, stack: list(conn.block_storage.services()),
        groups=HEALTH,
        source="001 §2.12",
    ),
]
