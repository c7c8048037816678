"""The nodes' systems and the control plane over real SSH and HTTP, read the way an operator's
tools read them (json.loads, the stats CSV over HTTP with basic auth, regexes over pcs text):
healthy by default, each fault changing exactly the output it names, and a rebooting
controller dropping out of its clusters on the others."""

import csv
import io
import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest

from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .conftest import wait_for
from .test_sim_nodes import run, ssh

C0, C1, C2, CMP = "127.0.4.11", "127.0.4.12", "127.0.4.13", "127.0.4.21"
CONTROLLERS = [C0, C1, C2]
HOSTS = {C0: "overcloud-controller-0", C1: "overcloud-controller-1", C2: "overcloud-controller-2"}
RPM = "sudo -n rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' openvswitch kernel"
EVERY_NODE = {
    "units": "sudo -n systemctl list-units --state=failed --plain --no-legend --no-pager",
    "df": "sudo -n df -P -B1",
    "chrony": "sudo -n chronyc -n tracking",
    "ntpstat": "sudo -n ntpstat",
    "rpm": RPM,
    "ovs": "sudo -n ovs-vswitchd --version",
}
ON_CONTROLLERS = {
    "pcs": "sudo -n pcs status",
    "rabbit": "sudo -n rabbitmqctl cluster_status --formatter json",
    "ceph": "sudo -n ceph -s -f json",
    "osd df": "sudo -n ceph osd df -f json",
    "ceph df": "sudo -n ceph df -f json",
    "haproxy.cfg": "sudo -n cat /etc/haproxy/haproxy.cfg",
}


@pytest.fixture(scope="module")
def key():
    return paramiko.ECDSAKey.generate()


@pytest.fixture(scope="module")
def oc(tmp_path_factory, key):
    scenario = Scenario(
        deployment_time=0.2,
        reboot_time=0.5,
        roles=[Role("ControllerDeployedServer", 3, CONTROLLERS), Role("ComputeDeployedServer", 1, [CMP])],
    )
    overcloud = Overcloud.start(
        scenario, state_dir=tmp_path_factory.mktemp("system") / "hostkeys", authorized_keys=[key]
    )
    yield overcloud
    overcloud.stop()


@pytest.fixture(scope="module")
def clients(oc, key):
    """One SSH session per node, opened again after a reboot dropped it."""
    open_ = {}

    def client(address: str) -> paramiko.SSHClient:
        if address not in open_ or not open_[address].get_transport().is_active():
            open_[address] = ssh(oc, address, key)
        return open_[address]

    yield client
    for c in open_.values():
        c.close()


@pytest.fixture(autouse=True)
def no_faults(oc):
    yield
    oc.faults.clear()


# -- the operator's side: run the commands, parse what they print ---------------------------


def stats(oc, address: str, auth: tuple[str, str] | None) -> list[dict]:
    """HAProxy's stats CSV from the address and port the controller's haproxy.cfg names."""
    cfg = oc.nodes[address].files["/etc/haproxy/haproxy.cfg"].decode()
    block = cfg.split("listen haproxy.stats\n")[1].split("\n\n")[0]
    bind = re.search(r"bind (\S+) transparent", block).group(1)
    handlers = [urllib.request.ProxyHandler({})]
    if auth:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, f"http://{bind}/", *auth)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    with urllib.request.build_opener(*handlers).open(f"http://{bind}/;csv", timeout=5) as answer:
        text = answer.read().decode()
    return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))


def stats_auth(oc, address: str) -> tuple[str, str]:
    cfg = oc.nodes[address].files["/etc/haproxy/haproxy.cfg"].decode()
    return tuple(re.search(r"^  stats auth (\S+)$", cfg, re.M).group(1).split(":", 1))


def parse_pcs(text: str) -> dict:
    online = re.search(r"^  \* Online: \[ (.*) \]$", text, re.M)
    offline = re.search(r"^  \* OFFLINE: \[ (.*) \]$", text, re.M)
    resources = re.findall(r"^\s+\* (\S+)\t\((\S+)\):\t (\w+)(?: (\S+))?$", text, re.M)
    return {
        "online": online.group(1).split() if online else [],
        "offline": offline.group(1).split() if offline else [],
        "not running": sorted(
            name for name, _, role, _ in resources if role not in ("Started", "Promoted", "Unpromoted")
        ),
        "failed actions": re.findall(
            r"^  \* (\S+)_start_0 on (\S+) 'error' \(1\): call=\d+, status='complete'", text, re.M
        ),
        "resources": {name: (role, host) for name, _, role, host in resources},
    }


