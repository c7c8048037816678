"""Before an upgrade (seed 001 §2.1–2.2, §2.10–2.12): `stackreflex validate` and `stackreflex backup`
end to end, through the CLI, against the simulated undercloud and overcloud over real SSH, SFTP and HTTP."""

import hashlib
import json
import re
import sqlite3
import tarfile
import textwrap

import paramiko
import pytest

from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs, run_with_steps
from stackreflex.tasks.ssh import trust_host
from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .conftest import make_settings, run_cli, wait_for

CONTROLLERS = ["overcloud-controller-0", "overcloud-controller-1", "overcloud-controller-2"]
WORK_PREFIX = "/var/tmp/stackreflex-backup-"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """The default layout (3 controllers, 2 computes, an undercloud) whose deployment completes at
    once (no agent to configure), with settings that reach every node: embedded mode, SQLite."""
    base = tmp_path_factory.mktemp("upgrade")
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(base / "id_ecdsa"))
    scenario = Scenario(
        signal_transport="NO_SIGNAL",
        speed=20,
        roles=[
            Role("ControllerDeployedServer", 3, ["127.0.0.11", "127.0.0.12", "127.0.0.13"]),
            Role("ComputeDeployedServer", 2, ["127.0.0.21", "127.0.0.22"]),
        ],
        compute_hosts={"compute-10.localdomain": 2},
    )
    oc = Overcloud.start(scenario, state_dir=base / "hostkeys", authorized_keys=[key])
    (base / "inventory.yaml").write_text(json.dumps(oc.inventory()))
    (base / "clouds.yaml").write_text(oc.clouds_yaml("overcloud"))  # the overcloud's own cloud (its overcloudrc)
    settings = Settings(
        database_url=f"sqlite:///{base}/audit.db",
        inventory=base / "inventory.yaml",
        ssh_key_file=base / "id_ecdsa",
        ssh_known_hosts=base / "known_hosts",
    )
    for node in oc.nodes.values():
        trust_host(settings, node.address, node.port)
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="the stack to complete")
    yield oc, settings, base
    oc.stop()


@pytest.fixture
def faults(cloud):
    oc = cloud[0]
    yield oc.faults
    oc.faults.clear()


def environment(cloud) -> dict:
    oc, _, base = cloud
    return {
        **oc.environment(),
        "OS_CLIENT_CONFIG_FILE": str(base / "clouds.yaml"),
        "STACKREFLEX_OVERCLOUD_CLOUD": "overcloud",
    }


def cli(cloud, tmp_path, *args, timeout=120):
    return run_cli(cloud[1], tmp_path, *args, env=environment(cloud), timeout=timeout)


def verdicts(done) -> list[dict]:
    assert done.stdout.strip(), (done.stdout, done.stderr)
    return json.loads(done.stdout)


def not_passing(rows: list[dict]) -> list[tuple]:
    return sorted((r["check"], r["target"], r["verdict"]) for r in rows if r["verdict"] != "pass")


# -- validations --------------------------------------------------------------------------------


def test_the_default_overcloud_passes_every_check_on_every_node(cloud, tmp_path):
    done = cli(cloud, tmp_path, "validate", "overcloud", "--wait", "-f", "json")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    rows = verdicts(done)
    assert len({r["check"] for r in rows}) >= 15, sorted({r["check"] for r in rows})
    assert not_passing(rows) == []
    on_nodes = {r["target"] for r in rows if r["check"] == "failed-units"}
    assert on_nodes == {*CONTROLLERS, "overcloud-compute-0", "overcloud-compute-1"}
    assert {r["target"] for r in rows if r["check"] == "galera-synced"} == set(CONTROLLERS)
    assert all(r["seen"] and r["threshold"] for r in rows)
    # the HAProxy stats password the check read from haproxy.cfg is in no output and no audit row
    config = cloud[0].nodes["127.0.0.11"].files["/etc/haproxy/haproxy.cfg"].decode()
    password = re.search(r"stats auth admin:(\S+)", config).group(1)
    audit_dump = "\n".join(sqlite3.connect(cloud[1].database().removeprefix("sqlite:///")).iterdump())
    assert password not in done.stdout + done.stderr and password not in audit_dump


