"""Compute host maintenance end to end: the simulated overcloud (Nova over HTTP, compute hosts
as SSH nodes that reboot), real RabbitMQ, worker processes, the CLI."""

import json
from collections import Counter

import pytest

from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs, run_with_steps
from stackreflex_sim.faults import Fault
from stackreflex_sim.nodes import BOOT_ID
from stackreflex_sim.scenario import Scenario

from .conftest import make_settings, overcloud_with_nodes, run_cli, wait_for

HOST, OTHERS = "compute-a.localdomain", ("compute-b.localdomain", "compute-c.localdomain")


def start_cloud(tmp_path, broker_url, sqlite_url, namespace, servers=20, migration_time=0.4, nova_limit=0):
    """Three compute hosts with SSH nodes; ``servers`` on compute-a (nova_limit 0: Nova runs every
    accepted migration at once, so the window seen is the orchestrator's own)."""
    hosts = (HOST, *OTHERS)
    scenario = Scenario(
        compute_hosts={HOST: servers, OTHERS[0]: 0, OTHERS[1]: 0},
        compute_addresses={h: f"127.0.0.{41 + i}" for i, h in enumerate(hosts)},
        live_migration_time=migration_time,
        cold_migration_time=0.3,
        power_time=0.1,
        reboot_time=1.0,
        max_concurrent_live_migrations=nova_limit,
    )
    return overcloud_with_nodes(
        tmp_path,
        scenario,
        lambda oc: {
            "hostnames": {h.split(".")[0]: f"{a}:{oc.nodes[a].port}" for h, a in scenario.compute_addresses.items()}
        },
        make_settings(broker_url, sqlite_url, namespace),
    )


@pytest.fixture
def cloud(tmp_path, broker_url, sqlite_url, namespace):
    made = []

    def start(**options):
        made.append(start_cloud(tmp_path, broker_url, sqlite_url, namespace, **options))
        return made[-1]

    yield start
    for oc, _ in made:
        oc.stop()


def node_of(oc, host):
    return oc.nodes[oc.scenario.compute_addresses[host]]


def evacuations(settings) -> list[dict]:
    return list_runs(AuditLog.open(settings.database()), RunFilter(handler="evacuate_host", limit=100))


def steps_of(settings, run_id) -> list[dict]:
    return run_with_steps(AuditLog.open(settings.database()), run_id)["steps"]


def migrations_per_server(oc) -> Counter:
    return Counter(m.server.id for m in oc.nova.migrations)