def parse(name: str, status: int, out: str):
    """What a validation would check in each command's output."""
    if name == "units":
        return sorted(line.split()[0] for line in out.splitlines())
    if name == "df":
        rows = {r.split()[5]: r.split() for r in out.splitlines()[1:]}
        return rows["/"][4], int(rows["/"][3]) < 2**30
    if name == "chrony":
        fields = dict(re.match(r"(.*?)\s*: (.*)", line).groups() for line in out.splitlines())
        return fields["Leap status"], fields["Stratum"]
    if name in ("ntpstat", "haproxy.cfg"):
        return status
    if name == "rpm":
        return sorted(out.splitlines())
    if name == "ovs":
        return re.match(r"ovs-vswitchd \(Open vSwitch\) (\S+)\n", out).group(1)
    if name == "pcs":
        return {k: v for k, v in parse_pcs(out).items() if k != "resources"}
    if name == "rabbit":
        status_ = json.loads(out)
        return sorted(status_["running_nodes"]), status_["partitions"]
    if name == "ceph":
        status_ = json.loads(out)
        return status_["health"]["status"], sorted(status_["health"]["checks"]), status_["osdmap"]["num_up_osds"]
    if name == "osd df":
        return [(o["name"], o["status"], 20 <= o["utilization"] <= 40) for o in json.loads(out)["nodes"]]
    if name == "ceph df":
        return round(json.loads(out)["stats"]["total_used_raw_ratio"], 2)
    raise AssertionError(name)


def facts(oc, clients) -> dict:
    """Every check on every node, the nodes concurrently and each node's checks one after the other
    (as a validation asks them, one channel at a time): (address, check) → what it found."""

    def on(address):
        todo = list(EVERY_NODE.items()) + (list(ON_CONTROLLERS.items()) if address != CMP else [])
        return {(address, name): parse(name, *run(clients(address), command)[:2]) for name, command in todo}

    with ThreadPoolExecutor(len(CONTROLLERS) + 1) as pool:
        results = {k: v for found in pool.map(on, [*CONTROLLERS, CMP]) for k, v in found.items()}
        results.update(
            zip(
                [(a, "haproxy") for a in CONTROLLERS],
                pool.map(
                    lambda a: {(r["pxname"], r["svname"]): r["status"] for r in stats(oc, a, stats_auth(oc, a))},
                    CONTROLLERS,
                ),
                strict=False,
            )
        )
    return results


@pytest.fixture(scope="module")
def healthy(oc, clients):
    return facts(oc, clients)


# -- the default state ---------------------------------------------------------------------


def test_every_check_is_healthy_by_default(healthy):
    for address in [*CONTROLLERS, CMP]:
        assert healthy[address, "units"] == []
        capacity, nearly_full = healthy[address, "df"]
        assert int(capacity.rstrip("%")) < 90 and not nearly_full
        assert healthy[address, "chrony"] == ("Normal", "3") and healthy[address, "ntpstat"] == 0
        assert healthy[address, "rpm"] == healthy[C0, "rpm"]  # the same versions everywhere
        assert healthy[address, "ovs"] == "2.17.0"
    for address in CONTROLLERS:
        assert healthy[address, "pcs"] == {
            "online": list(HOSTS.values()),
            "offline": [],
            "not running": [],
            "failed actions": [],
        }
        assert healthy[address, "rabbit"] == ([f"rabbit@{h}" for h in HOSTS.values()], {})
        assert healthy[address, "ceph"] == ("HEALTH_OK", [], 6)
        assert all(status == "up" and in_range for _, status, in_range in healthy[address, "osd df"])
        assert 0.2 <= healthy[address, "ceph df"] <= 0.4
        assert set(healthy[address, "haproxy"].values()) == {"OPEN", "UP"}