FAULTS = [  # fault, its check, the node it names, what the verdict shows it saw
    (
        Fault("unit_failed", "overcloud-compute-1", args=["tripleo_nova_libvirt.service"]),
        "failed-units",
        "overcloud-compute-1",
        "tripleo_nova_libvirt.service",
    ),
    (Fault("disk_full", "127.0.0.12"), "disk-space", "overcloud-controller-1", "% free"),
    (Fault("clock_unsynced", "overcloud-compute-0"), "clock-sync", "overcloud-compute-0", "Not synchronised"),
    (Fault("galera_desynced", "overcloud-controller-2"), "galera-synced", "overcloud-controller-2", "Donor/Desynced"),
    (Fault("rabbit_partition", ""), "rabbitmq-cluster", "overcloud-controller-0", "partition"),
    (
        Fault("pacemaker_resource_failed", "openstack-cinder-volume"),
        "pacemaker-status",
        "overcloud-controller-0",
        "not started",
    ),
    (
        Fault("ceph_health", "HEALTH_ERR", args=["1", "full", "osd(s)"]),
        "ceph-health",
        "overcloud-controller-0",
        "HEALTH_ERR",
    ),
    (
        Fault("package_mismatch", "overcloud-compute-0", args=["openvswitch", "2.15.0-1.el9fdp"]),
        "packages-consistent",
        "overcloud-compute-0",
        "2.15.0-1.el9fdp",
    ),
    (Fault("haproxy_backend_down", "glance_api"), "haproxy-backends", "overcloud-controller-0", "backends UP"),
]


def test_each_fault_fails_exactly_its_check_naming_the_node_and_the_value(cloud, faults, tmp_path):
    """All the faults at once, each on its own node or service: the checks that fail are exactly
    theirs, one verdict each, naming the node and what was seen (one run: each is a run's worth)."""
    for fault, *_ in FAULTS:
        faults.add(fault)
    done = cli(cloud, tmp_path, "validate", "overcloud", "--wait", "-f", "json")
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])
    rows = verdicts(done)
    assert not_passing(rows) == sorted((check, node, "fail") for _, check, node, _ in FAULTS), not_passing(rows)
    for _, check, node, seen in FAULTS:
        [failed] = [r for r in rows if r["check"] == check and r["target"] == node]
        assert seen in failed["seen"] and failed["reason"], failed
    assert f"{len(FAULTS)} of {len(rows)} checks failed" in done.stderr, done.stderr[-1000:]


def test_an_unreachable_node_fails_each_of_its_checks_and_only_those(cloud, faults, tmp_path):
    faults.add(Fault("node_unreachable", "127.0.0.22"))
    done = cli(cloud, tmp_path, "validate", "overcloud", "--wait", "-f", "json")
    assert done.returncode == 1
    rows = verdicts(done)
    failed = [r for r in rows if r["verdict"] != "pass"]
    assert {r["target"] for r in failed} == {"ComputeDeployedServer[1]"}
    assert sorted(r["check"] for r in failed) == [
        "clock-sync",
        "disk-space",
        "failed-units",
        "ovs-running-version",
        "packages-consistent",
    ]
    assert all(r["seen"] == "unreachable" and "127.0.0.22" in r["reason"] for r in failed), failed