def test_twenty_servers_three_at_a_time_then_reboot_and_back_in_service(cloud, workers, tmp_path):
    oc, settings = cloud(servers=20)
    workers(settings, env=oc.environment())
    boot_before = node_of(oc, HOST).files[BOOT_ID]
    result = run_cli(
        settings,
        tmp_path,
        "host",
        "evacuate",
        HOST,
        "--max-parallel",
        "3",
        "--reboot",
        "--reason",
        "kernel update CHG-42",
        "--wait",
        env=oc.environment(),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20/20 migrated, 0 failed" in result.stdout

    assert oc.nova.max_outstanding[HOST] == 3, "never more than 3 in flight, and the window was used"
    servers = list(oc.nova.servers.values())
    assert len(servers) == 20 and all(s.status == "ACTIVE" and s.host in OTHERS for s in servers)
    assert set(migrations_per_server(oc).values()) == {1}
    service = oc.nova.services[HOST]
    assert (service.status, service.state, service.disabled_reason) == ("enabled", "up", None)
    assert node_of(oc, HOST).files[BOOT_ID] != boot_before, "the node really rebooted"

    (run,) = evacuations(settings)
    assert run["status"] == "succeeded"
    steps = steps_of(settings, run["id"])
    names = [s["name"] for s in steps]
    assert names[0] == "disable nova-compute" and steps[0]["detail"]["reason"] == "kernel update CHG-42"
    assert names[-6:] == [
        "host empty",
        "reboot issued",
        "waiting for boot",
        "node back",
        "service up",
        "enable nova-compute",
    ]
    waited = next(s for s in steps if s["name"] == "waiting for boot")
    assert waited["duration_s"] >= 0.5 * oc.scenario.reboot_time / oc.scenario.speed  # the node's time away
    moves = [s for s in steps if s["name"] == "live-migrate"]
    assert len(moves) == 20 and {s["target"] for s in moves} == {s.name for s in servers}
    by_id = {m.uuid: m for m in oc.nova.migrations}
    for step in moves:  # a post-mortem can tell which instance moved where, when and how long it took
        detail, migration = step["detail"], by_id[step["detail"]["migration_id"]]
        assert (detail["source"], detail["destination"]) == (HOST, migration.dest)
        assert (
            detail["server_id"] == migration.server.id and oc.nova.servers[detail["server_id"]].host == migration.dest
        )
        assert 0.3 < detail["duration_s"] < 5 and step["finished_at"] > step["started_at"]
    assert "migrations" in result.stdout and result.stdout.count(HOST) >= 20


def test_a_server_that_fails_twice_blocks_the_host_which_stays_disabled_and_up(cloud, workers, tmp_path):
    oc, settings = cloud(servers=6)
    stuck = next(s for s in oc.nova.servers.values())
    oc.faults.add(Fault("migration_failure", stuck.name))
    workers(settings, env=oc.environment())
    boot_before = node_of(oc, HOST).files[BOOT_ID]
    result = run_cli(
        settings,
        tmp_path,
        "host",
        "evacuate",
        HOST,
        "--max-parallel",
        "2",
        "--reboot",
        "--wait",
        env=oc.environment(),
        timeout=120,
    )
    assert result.returncode == 1
    (run,) = evacuations(settings)
    assert run["status"] == "failed"
    assert f"{stuck.name} ({stuck.id}): migration failed 2 time(s)" in run["error"]
    assert "nothing was rebooted" in run["error"]
    assert migrations_per_server(oc)[stuck.id] == 2, "retried once, then reported"
    assert stuck.host == HOST and all(s.host in OTHERS for s in oc.nova.servers.values() if s is not stuck)
    assert oc.nova.services[HOST].status == "disabled"
    assert node_of(oc, HOST).files[BOOT_ID] == boot_before
    assert not any("reboot" in c for c in node_of(oc, HOST).commands)
    failed = [s for s in steps_of(settings, run["id"]) if s["status"] == "failed"]
    assert [s["target"] for s in failed] == [stuck.name, stuck.name]
    assert "migrations" in result.stdout and "ended error" in result.stdout


def test_no_valid_host_fails_clearly_naming_the_server_without_a_retry_storm(cloud, workers, tmp_path):
    oc, settings = cloud(servers=3)
    lonely = next(iter(oc.nova.servers.values()))
    fault = oc.faults.add(Fault("no_valid_host", lonely.id))
    workers(settings, env=oc.environment())
    result = run_cli(settings, tmp_path, "host", "evacuate", HOST, "--wait", env=oc.environment(), timeout=60)
    assert result.returncode == 1
    (run,) = evacuations(settings)
    assert run["status"] == "failed" and run["attempts"] == 1
    assert f"{lonely.name} ({lonely.id})" in run["error"] and "No valid host was found" in run["error"]
    assert fault.hits == 1, "asked Nova once for this server"
    assert lonely.host == HOST and sum(s.host == HOST for s in oc.nova.servers.values()) == 1


def test_a_worker_killed_mid_evacuation_is_finished_by_another_without_migrating_twice(cloud, workers, tmp_path):
    oc, settings = cloud(servers=12, migration_time=0.8)
    first = workers(settings, env=oc.environment())
    result = run_cli(settings, tmp_path, "host", "evacuate", HOST, "--max-parallel", "2", env=oc.environment())
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: sum(m.status == "completed" for m in oc.nova.migrations) >= 3,
        timeout=30,
        message="a few migrations done",
    )
    first.kill()
    assert sum(s.host == HOST for s in oc.nova.servers.values()) > 0, "killed mid-way"
    workers(settings, env=oc.environment())
    wait_for(lambda: evacuations(settings)[0]["status"] == "succeeded", timeout=60, message="run finished")
    assert all(s.host in OTHERS for s in oc.nova.servers.values())
    assert set(migrations_per_server(oc).values()) == {1}, "no server was migrated twice"
    assert oc.nova.max_outstanding[HOST] <= 2
    moves = [s for s in steps_of(settings, evacuations(settings)[0]["id"]) if s["name"] == "live-migrate"]
    assert sorted(s["detail"]["server_id"] for s in moves) == sorted(oc.nova.servers)
    assert oc.nova.services[HOST].status == "disabled", "without --reboot the host stays out of service"


def test_dry_run_prints_the_plan_and_changes_nothing(cloud, tmp_path):
    oc, settings = cloud(servers=4)
    off = list(oc.nova.servers.values())[1]
    off.status = "SHUTOFF"
    result = run_cli(settings, tmp_path, "host", "evacuate", HOST, "--dry-run", "--reboot", env=oc.environment())
    assert result.returncode == 0, result.stderr
    assert "nothing will be changed" in result.stdout and result.stdout.count("live-migrate") == 3
    assert off.name in result.stdout and "SHUTOFF: not live-migratable" in result.stdout
    assert "1 server(s) would block the host: no reboot" in result.stdout
    assert oc.nova.migrations == [] and oc.nova.services[HOST].status == "enabled"
    assert all(s.host == HOST for s in oc.nova.servers.values())
    assert evacuations(settings) == []