def test_each_tool_prints_its_real_format(oc, clients):
    c0, compute = clients(C0), clients(CMP)
    status, out, _ = run(c0, "sudo -n df -P -B1 /var/lib/mysql")
    header, root = out.splitlines()
    assert status == 0 and header.split() == [
        "Filesystem",
        "1-blocks",
        "Used",
        "Available",
        "Capacity",
        "Mounted",
        "on",
    ]
    device, size, used, avail, _capacity, mount = root.split()
    assert (device, mount) == ("/dev/vda2", "/") and int(size) == int(used) + int(avail)
    assert run(c0, RPM)[1].splitlines() == [
        "openvswitch 2.17.0-103.el9fdp",
        "kernel 5.14.0-284.11.1.el9_2",
        "kernel 5.14.0-284.30.1.el9_2",
    ]
    assert run(c0, "rpm -q telnet") == (1, "package telnet is not installed\n", "")
    assert re.match(r"synchronised to NTP server \(\S+\) at stratum 3\n", run(c0, "ntpstat")[1])
    pcs = run(c0, "sudo -n pcs status")[1]
    assert pcs.startswith("Cluster name: tripleo_cluster\nCluster Summary:\n  * Stack: corosync\n")
    assert re.search(r"^  \* Current DC: \S+ \(version 2\.\S+\) - partition with quorum$", pcs, re.M)
    for bundle in ("galera-bundle", "rabbitmq-bundle", "redis-bundle", "haproxy-bundle"):
        assert f"  * Container bundle set: {bundle} [cluster.common.tag/" in pcs
    resources = parse_pcs(pcs)["resources"]
    assert resources["galera-bundle-1"] == ("Promoted", "overcloud-controller-1")
    assert [resources[f"redis-bundle-{i}"][0] for i in range(3)] == ["Promoted", "Unpromoted", "Unpromoted"]
    assert resources["openstack-cinder-volume-podman-0"] == ("Started", "overcloud-controller-0")
    assert any(name.startswith("ip-") for name in resources)
    assert pcs.endswith(
        "Daemon Status:\n  corosync: active/enabled\n  pacemaker: active/enabled\n  pcsd: active/enabled\n"
    )
    rabbit = json.loads(run(c0, "rabbitmqctl cluster_status --formatter json")[1])
    assert {"cluster_name", "disk_nodes", "running_nodes", "partitions", "alarms", "listeners", "versions"} <= set(
        rabbit
    )
    assert {listener["protocol"] for listener in rabbit["listeners"]["rabbit@overcloud-controller-1"]} == {
        "amqp",
        "clustering",
    }
    status_ = json.loads(run(c0, "ceph -s -f json")[1])
    assert status_["quorum_names"] == list(HOSTS.values())
    assert status_["pgmap"]["pgs_by_state"] == [{"state_name": "active+clean", "count": status_["pgmap"]["num_pgs"]}]
    osd = json.loads(run(c0, "ceph osd df -f json")[1])["nodes"][0]
    assert {
        "id",
        "device_class",
        "name",
        "type",
        "crush_weight",
        "reweight",
        "kb",
        "kb_used",
        "kb_avail",
        "utilization",
        "var",
        "pgs",
        "status",
    } <= set(osd) and osd["kb"] == osd["kb_used"] + osd["kb_avail"]
    usage = json.loads(run(c0, "ceph df -f json")[1])
    assert {"total_bytes", "total_avail_bytes", "total_used_bytes"} <= set(usage["stats"]) and usage["pools"]
    for command in ("pcs status", "ceph -s -f json", "rabbitmqctl cluster_status --formatter json"):
        name = command.split()[0]
        assert run(compute, command) == (127, "", f"bash: {name}: command not found\n")
    assert run(c0, "systemctl is-active os-collect-config")[0] == 3  # the existing actions still answer