def test_without_the_overcloud_s_own_cloud_its_service_checks_fail_rather_than_read_the_undercloud(cloud, tmp_path):
    oc, settings, _ = cloud
    done = run_cli(
        settings,
        tmp_path,
        "validate",
        "overcloud",
        "--only",
        "compute-services",
        "--only",
        "stack-status",
        "--wait",
        "-f",
        "json",
        env=oc.environment(),
        timeout=120,
    )
    assert done.returncode == 1
    rows = {r["check"]: r for r in verdicts(done)}
    assert rows["stack-status"]["verdict"] == "pass"  # Heat is the undercloud's
    assert rows["compute-services"]["verdict"] == "fail" and "--os-cloud" in rows["compute-services"]["reason"]


def test_ceph_health_warn_is_a_warning_with_its_reason_not_a_failure(cloud, faults, tmp_path):
    faults.add(Fault("ceph_health", "HEALTH_WARN", args=["noout", "flag(s)", "set"]))
    done = cli(
        cloud,
        tmp_path,
        "validate",
        "overcloud",
        "--only",
        "ceph-health",
        "--only",
        "ceph-osd-space",
        "--wait",
        "-f",
        "json",
    )
    assert done.returncode == 0, done.stderr
    [row] = [r for r in verdicts(done) if r["check"] == "ceph-health"]
    assert row["verdict"] == "warn" and "noout flag(s) set" in row["reason"]


def test_the_undercloud_checks_pass_and_an_ironic_node_in_maintenance_fails_them(cloud, faults, tmp_path):
    done = cli(cloud, tmp_path, "validate", "undercloud", "--wait", "-f", "json")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    rows = verdicts(done)
    assert {r["check"] for r in rows} >= {
        "undercloud-failed-units",
        "undercloud-disk-space",
        "undercloud-clock",
        "undercloud-network-agents",
        "undercloud-compute-services",
        "ironic-nodes",
    }
    assert not_passing(rows) == []
    faults.add(Fault("ironic_maintenance", "compute-10"))
    done = cli(cloud, tmp_path, "validate", "undercloud", "--wait", "-f", "json")
    assert done.returncode == 1
    failed = [r for r in verdicts(done) if r["verdict"] != "pass"]
    assert len(failed) == 1, failed
    [failed] = failed
    assert failed["check"] == "ironic-nodes" and "compute-10 in maintenance" in failed["reason"], failed


