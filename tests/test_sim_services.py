"""Nova, Cinder and Glance in the simulator, through unmodified openstacksdk and the `openstack` CLI."""

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from openstack import exceptions

from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import load_scenario

from .conftest import wait_for

OPENSTACK = str(Path(sys.executable).with_name("openstack"))
GLANCE = str(Path(sys.executable).with_name("glance"))


def fast_scenario():
    s = load_scenario()
    s.live_migration_time, s.cold_migration_time, s.power_time = 0.8, 0.3, 0.1
    s.snapshot_time, s.image_copy_time, s.deployment_time = 0.3, 0.6, 0.2
    s.volume_create_time, s.image_upload_time = 0.2, 0.3
    return s


@pytest.fixture
def overcloud():
    oc = Overcloud.start(fast_scenario())
    yield oc
    oc.stop()


def on_host(conn, host):
    return list(conn.compute.servers(details=True, all_projects=True, compute_host=host))


def test_the_sdk_calls_stackreflex_uses_work_without_discovery_warnings(overcloud, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn = overcloud.connect()
        [service] = conn.compute.services(binary="nova-compute", host="compute-10.localdomain")
        conn.compute.disable_service(service, service.host, "nova-compute", disabled_reason="kernel update")
        [service] = conn.compute.services(binary="nova-compute", host="compute-10.localdomain")
        assert (service.status, service.disabled_reason) == ("disabled", "kernel update")
        conn.compute.enable_service(service, service.host, "nova-compute")
        servers = on_host(conn, "compute-10.localdomain")
        assert len(servers) == 12 and len({s.project_id for s in servers}) == 2
        victim = servers[1]
        conn.compute.stop_server(victim)
        wait_for(lambda: conn.compute.get_server(victim.id).status == "SHUTOFF", timeout=5, message="stopped")
        image = conn.compute.create_server_image(victim, name="before-upgrade", wait=False)
        assert conn.image.get_image(image.id).name == "before-upgrade"
        conn.compute.start_server(victim)
        wait_for(lambda: conn.compute.get_server(victim.id).status == "ACTIVE", timeout=5, message="started")
        volume = next(v for v in conn.block_storage.volumes(all_projects=True) if v.attachments)
        assert volume.attachments[0]["server_id"] in {s.id for s in conn.compute.servers(all_projects=True)}
        snapshot = conn.block_storage.create_snapshot(volume_id=volume.id, name="pre", force=True)
        wait_for(
            lambda: conn.block_storage.get_snapshot(snapshot.id).status == "available",
            timeout=5,
            message="snapshot available",
        )
        assert [s.id for s in conn.block_storage.snapshots(volume_id=volume.id)] == [snapshot.id]
        assert [s.id for s in conn.image.stores()] == ["central", "dcn0", "dcn1"]
    discovery = [w for w in caught if "discover" in str(w.message).lower() or "version" in str(w.message).lower()]
    assert discovery == [], [str(w.message) for w in discovery]
    assert not [r for r in caplog.records if r.name.startswith(("keystoneauth", "openstack"))], caplog.text


def test_a_live_migration_goes_through_its_states_and_lands_on_another_host(overcloud):
    conn = overcloud.connect()
    server = on_host(conn, "compute-11.localdomain")[0]
    conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    moving = conn.compute.get_server(server.id)
    assert (moving.status, moving.task_state, moving.compute_host) == (
        "MIGRATING",
        "migrating",
        "compute-11.localdomain",
    )
    seen = set()
    while conn.compute.get_server(server.id).status == "MIGRATING":
        seen |= {m.status for m in conn.compute.migrations(instance_uuid=server.id, migration_type="live-migration")}
        time.sleep(0.05)
    landed = conn.compute.get_server(server.id)
    assert landed.status == "ACTIVE" and landed.compute_host != "compute-11.localdomain"
    [migration] = conn.compute.migrations(instance_uuid=server.id)
    assert (migration.status, migration.source_compute, migration.dest_compute) == (
        "completed",
        "compute-11.localdomain",
        landed.compute_host,
    )
    assert {"preparing", "running"} <= seen


def test_injected_migration_failures_and_refusals_have_the_real_shapes(overcloud):
    conn = overcloud.connect()
    first, second, third = on_host(conn, "compute-12.localdomain")[:3]
    overcloud.faults.add(Fault("migration_failure", first.name, count=1))
    conn.compute.live_migrate_server(first, host=None, block_migration="auto")
    wait_for(lambda: conn.compute.get_server(first.id).status == "ACTIVE", timeout=5, message="migration over")
    assert conn.compute.get_server(first.id).compute_host == "compute-12.localdomain"
    assert [m.status for m in conn.compute.migrations(instance_uuid=first.id)] == ["error"]
    overcloud.faults.add(Fault("no_valid_host", second.id))
    with pytest.raises(exceptions.BadRequestException, match="No valid host was found"):
        conn.compute.live_migrate_server(second, host=None, block_migration="auto")
    conn.compute.live_migrate_server(third, host=None, block_migration="auto")
    with pytest.raises(
        exceptions.ConflictException,
        match=f"Cannot 'os-migrateLive' instance {third.id} while it is in task_state migrating",
    ):
        conn.compute.live_migrate_server(third, host=None, block_migration="auto")
    with pytest.raises(exceptions.BadRequestException, match="Compute host nowhere could not be found"):
        conn.compute.live_migrate_server(second, host="nowhere", block_migration="auto")


def test_nova_runs_one_live_migration_at_a_time_per_source_host(overcloud):
    conn = overcloud.connect()
    for server in on_host(conn, "compute-10.localdomain")[:3]:
        conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    statuses = [m.status for m in conn.compute.migrations(source_compute="compute-10.localdomain")]
    assert statuses.count("queued") == 2
    wait_for(
        lambda: all(m.status == "completed" for m in conn.compute.migrations()),
        timeout=10,
        message="all migrations done",
    )
    assert overcloud.nova.max_in_flight_total == 1


def test_snapshot_and_copy_faults_and_the_import_lock(overcloud):
    conn = overcloud.connect()
    volume = next(v for v in conn.block_storage.volumes(all_projects=True) if v.attachments)
    overcloud.faults.add(Fault("snapshot_error", volume.id, count=1))
    broken = conn.block_storage.create_snapshot(volume_id=volume.id, name="broken", force=True)
    wait_for(lambda: conn.block_storage.get_snapshot(broken.id).status == "error", timeout=5, message="snapshot error")
    image = conn.image.find_image("cirros")
    overcloud.faults.add(Fault("store_copy_failure", "dcn1", count=1))
    assert conn.image.import_image(image, method="copy-image", stores=["dcn0", "dcn1"]).status_code == 202
    importing = conn.image.get_image(image.id).properties
    assert importing["os_glance_importing_to_stores"] == "dcn0,dcn1"
    assert conn.image.import_image(image, method="copy-image", stores=["dcn1"]).status_code == 409
    wait_for(
        lambda: not conn.image.get_image(image.id).properties["os_glance_importing_to_stores"],
        timeout=5,
        message="copies settled",
    )
    done = conn.image.get_image(image.id).properties
    assert (done["stores"], done["os_glance_failed_import"]) == ("central,dcn0", "dcn1")
    assert conn.image.import_image(image, method="copy-image", stores=["dcn0"]).status_code == 400
    assert conn.image.import_image(image, method="copy-image", stores=["mars"]).status_code == 409


def test_api_faults_answer_errors_or_slowly_on_the_chosen_path(overcloud):
    conn = overcloud.connect()
    overcloud.faults.add(Fault("api_error", r"/os-services$", count=1, status=500))
    with pytest.raises(exceptions.HttpException) as caught:
        list(conn.compute.services())
    assert caught.value.status_code == 500
    assert list(conn.compute.services())  # the fault struck once
    overcloud.faults.add(Fault("api_slow", r"/os-services$", count=1, seconds=0.5))
    started = time.monotonic()
    list(conn.compute.services())
    assert time.monotonic() - started >= 0.5


def openstack_cli(overcloud, tmp_path, *args, program: str = OPENSTACK) -> subprocess.CompletedProcess:
    env = {**os.environ, **overcloud.environment(), "HOME": str(tmp_path)}
    return subprocess.run([program, *args], env=env, capture_output=True, text=True, timeout=120)


def test_heats_own_client_shows_the_deployments_events_and_metadata_of_seed_004(overcloud, tmp_path):
    """The commands of the deployed-server guide (seed 004), through python-heatclient."""

    def cli(*args):
        return openstack_cli(overcloud, tmp_path, *args)

    events = cli("stack", "event", "list", "--nested-depth", "5", "overcloud", "-f", "json")
    assert events.returncode == 0, events.stderr
    listed = json.loads(events.stdout)
    servers = [e for e in listed if e["resource_name"] == "deployed-server"]
    assert [e["resource_status"] for e in servers] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"] * 5
    resources = json.loads(cli("stack", "resource", "list", "-n", "5", "overcloud", "-f", "json").stdout)
    rows = {(r["resource_name"], r["resource_status"]) for r in resources}
    assert ("deployed-server", "CREATE_COMPLETE") in rows and ("HostsEntryDeployment", "CREATE_IN_PROGRESS") in rows
    server = next(r for r in resources if r["resource_name"] == "deployed-server")
    metadata = json.loads(cli("stack", "resource", "metadata", server["stack_name"], "deployed-server").stdout)
    assert [d["name"] for d in metadata["deployments"]] == ["HostsEntryDeployment", "InstanceIdDeployment"]
    deployments = json.loads(
        cli("software", "deployment", "list", "--server", server["physical_resource_id"], "-f", "json").stdout
    )
    assert len(deployments) == 2 and {d["status"] for d in deployments} == {"IN_PROGRESS"}
    shown = json.loads(cli("software", "deployment", "show", deployments[0]["id"], "-f", "json").stdout)
    assert shown["status"] == "IN_PROGRESS" and shown["status_reason"] == "Deploy data available"
    assert shown["server_id"] == server["physical_resource_id"]


def test_glances_own_client_lists_stores_copies_an_image_and_shows_where_it_is(overcloud, tmp_path):
    """The commands of the edge storage validation (seed 003), through python-glanceclient."""

    def glance(*args):
        return openstack_cli(overcloud, tmp_path, *args, program=GLANCE)

    stores = glance("stores-info")
    assert stores.returncode == 0, stores.stderr
    assert all(f'"{s}"' in stores.stdout for s in ("central", "dcn0", "dcn1"))
    image = next(iter(overcloud.glance.images.values()))
    imported = glance("image-import", image.id, "--import-method", "copy-image", "--stores", "dcn0")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    wait_for(lambda: "dcn0" in image.stores, timeout=10, message="copied to dcn0")
    shown = glance("image-show", image.id)
    assert shown.returncode == 0 and "central,dcn0" in shown.stdout and "falling back to v1" not in shown.stderr


def test_the_openstack_cli_runs_the_operators_commands(overcloud, tmp_path):
    stacks = json.loads(openstack_cli(overcloud, tmp_path, "stack", "list", "-f", "json").stdout)
    assert [(s["Stack Name"], s["Stack Status"]) for s in stacks] == [("overcloud", "CREATE_IN_PROGRESS")]
    listed = openstack_cli(
        overcloud,
        tmp_path,
        "stack",
        "resource",
        "list",
        "-n5",
        "--filter",
        "name=deployed-server",
        "overcloud",
        "-f",
        "json",
    )
    servers = json.loads(listed.stdout)
    assert len(servers) == 5 and {s["resource_type"] for s in servers} == {"OS::Heat::DeployedServer"}
    metadata = json.loads(
        openstack_cli(
            overcloud, tmp_path, "stack", "resource", "metadata", servers[0]["stack_name"], "deployed-server"
        ).stdout
    )
    url = metadata["os-collect-config"]["request"]["metadata_url"]
    assert url in {m.metadata_url for m in overcloud.heat.members}
    disabled = openstack_cli(
        overcloud,
        tmp_path,
        "compute",
        "service",
        "set",
        "--disable",
        "--disable-reason",
        "reboot",
        "compute-11.localdomain",
        "nova-compute",
    )
    assert disabled.returncode == 0, disabled.stderr
    assert overcloud.nova.services["compute-11.localdomain"].status == "disabled"
    on_host = json.loads(
        openstack_cli(
            overcloud, tmp_path, "server", "list", "--host", "compute-11.localdomain", "--all-projects", "-f", "json"
        ).stdout
    )
    assert len(on_host) == 10


@pytest.mark.parametrize("cinder_max, force_works", [("3.64", True), ("3.71", False)])
def test_volume_snapshot_create_force_behaves_as_on_a_real_cloud(tmp_path, cinder_max, force_works):
    """In-use volumes need force below microversion 3.66. OSC sends --force only to clouds older
    than 3.66, yet openstacksdk posts snapshots at 3.65: on newer clouds the CLI's --force is
    dropped and Cinder refuses, as a real cloud does (callers must pass force themselves)."""
    scenario = fast_scenario()
    scenario.cinder_max_version = cinder_max
    overcloud = Overcloud.start(scenario)
    try:
        volume = next(v for v in overcloud.cinder.volumes.values() if v.server_id)
        refused = openstack_cli(overcloud, tmp_path, "volume", "snapshot", "create", "--volume", volume.id, "plain")
        assert refused.returncode != 0 and "must be available, but current status is: in-use" in refused.stderr
        forced = openstack_cli(
            overcloud,
            tmp_path,
            "volume",
            "snapshot",
            "create",
            "--volume",
            volume.id,
            "--force",
            "forced",
            "-f",
            "json",
        )
        assert (forced.returncode == 0) is force_works, forced.stderr
        if force_works:
            assert json.loads(forced.stdout)["status"] == "creating"
        conn = overcloud.connect()  # the SDK with force=True works on both
        assert conn.block_storage.create_snapshot(volume_id=volume.id, name="sdk", force=True).status == "creating"
    finally:
        overcloud.stop()


def test_older_service_endpoints_answer_below_microversion_2_53(overcloud):
    conn = overcloud.connect()
    legacy = conn.compute.put(
        "/os-services/disable-log-reason",
        microversion="2.1",
        json={"host": "compute-12.localdomain", "binary": "nova-compute", "disabled_reason": "old client"},
    )
    assert legacy.status_code == 200
    assert legacy.json()["service"] == {
        "host": "compute-12.localdomain",
        "binary": "nova-compute",
        "status": "disabled",
        "disabled_reason": "old client",
    }
    listed = conn.compute.get("/os-services", microversion="2.1", params={"host": "compute-12.localdomain"}).json()
    assert isinstance(listed["services"][0]["id"], int)
    new = conn.compute.get("/os-services", microversion="2.53", params={"host": "compute-12.localdomain"}).json()
    service_id = new["services"][0]["id"]
    refused = conn.compute.put(
        f"/os-services/{service_id}", microversion="2.53", json={"status": "enabled", "disabled_reason": "nope"}
    )
    assert refused.status_code == 400 and "badRequest" in refused.json()


def test_in_progress_migrations_of_a_server_and_cold_migration_with_confirm(overcloud):
    conn = overcloud.connect()
    moving, cold = on_host(conn, "compute-10.localdomain")[:2]
    conn.compute.live_migrate_server(moving, host="compute-11.localdomain", block_migration="auto")
    running = conn.compute.get(f"/servers/{moving.id}/migrations", microversion="2.80").json()["migrations"]
    assert [(m["server_uuid"], m["dest_compute"]) for m in running] == [(moving.id, "compute-11.localdomain")]
    conn.compute.migrate_server(cold)
    wait_for(lambda: conn.compute.get_server(cold.id).status == "VERIFY_RESIZE", timeout=5, message="resized")
    conn.compute.confirm_server_resize(cold)
    confirmed = conn.compute.get_server(cold.id)
    assert confirmed.status == "ACTIVE" and confirmed.compute_host != "compute-10.localdomain"
    wait_for(
        lambda: not conn.compute.get(f"/servers/{moving.id}/migrations").json()["migrations"],
        timeout=5,
        message="live migration finished",
    )


def test_scenario_faults_are_active_from_the_start():
    scenario = fast_scenario()
    scenario.faults = [{"kind": "no_valid_host", "target": "vm-compute-10-0"}]
    oc = Overcloud.start(scenario)
    try:
        conn = oc.connect()
        server = next(s for s in on_host(conn, "compute-10.localdomain") if s.name == "vm-compute-10-0")
        with pytest.raises(exceptions.BadRequestException, match="No valid host"):
            conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    finally:
        oc.stop()


def test_volumes_from_images_in_a_zone_snapshots_and_uploads_follow_the_site_store(overcloud):
    conn = overcloud.connect()
    [image] = overcloud.glance.images.values()
    with pytest.raises(exceptions.BadRequestException, match="Availability zone 'dcn9' is invalid"):
        conn.block_storage.create_volume(name="v", size=1, availability_zone="dcn9", image_id=image.id)
    at_dcn0 = conn.block_storage.create_volume(name="v0", size=1, availability_zone="dcn0", image_id=image.id)
    at_central = conn.block_storage.create_volume(name="vc", size=1, availability_zone="central", image_id=image.id)
    assert at_dcn0.status == "creating"
    status = lambda v: conn.block_storage.get_volume(v.id).status  # noqa: E731
    wait_for(lambda: status(at_dcn0) != "creating" and status(at_central) != "creating", timeout=5)
    # the image is only in central: the edge site cannot clone it
    assert (status(at_dcn0), status(at_central)) == ("error", "available")
    answer = conn.block_storage.upload_volume_to_image(
        at_central.id, "from-volume", disk_format="raw", container_format="bare"
    )
    assert conn.block_storage.get_volume(at_central.id).status == "uploading"
    uploaded = overcloud.glance.images[answer["image_id"]]
    wait_for(lambda: uploaded.status == "active", timeout=5, message="upload")
    assert uploaded.stores == {"central"} and status(at_central) == "available"