def test_haproxy_cfg_and_its_stats_listener_behind_basic_auth(oc, clients):
    cfg = run(clients(C1), "cat /etc/haproxy/haproxy.cfg")[1]
    stats_block = re.search(r"^listen haproxy\.stats\n((?:  .*\n)+)", cfg, re.M).group(1)
    assert re.search(rf"^  bind {re.escape(C1)}:\d+ transparent$", stats_block, re.M)
    assert "  mode http\n  stats enable\n  stats uri /\n  stats auth admin:" in stats_block
    for proxy, port in [
        ("mysql", 3306),
        ("keystone_public", 5000),
        ("nova_osapi", 8774),
        ("glance_api", 9292),
        ("neutron", 9696),
        ("cinder", 8776),
        ("heat_api", 8004),
        ("redis", 6379),
    ]:
        block = re.search(rf"^listen {proxy}\n((?:  .*\n)+)", cfg, re.M).group(1)
        assert f"  bind {C1}:{port} transparent\n" in block
        assert re.findall(r"^  server (\S+) (\S+) check fall 5 inter 2000 rise 2$", block, re.M) == [
            (f"{h}.internalapi.localdomain", f"{a}:{port}") for a, h in HOSTS.items()
        ]
    rows = stats(oc, C1, stats_auth(oc, C1))
    assert {"pxname", "svname", "status", "check_status", "lastchg", "type"} <= set(rows[0])
    nova = [r for r in rows if r["pxname"] == "nova_osapi"]
    assert [(r["svname"], r["status"], r["type"]) for r in nova] == [("FRONTEND", "OPEN", "0")] + [
        (f"{h}.internalapi.localdomain", "UP", "2") for h in HOSTS.values()
    ] + [("BACKEND", "UP", "1")]
    assert {r["check_status"] for r in nova if r["type"] == "2"} == {"L7OK"}
    for auth in (None, ("admin", "not-the-password")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            stats(oc, C1, auth)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"] == 'Basic realm="HAProxy Statistics"'
    assert stats_auth(oc, C0) == stats_auth(oc, C2)  # one password for the simulator, random per run
    assert stats_auth(oc, C0)[1] not in repr(oc._system) + repr(oc.nodes[C0].shared["system"])


# -- each fault changes exactly its own check ------------------------------------------------


@pytest.mark.parametrize(
    "fault, changed",
    [
        (Fault("unit_failed", "overcloud-controller-1", args=["tripleo_nova_api"]), {(C1, "units")}),
        (Fault("disk_full", CMP), {(CMP, "df")}),
        (Fault("clock_unsynced", C2), {(C2, "chrony"), (C2, "ntpstat")}),
        (Fault("package_mismatch", C0, args=["openvswitch", "2.17.0-2.el9fdp"]), {(C0, "rpm")}),
        (Fault("package_mismatch", CMP, args=["openvswitch", "3.1.0-65.el9fdp"]), {(CMP, "rpm"), (CMP, "ovs")}),
        (Fault("rabbit_partition", ""), {(a, "rabbit") for a in CONTROLLERS}),
        (Fault("pacemaker_resource_failed", "rabbitmq-bundle-1"), {(a, "pcs") for a in CONTROLLERS}),
        (Fault("ceph_health", "HEALTH_ERR", args=["1", "full", "osd(s)"]), {(a, "ceph") for a in CONTROLLERS}),
        (Fault("haproxy_backend_down", "nova_osapi"), {(a, "haproxy") for a in CONTROLLERS}),
    ],
    ids=[
        "unit_failed",
        "disk_full",
        "clock_unsynced",
        "package_mismatch",
        "package_mismatch_ovs",
        "rabbit_partition",
        "pacemaker_resource_failed",
        "ceph_health",
        "haproxy_backend_down",
    ],
)
def test_a_fault_changes_exactly_the_check_it_names(oc, clients, healthy, fault, changed):
    oc.faults.add(fault)
    now = facts(oc, clients)
    assert {k for k in healthy if now[k] != healthy[k]} == changed
    found = {k: now[k] for k in changed}
    if fault.kind == "unit_failed":
        assert found[C1, "units"] == ["tripleo_nova_api.service"]
        line = run(clients(C1), "systemctl list-units --state=failed --plain --no-legend --no-pager 'tripleo*'")[1]
        assert line == "tripleo_nova_api.service loaded failed failed nova_api container\n"
        assert run(
            clients(C1),
            "systemctl list-units --state=failed --plain --no-legend --no-pager 'openstack*' 'neutron*' httpd docker",
        ) == (0, "", "")
    elif fault.kind == "disk_full":
        assert found[CMP, "df"] == ("99%", True)
    elif fault.kind == "clock_unsynced":
        assert found[C2, "chrony"] == ("Not synchronised", "0") and found[C2, "ntpstat"] == 1
        assert "Reference ID    : 00000000 ()\n" in run(clients(C2), "chronyc -n tracking")[1]
    elif fault.kind == "package_mismatch":
        assert f"openvswitch {fault.args[1]}" in found[fault.target, "rpm"]
    elif fault.kind == "rabbit_partition":
        majority = ["rabbit@overcloud-controller-0", "rabbit@overcloud-controller-1"]
        assert found[C0, "rabbit"] == (majority, {n: ["rabbit@overcloud-controller-2"] for n in majority})
        assert found[C2, "rabbit"] == (["rabbit@overcloud-controller-2"], {"rabbit@overcloud-controller-2": majority})
    elif fault.kind == "pacemaker_resource_failed":
        assert found[C0, "pcs"]["not running"] == ["rabbitmq-bundle-1"]
        assert found[C0, "pcs"]["failed actions"] == [("rabbitmq-bundle-1", "overcloud-controller-1")]
        assert found[C0, "pcs"]["online"] == list(HOSTS.values())
    elif fault.kind == "ceph_health":
        assert found[C0, "ceph"] == ("HEALTH_ERR", ["SIM_FAULT"], 6)
        check = json.loads(run(clients(C0), "ceph -s -f json")[1])["health"]["checks"]["SIM_FAULT"]
        assert check == {"severity": "HEALTH_ERR", "summary": {"message": "1 full osd(s)", "count": 1}, "muted": False}
    elif fault.kind == "haproxy_backend_down":
        down = {k for k, v in found[C0, "haproxy"].items() if v == "DOWN"}
        assert down == {("nova_osapi", f"{h}.internalapi.localdomain") for h in HOSTS.values()} | {
            ("nova_osapi", "BACKEND")
        }
        row = next(
            r
            for r in stats(oc, C0, stats_auth(oc, C0))
            if r["svname"].startswith("overcloud-controller-0") and r["pxname"] == "nova_osapi"
        )
        assert (row["check_status"], int(row["lastchg"]) < 60) == ("L4CON", True)


def test_a_whole_bundle_or_a_vip_can_fail(oc, clients):
    vips = re.findall(r"^  \* (ip-\S+)\t", run(clients(C1), "pcs status")[1], re.M)
    assert vips and len(vips) == len(set(vips))  # one resource per address
    vip = vips[0]
    oc.faults.add(Fault("pacemaker_resource_failed", "galera-bundle"))
    oc.faults.add(Fault("pacemaker_resource_failed", vip))
    found = parse_pcs(run(clients(C1), "pcs status")[1])
    assert found["not running"] == ["galera-bundle-0", "galera-bundle-1", "galera-bundle-2", vip]
    assert [name for name, _ in found["failed actions"]] == [
        vip,
        "galera-bundle-0",
        "galera-bundle-1",
        "galera-bundle-2",
    ]


# -- a rebooting controller drops out on the others -------------------------------------------


def test_a_rebooting_controller_is_offline_in_its_clusters_and_back_after(oc, clients, healthy):
    assert run(clients(C2), "sudo reboot")[0] == 0
    wait_for(lambda: not oc.nodes[C2].reachable, timeout=5, message="controller-2 down")
    pcs = parse_pcs(run(clients(C0), "pcs status")[1])
    assert (pcs["online"], pcs["offline"]) == (list(HOSTS.values())[:2], ["overcloud-controller-2"])
    assert pcs["failed actions"] == [] and "galera-bundle-2" in pcs["not running"]
    assert parse("rabbit", 0, run(clients(C1), "rabbitmqctl cluster_status --formatter json")[1]) == (
        ["rabbit@overcloud-controller-0", "rabbit@overcloud-controller-1"],
        {},
    )
    status_ = json.loads(run(clients(C0), "ceph -s -f json")[1])
    assert status_["quorum_names"] == list(HOSTS.values())[:2] and "MON_DOWN" in status_["health"]["checks"]
    rows = stats(oc, C0, stats_auth(oc, C0))
    assert {r["status"] for r in rows if r["svname"] == "overcloud-controller-2.internalapi.localdomain"} == {"DOWN"}
    assert {r["status"] for r in rows if r["svname"] == "BACKEND"} == {"UP"}
    with pytest.raises(urllib.error.URLError):  # its own HAProxy went down with it
        stats(oc, C2, stats_auth(oc, C2))
    wait_for(lambda: oc.nodes[C2].reachable, timeout=10, message="controller-2 back")
    assert facts(oc, clients) == healthy