def test_shutoff_servers_block_the_host_unless_moved_cold(cloud, workers, tmp_path):
    oc, settings = cloud(servers=3)
    off = next(iter(oc.nova.servers.values()))
    off.status = "SHUTOFF"
    workers(settings, env=oc.environment())
    left = run_cli(settings, tmp_path, "host", "evacuate", HOST, "--wait", env=oc.environment(), timeout=60)
    assert left.returncode == 1
    assert f"{off.name} ({off.id}): SHUTOFF: not live-migratable" in evacuations(settings)[0]["error"]
    assert off.host == HOST and off.status == "SHUTOFF"

    oc.nova.services[HOST].status = "enabled"
    moved = run_cli(
        settings,
        tmp_path,
        "host",
        "evacuate",
        HOST,
        "--cold-migrate-stopped",
        "--wait",
        env=oc.environment(),
        timeout=60,
    )
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert off.host in OTHERS and off.status == "SHUTOFF", "moved cold, resize confirmed, still stopped"
    assert [m.status for m in oc.nova.migrations if m.server is off] == ["confirmed"]
    latest = next(r for r in evacuations(settings) if r["status"] == "succeeded")
    names = [s["name"] for s in steps_of(settings, latest["id"])]
    assert "confirm resize" in names and "cold-migrate" in names


def test_a_second_evacuation_of_the_same_host_is_refused_with_the_running_run(cloud, workers, tmp_path):
    oc, settings = cloud(servers=4, migration_time=3.0, nova_limit=1)
    workers(settings, env=oc.environment())
    assert run_cli(settings, tmp_path, "host", "evacuate", HOST, env=oc.environment()).returncode == 0
    wait_for(
        lambda: evacuations(settings) and evacuations(settings)[0]["status"] in ("running", "waiting"),
        message="first evacuation running",
    )
    running = evacuations(settings)[0]
    again = run_cli(settings, tmp_path, "host", "evacuate", HOST, env=oc.environment())
    assert again.returncode == 2
    assert f"already being evacuated by run {running['id']}" in again.stderr
    # the handler refuses too, for a command that did not come through this CLI
    forced = run_cli(
        settings,
        tmp_path,
        "publish",
        "command.host.evacuate",
        "-s",
        HOST,
        "-d",
        json.dumps({"host": HOST}),
        "--wait",
        env=oc.environment(),
    )
    assert forced.returncode == 1
    second = next(r for r in evacuations(settings) if r["id"] != running["id"])
    assert second["status"] == "failed" and running["id"] in second["error"]


def test_rolling_drain_reboot_takes_one_host_at_a_time_and_stops_at_the_first_failure(cloud, workers, tmp_path):
    oc, settings = cloud(servers=4)
    for _i, server in enumerate(list(oc.nova.servers.values())[:2]):
        server.host = OTHERS[0]  # two servers on compute-b as well
    workers(settings, env=oc.environment())
    first, second = HOST, OTHERS[0]
    boots = {h: node_of(oc, h).files[BOOT_ID] for h in (first, second)}
    result = run_cli(
        settings, tmp_path, "hosts", "drain-reboot", first, second, "--wait", env=oc.environment(), timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted(evacuations(settings), key=lambda r: r["created_at"])
    assert [r["subject"] for r in runs] == [first, second] and all(r["status"] == "succeeded" for r in runs)
    first_back = next(s for s in steps_of(settings, runs[0]["id"]) if s["name"] == "enable nova-compute")
    second_disabled = next(s for s in steps_of(settings, runs[1]["id"]) if s["name"] == "disable nova-compute")
    assert second_disabled["started_at"] >= first_back["finished_at"], "never two hosts at once"
    assert all(node_of(oc, h).files[BOOT_ID] != boots[h] for h in boots)
    assert all(oc.nova.services[h].status == "enabled" for h in (first, second))

    stuck = next(s for s in oc.nova.servers.values() if s.host == OTHERS[1])
    oc.faults.add(Fault("migration_failure", stuck.id))
    moved_before = len(oc.nova.migrations)
    result = run_cli(
        settings, tmp_path, "hosts", "drain-reboot", OTHERS[1], first, "--wait", env=oc.environment(), timeout=120
    )
    assert result.returncode == 1
    rolling = [
        r
        for r in list_runs(AuditLog.open(settings.database()), RunFilter(handler="drain_reboot_hosts", limit=10))
        if r["status"] == "failed"
    ]
    assert len(rolling) == 1 and f"stopped at {OTHERS[1]}" in rolling[0]["error"]
    assert f"hosts not touched: {first}" in rolling[0]["error"]
    assert oc.nova.services[first].status == "enabled"
    assert not [m for m in oc.nova.migrations[moved_before:] if m.source == first]