def test_checks_are_data_a_user_file_adds_one_and_a_bad_name_is_refused(cloud, tmp_path):
    extra = tmp_path / "site_checks.py"
    extra.write_text(
        textwrap.dedent("""
        from stackreflex.validations import Check, Verdict

        def judge(seen, limits):
            return Verdict.passed(seen.stdout.strip(), "a host name") if seen.stdout.strip() else \\
                Verdict.failed("", "a host name", "no host name")

        site_hostname = Check("site-hostname", "the node answers with its host name", "overcloud", "each-node",
                              judge, command="hostname", groups=("site",))
    """)
    )
    listed = cli(cloud, tmp_path, "validate", "--list", "--checks", str(extra), "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert {"name": "site-hostname", "groups": "site"}.items() <= next(
        c for c in json.loads(listed.stdout) if c["name"] == "site-hostname"
    ).items()
    done = cli(
        cloud, tmp_path, "validate", "overcloud", "--group", "site", "--checks", str(extra), "--wait", "-f", "json"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(r["seen"] for r in verdicts(done)) == sorted(
        [*CONTROLLERS, "overcloud-compute-0", "overcloud-compute-1"]
    )
    wrong = cli(cloud, tmp_path, "validate", "overcloud", "--only", "no-such-check")
    assert wrong.returncode == 2 and "unknown check no-such-check" in wrong.stderr


# -- backups --------------------------------------------------------------------------------------


def left_on_nodes(oc: Overcloud) -> list[str]:
    return [f"{n.hostname}:{p}" for n in oc.nodes.values() for p in list(n.files) if p.startswith(WORK_PREFIX)]


def steps_of(settings: Settings, handler: str) -> list[dict]:
    audit = AuditLog.open(settings.database())
    [run] = list_runs(audit, RunFilter(handler=handler, limit=1))
    return run_with_steps(audit, run["id"])["steps"]


def test_a_control_plane_backup_leaves_verified_artefacts_a_manifest_and_nothing_on_the_nodes(cloud, tmp_path):
    oc, settings, _ = cloud
    dest = tmp_path / "backups"
    done = cli(
        cloud, tmp_path, "backup", "controlplane", "--stack", "overcloud", "--dest", str(dest), "--wait", "-f", "json"
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    listed = json.loads(done.stdout)
    fetched = {
        s["detail"]["file"]: s["detail"]
        for s in steps_of(settings, "backup_controlplane")
        if s["name"].startswith("fetch ")
    }
    files = sorted(p.name for p in dest.iterdir() if not p.name.endswith(".manifest.json"))
    assert files == sorted(fetched) == sorted(r["file"] for r in listed)
    stamp = r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d"
    expected = [
        rf"openstack_databases-{stamp}\.sql",
        rf"openstack_databases_grants-{stamp}\.sql",
        *(rf"{c}-filesystem-{stamp}\.tar\.gz" for c in CONTROLLERS),
        rf"redis-{stamp}\.rdb",
    ]
    assert len(files) == len(expected)
    assert all(any(re.fullmatch(e, f) for f in files) for e in expected), files
    assert {oct((dest / name).stat().st_mode & 0o777) for name in fetched} == {"0o600"}  # they hold secrets
    for name, detail in fetched.items():
        body = (dest / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == detail["sha256"] and len(body) == detail["size"]
    [manifest] = [json.loads(p.read_text()) for p in dest.glob("*.manifest.json")]
    assert manifest["status"] == "complete"
    assert {a["file"]: a["sha256"] for a in manifest["artefacts"]} == {n: d["sha256"] for n, d in fetched.items()}
    archive = next(dest.glob("overcloud-controller-0-filesystem-*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.startswith("etc/") for n in names) and not any(n.startswith("var/lib/nova/instances") for n in names)
    dump = next(p for p in dest.glob("openstack_databases-*.sql"))
    assert dump.read_text().rstrip().splitlines()[-1].startswith("-- Dump completed")
    assert left_on_nodes(oc) == []
    # the root password is nowhere: CLI, audit log, manifest, anything written here
    secrets = json.loads(oc.nodes["127.0.0.11"].files["/etc/puppet/hieradata/service_configs.json"])
    password = secrets["mysql::server::root_password"]
    audit_dump = "\n".join(sqlite3.connect(settings.database().removeprefix("sqlite:///")).iterdump())
    for text in (done.stdout, done.stderr, audit_dump, *(p.read_text() for p in dest.glob("*.json"))):
        assert password not in text and secrets["redis::masterauth"] not in text
    again = cli(cloud, tmp_path, "backup", "controlplane", "--dest", str(dest), "--wait", "-f", "json")
    assert again.returncode == 0, again.stderr
    assert len(list(dest.glob("*.manifest.json"))) == 2 and set(files) < {p.name for p in dest.iterdir()}


def test_an_undercloud_backup_is_one_verified_archive_holding_the_dump(cloud, tmp_path):
    oc, _settings, _ = cloud
    dest = tmp_path / "uc"
    done = cli(cloud, tmp_path, "backup", "undercloud", "--dest", str(dest), "--wait", "-f", "json")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    [archive] = list(dest.glob("undercloud-backup-*.tar"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("undercloud-all-databases.sql") for n in names)
    assert any(n.startswith("home/stack/") for n in names)
    assert left_on_nodes(oc) == []


def test_an_undercloud_without_the_space_fails_at_the_space_check_before_writing_anything(cloud, faults, tmp_path):
    oc, _settings, _ = cloud
    faults.add(Fault("disk_full", "undercloud"))
    commands_before = len(oc.nodes["127.0.0.2"].commands)
    dest = tmp_path / "full"
    done = cli(cloud, tmp_path, "backup", "undercloud", "--dest", str(dest), "--wait")
    assert done.returncode == 1
    assert "free space" in done.stderr and "GB free in /var/tmp" in done.stderr, done.stderr
    ran = oc.nodes["127.0.0.2"].commands[commands_before:]
    assert not any(word in c.split() for c in ran for word in ("mysqldump", "tar", "install")), ran
    assert [p.name for p in dest.iterdir() if not p.name.endswith(".manifest.json")] == []
    assert left_on_nodes(oc) == []


def test_a_dry_run_shows_each_node_s_plan_with_its_estimate_and_changes_nothing(cloud, tmp_path):
    oc, _settings, _ = cloud
    dest = tmp_path / "dry"
    before = {a: len(n.commands) for a, n in oc.nodes.items()}
    done = cli(cloud, tmp_path, "backup", "controlplane", "--dest", str(dest), "--dry-run", "-f", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["node"] for r in rows} == set(CONTROLLERS)
    estimates = [r["estimate"] for r in rows if r["step"] == "free space"]
    assert len(estimates) == 3 and all(re.fullmatch(r"\d+\.\d (KB|MB|GB)", e) for e in estimates), estimates
    assert any("--defaults-extra-file=/dev/stdin" in r["command"] for r in rows)
    assert not dest.exists()
    ran = [c for a, n in oc.nodes.items() for c in n.commands[before[a] :]]
    assert ran and all(c.split()[0] == "hostname" or c.split()[2] == "du" for c in ran), ran


def test_a_backup_that_fails_midway_on_a_worker_keeps_what_it_verified_and_leaves_nothing_half_done(
    cloud, faults, tmp_path, broker_url, namespace, workers
):
    """Through RabbitMQ and a worker process: the second controller's archive fails; the run fails
    naming it, the artefacts already verified stay (listed in a manifest that says the backup
    failed), no .partial file is left, every node's directory is gone, and no password is logged."""
    oc, embedded, _ = cloud
    settings = make_settings(
        broker_url,
        embedded.database(),
        namespace,
        inventory=embedded.inventory,
        ssh_key_file=embedded.ssh_key_file,
        ssh_known_hosts=embedded.ssh_known_hosts,
        log_level="DEBUG",
    )
    worker = workers(settings, env=environment(cloud))
    faults.add(Fault("command_failure", "127.0.0.12", match="tar --ignore-failed-read", code=2))
    dest = tmp_path / "failing"
    done = run_cli(
        settings,
        tmp_path,
        "backup",
        "controlplane",
        "--dest",
        str(dest),
        "--wait",
        "-f",
        "json",
        env=environment(cloud),
        timeout=180,
    )
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])
    assert "archive on overcloud-controller-1 failed" in done.stderr, done.stderr
    [manifest] = [json.loads(p.read_text()) for p in dest.glob("*.manifest.json")]
    assert manifest["status"] == "failed" and "simulated failure" in manifest["error"]
    kept = sorted(a["file"] for a in manifest["artefacts"])
    assert kept == sorted(p.name for p in dest.iterdir() if not p.name.endswith(".manifest.json"))
    assert any(f.startswith("overcloud-controller-0-filesystem-") for f in kept)
    assert not any(f.startswith("overcloud-controller-1") for f in kept)
    assert not list(dest.glob("*.partial"))
    assert left_on_nodes(oc) == []
    password = json.loads(oc.nodes["127.0.0.11"].files["/etc/puppet/hieradata/service_configs.json"])[
        "mysql::server::root_password"
    ]
    worker.terminate()
    log = worker.log_path.read_text()
    assert "backup_controlplane" in log and password not in log


def test_a_deployment_with_telemetry_mongodb_has_its_dump_backed_up_too(tmp_path):
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(tmp_path / "id_ecdsa"))
    scenario = Scenario(
        signal_transport="NO_SIGNAL",
        telemetry_mongodb=True,
        undercloud="",
        compute_hosts={},
        roles=[Role("ControllerDeployedServer", 1, ["127.0.0.41"])],
    )
    oc = Overcloud.start(scenario, state_dir=tmp_path / "hostkeys", authorized_keys=[key])
    try:
        (tmp_path / "inventory.yaml").write_text(json.dumps(oc.inventory()))
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/audit.db",
            inventory=tmp_path / "inventory.yaml",
            ssh_key_file=tmp_path / "id_ecdsa",
            ssh_known_hosts=tmp_path / "known_hosts",
        )
        for node in oc.nodes.values():
            trust_host(settings, node.address, node.port)
        wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="the stack to complete")
        dest = tmp_path / "with-mongo"
        done = run_cli(
            settings,
            tmp_path,
            "backup",
            "controlplane",
            "--dest",
            str(dest),
            "--wait",
            env=oc.environment(),
            timeout=120,
        )
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
        [mongo] = list(dest.glob("mongo-*.tar"))
        with tarfile.open(mongo) as tar:
            names = tar.getnames()
        assert "mongo/oplog.bson" in names and any(n.endswith(".bson") and "/" in n[6:] for n in names), names
        assert [s["status"] for s in steps_of(settings, "backup_controlplane") if s["name"] == "mongodb"] == [
            "succeeded"
        ]
    finally:
        oc.stop()


def test_a_cancelled_backup_removes_its_node_directories_and_half_written_files_and_says_so(
    cloud, faults, tmp_path, broker_url, namespace, workers
):
    """Cancelled while the second controller's archive runs: the run ends cancelled after its
    compensation; the first controller's verified artefacts stay, listed in a 'cancelled' manifest;
    nothing is left on the nodes or half-written here."""
    oc, embedded, _ = cloud
    settings = make_settings(
        broker_url,
        embedded.database(),
        namespace,
        inventory=embedded.inventory,
        ssh_key_file=embedded.ssh_key_file,
        ssh_known_hosts=embedded.ssh_known_hosts,
    )
    workers(settings, env=environment(cloud))
    faults.add(Fault("command_slow", "127.0.0.12", match="tar --ignore-failed-read", seconds=4))
    dest = tmp_path / "cancelled"
    sent = run_cli(settings, tmp_path, "backup", "controlplane", "--dest", str(dest), env=environment(cloud))
    assert sent.returncode == 0, sent.stderr
    audit = AuditLog.open(settings.database())

    def archiving():
        runs = list_runs(audit, RunFilter(handler="backup_controlplane", limit=1, status=["running"]))
        steps = run_with_steps(audit, runs[0]["id"])["steps"] if runs else []
        return (
            runs[0]["id"]
            if any(
                s["name"] == "archive" and s["target"] == "overcloud-controller-1" and s["status"] == "running"
                for s in steps
            )
            else None
        )

    run_id = wait_for(archiving, timeout=60, message="the second controller's archive to start")
    cancelled = run_cli(
        settings, tmp_path, "runs", "cancel", run_id, "--reason", "window closed", env=environment(cloud), timeout=120
    )
    assert cancelled.returncode == 0, (cancelled.stdout, cancelled.stderr)
    said = cancelled.stdout + cancelled.stderr
    assert "node directories removed" in said and "verified artefacts kept: openstack_databases-" in said, said
    assert run_with_steps(audit, run_id)["status"] == "cancelled"
    [manifest] = [json.loads(p.read_text()) for p in dest.glob("*.manifest.json")]
    assert manifest["status"] == "cancelled" and "window closed" in manifest["error"]
    kept = sorted(a["file"] for a in manifest["artefacts"])
    assert kept and kept == sorted(p.name for p in dest.iterdir() if not p.name.endswith(".manifest.json"))
    assert not any(f.startswith("overcloud-controller-1") for f in kept)
    assert left_on_nodes(oc) == []
