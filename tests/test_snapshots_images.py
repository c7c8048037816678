"""Snapshots, server images, image copies and the edge check end to end: the simulated
overcloud (Nova, Cinder, Glance over HTTP), real RabbitMQ, worker processes, the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs, run_with_steps
from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Scenario

from .conftest import make_settings, run_cli

SERVER = "vm-compute-a-0"


@pytest.fixture
def cloud(tmp_path, broker_url, sqlite_url, namespace, workers):
    """One compute host whose first server has two volumes attached; fast Cinder and Glance;
    a worker process serving the built-in handlers."""
    made = []

    def start(**options):
        fast = {
            "power_time": 0.2,
            "snapshot_time": 0.3,
            "image_copy_time": 0.4,
            "volume_create_time": 0.2,
            "image_upload_time": 0.2,
        }
        scenario = Scenario(
            compute_hosts={"compute-a.localdomain": 2}, volume_every=2, volumes_per_server=2, **{**fast, **options}
        )
        oc = Overcloud.start(scenario)
        made.append(oc)
        settings = make_settings(broker_url, sqlite_url, namespace)
        workers(settings, env=oc.environment())
        return oc, settings

    yield start
    for oc in made:
        oc.stop()


def cli(oc, settings, tmp_path, *args, timeout=60):
    return run_cli(settings, tmp_path, *args, env=oc.environment(), timeout=timeout)


def only_run(settings, handler):
    [run] = list_runs(AuditLog.open(settings.database()), RunFilter(handler=handler, limit=10))
    return run_with_steps(AuditLog.open(settings.database()), run["id"])


def server_of(oc, name):
    return next(s for s in oc.nova.servers.values() if s.name == name)


def test_a_server_with_two_volumes_is_stopped_snapshotted_with_force_and_started(cloud, tmp_path):
    oc, settings = cloud()
    server = server_of(oc, SERVER)
    result = cli(oc, settings, tmp_path, "volume", "snapshot", "--server", SERVER, "--name", "pre-upgrade", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(settings, "snapshot_volumes")
    assert run["status"] == "succeeded"
    names = [s["name"] for s in run["steps"]]
    assert names == ["stop server", "snapshot volume", "snapshot volume", "start server"]
    stop, *snaps, start = run["steps"]
    assert all(stop["finished_at"] <= s["started_at"] for s in snaps)
    assert all(s["finished_at"] <= start["started_at"] for s in snaps)
    assert all(s["detail"]["force"] is True and s["status"] == "succeeded" for s in snaps)
    taken = {s.volume.id: s for s in oc.cinder.snapshots.values()}
    assert set(taken) == set(server.volumes) and {s.status for s in taken.values()} == {"available"}
    assert sorted(s.name for s in taken.values()) == [f"pre-upgrade-{SERVER}-data", f"pre-upgrade-{SERVER}-data-1"]
    assert server.status == "ACTIVE" and server.task_state is None
    for snapshot in taken.values():  # the final table: volume, snapshot id (a unique prefix), size, status, duration
        assert f"| {snapshot.id[:8]}" in result.stdout
    assert start["detail"]["compensation"] is False


def test_a_failed_snapshot_still_starts_the_server_and_the_run_names_the_volume(cloud, tmp_path):
    oc, settings = cloud()
    oc.faults.add(Fault("snapshot_error", f"{SERVER}-data-1"))
    result = cli(oc, settings, tmp_path, "volume", "snapshot", "--server", SERVER, "--wait")
    assert result.returncode == 1
    run = only_run(settings, "snapshot_volumes")
    assert run["status"] == "failed"
    assert f"{SERVER}-data-1" in run["error"] and "ended error" in run["error"]
    assert f"{SERVER}-data " not in run["error"]
    start = run["steps"][-1]
    assert start["name"] == "start server" and start["status"] == "succeeded"
    assert start["detail"]["compensation"] is True
    assert server_of(oc, SERVER).status == "ACTIVE"
    assert [s["status"] for s in run["steps"] if s["name"] == "snapshot volume"].count("failed") == 1


def test_a_wait_past_its_deadline_fails_clearly_and_the_server_is_started_again(cloud, tmp_path):
    oc, settings = cloud(snapshot_time=30)
    result = cli(oc, settings, tmp_path, "volume", "snapshot", "--server", SERVER, "--deadline", "2", "--wait")
    assert result.returncode == 1
    run = only_run(settings, "snapshot_volumes")
    assert "gave up waiting for 2 snapshot(s) to become available" in run["error"]
    assert run["steps"][-1]["name"] == "start server" and server_of(oc, SERVER).status == "ACTIVE"


def test_an_in_use_volume_is_snapshotted_only_with_force(cloud, tmp_path):
    oc, settings = cloud()
    volume = f"{SERVER}-data"
    refused = cli(oc, settings, tmp_path, "volume", "snapshot", volume, "--no-stop", "--no-force", "--wait")
    assert refused.returncode == 1
    run = only_run(settings, "snapshot_volumes")
    assert "status must be available, but current status is: in-use" in run["error"]
    assert "only with force" in run["error"]
    assert "only with force" in refused.stdout  # the command says why
    assert not oc.cinder.snapshots
    assert server_of(oc, SERVER).status == "ACTIVE"  # --no-stop: never touched

    taken = cli(oc, settings, tmp_path, "volume", "snapshot", volume, "--no-stop", "--wait")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    [snapshot] = oc.cinder.snapshots.values()
    assert snapshot.volume.name == volume and snapshot.status == "available"


def test_dry_run_and_bad_input_change_nothing(cloud, tmp_path):
    oc, settings = cloud()
    plan = cli(oc, settings, tmp_path, "volume", "snapshot", "--server", SERVER, "--dry-run")
    assert plan.returncode == 0 and f"stop {SERVER}" in plan.stdout and f"{SERVER}-data-1" in plan.stdout
    both = cli(oc, settings, tmp_path, "volume", "snapshot", "v1", "--server", SERVER)
    assert both.returncode == 2 and "give either volumes or a server" in both.stderr
    copy = cli(oc, settings, tmp_path, "image", "copy", "cirros", "--stores", "dcn0,dcn9", "--dry-run")
    assert copy.returncode == 2 and "unknown Glance store(s) dcn9" in copy.stderr
    edge = cli(oc, settings, tmp_path, "edge", "check", "dcn0", "--dry-run")
    assert edge.returncode == 0 and "copy image to dcn0" in edge.stdout
    # checked before publishing: an error there and then, no run
    for args, said in (
        (("image", "copy", "cirros", "--stores", "dcn9"), "unknown Glance store(s) dcn9"),
        (("volume", "snapshot", "--server", "nosuch"), "no server named or with id 'nosuch'"),
        (("edge", "check", "dcn7"), "unknown Glance store(s) dcn7"),
        (("server", "image", "nosuch", "--name", "x"), "no server named or with id 'nosuch'"),
    ):
        refused = cli(oc, settings, tmp_path, *args)
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr)
    assert not oc.cinder.snapshots and server_of(oc, SERVER).status == "ACTIVE"
    assert all(i.stores == {"central"} for i in oc.glance.images.values())
    assert list_runs(AuditLog.open(settings.database()), RunFilter(limit=10)) == []


def test_a_server_image_is_made_stopped_and_copied_to_a_store(cloud, tmp_path):
    oc, settings = cloud()
    result = cli(oc, settings, tmp_path, "server", "image", SERVER, "--name", "before", "--copy-to", "dcn1", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(settings, "image_server")
    assert [s["name"] for s in run["steps"]] == [
        "stop server",
        "create image",
        "start server",
        "copy image",
        "central copy kept",
    ]
    image = next(i for i in oc.glance.images.values() if i.name == "before")
    assert image.status == "active" and image.stores == {"central", "dcn1"}
    assert image.properties["instance_uuid"] == server_of(oc, SERVER).id
    assert server_of(oc, SERVER).status == "ACTIVE"


def test_image_copy_reports_each_store_and_a_failing_store_fails_the_run(cloud, tmp_path):
    oc, settings = cloud(faults=[{"kind": "store_copy_failure", "target": "dcn1"}])
    result = cli(oc, settings, tmp_path, "image", "copy", "cirros", "--stores", "dcn0,dcn1", "--wait")
    assert result.returncode == 1
    run = only_run(settings, "copy_image")
    results = {s["target"]: s["status"] for s in run["steps"] if s["name"] == "copy image"}
    assert results == {"dcn0": "succeeded", "dcn1": "failed"}
    assert "failed to dcn1" in run["error"] and "copied to: dcn0" in run["error"]
    [image] = oc.glance.images.values()
    assert image.stores == {"central", "dcn0"} and image.failed == {"dcn1"}
    assert "os_glance_failed_import" in result.stdout


def test_an_import_lock_is_waited_out_not_reported(cloud, tmp_path):
    # The other import must outlast the CLI's start and the run's first try, even on a slow
    # machine: with 3 s it once ended before the run tried, and nothing was waited out.
    oc, settings = cloud(image_copy_time=8)
    conn = oc.connect()
    [image] = oc.glance.images.values()
    answer = conn.image.post(f"/images/{image.id}/import", json={"method": {"name": "copy-image"}, "stores": ["dcn1"]})
    assert answer.status_code == 202 and image.importing == {"dcn1"}  # someone else's import holds the lock
    result = cli(oc, settings, tmp_path, "image", "copy", "cirros", "--stores", "dcn0", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(settings, "copy_image")
    [step] = [s for s in run["steps"] if s["name"] == "copy image"]
    assert step["status"] == "succeeded" and step["detail"]["lock_waits"] >= 1
    assert image.stores == {"central", "dcn0", "dcn1"}


def test_the_edge_check_passes_on_a_healthy_site(cloud, tmp_path):
    oc, settings = cloud()
    result = cli(oc, settings, tmp_path, "edge", "check", "dcn0", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(settings, "check_edge")
    assert [s["name"] for s in run["steps"]] == [
        "image in central",
        "copy image",
        "central copy kept",
        "volume from image",
        "snapshot volume",
        "volume from snapshot",
        "image from volume",
        "copy image",
    ]
    assert all(s["status"] == "succeeded" for s in run["steps"])
    made = [i for i in oc.glance.images.values() if i.name.startswith("stackreflex-edge-dcn0")]
    assert len(made) == 1 and made[0].stores == {"dcn0", "central"}
    volumes = [v for v in oc.cinder.volumes.values() if v.name.startswith("stackreflex-edge-dcn0")]
    assert {v.zone for v in volumes} == {"dcn0"} and {v.status for v in volumes} == {"available"}


def test_the_edge_check_stops_at_the_broken_store_with_its_reason(cloud, tmp_path):
    oc, settings = cloud(faults=[{"kind": "store_copy_failure", "target": "dcn0"}])
    result = cli(oc, settings, tmp_path, "edge", "check", "dcn0", "--wait")
    assert result.returncode == 1
    run = only_run(settings, "check_edge")
    assert run["error"].startswith("edge check of dcn0 failed at step 'copy image to dcn0': copy of cirros")
    assert "os_glance_failed_import" in run["error"]
    failed = [(s["name"], s["target"]) for s in run["steps"] if s["status"] == "failed"]
    assert failed == [("copy image", "dcn0")]
    assert not [v for v in oc.cinder.volumes.values() if v.name.startswith("stackreflex-edge")]  # it stopped there


def test_an_edge_check_with_cleanup_leaves_nothing_behind_pass_or_fail(cloud, tmp_path):
    """--cleanup deletes the check's image, volumes and snapshot at the end, each deletion a
    verified step; a check that failed midway cleans up what it had made and still fails."""
    oc, settings = cloud()
    result = cli(oc, settings, tmp_path, "edge", "check", "dcn0", "--cleanup", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    run = only_run(settings, "check_edge")
    deletions = [s for s in run["steps"] if s["name"].startswith("delete ")]
    assert [s["name"] for s in deletions] == ["delete image", "delete volume", "delete snapshot", "delete volume"]
    assert all(s["status"] == "succeeded" for s in deletions)
    assert not [i for i in oc.glance.images.values() if i.name.startswith("stackreflex-edge")]
    assert not [v for v in oc.cinder.volumes.values() if v.name.startswith("stackreflex-edge")]
    assert not [s for s in oc.cinder.snapshots.values() if s.name.startswith("stackreflex-edge")]
    assert "cirros" in {i.name for i in oc.glance.images.values()}  # the operator's image stays
    # told the site's store is dcn1 while its zone uploads to dcn0: it fails at the upload's check,
    # with everything made before it, and cleans all of it up all the same
    failed = cli(oc, settings, tmp_path, "edge", "check", "dcn0", "--store", "dcn1", "--cleanup", "--wait")
    assert failed.returncode == 1
    [run] = [
        r
        for r in list_runs(AuditLog.open(settings.database()), RunFilter(handler="check_edge", limit=10))
        if r["status"] == "failed"
    ]
    assert "failed at step 'image from volume'" in run["error"] and "expected active in dcn1" in run["error"]
    steps = run_with_steps(AuditLog.open(settings.database()), run["id"])["steps"]
    assert [s["name"] for s in steps if s["name"].startswith("delete ")] == [
        "delete image",
        "delete volume",
        "delete snapshot",
        "delete volume",
    ]
    assert not [v for v in oc.cinder.volumes.values() if v.name.startswith("stackreflex-edge")]
    assert not [i for i in oc.glance.images.values() if i.name.startswith("stackreflex-edge")]


def test_cinder_refuses_to_delete_an_attached_volume_in_its_own_words(cloud, tmp_path):
    """The operator's own `openstack volume delete` against the simulated Cinder: refused as Cinder refuses it."""
    oc, _settings = cloud()
    [volume] = [v for v in oc.cinder.volumes.values() if v.name == f"{SERVER}-data"]
    openstack = Path(sys.executable).parent / "openstack"
    refused = subprocess.run(
        [str(openstack), "volume", "delete", volume.id],
        capture_output=True,
        text=True,
        env={**os.environ, **oc.environment()},
        timeout=60,
    )
    assert refused.returncode == 1
    assert "Invalid volume: Volume status must be available or error" in refused.stderr
    assert "must not be migrating, attached, belong to a group, have snapshots" in refused.stderr
    assert oc.cinder.volumes[volume.id].status == "in-use"
