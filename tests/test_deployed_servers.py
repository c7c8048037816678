"""Deployed servers end to end: the simulated overcloud, real RabbitMQ, a worker and a watcher
process, real SSH to the simulated nodes."""

import json
import re

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_envelopes, list_runs, run_with_steps
from stackreflex.tasks.inventory import Host, InventoryError, load_inventory
from stackreflex_sim.faults import Fault
from stackreflex_sim.scenario import Role, Scenario

from .conftest import make_settings, overcloud_with_nodes, run_cli, wait_drained, wait_for


def start_deployment(tmp_path, broker_url, sqlite_url, namespace, controllers=3, **options):
    """A simulated overcloud waiting for its agents, and settings that reach its nodes."""
    scenario = Scenario(
        deployment_time=0.1,
        roles=[
            Role("ControllerDeployedServer", controllers, ["127.0.0.11", "127.0.0.12", "127.0.0.13"][:controllers]),
            Role("ComputeDeployedServer", 2, ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]),
        ],
        **options,
    )
    return overcloud_with_nodes(  # the agents poll every second: each member stack waits for two polls
        tmp_path,
        scenario,
        lambda oc: {"roles": {r.name: [f"{h}:{oc.nodes[h].port}" for h in r.hosts] for r in scenario.roles}},
        make_settings(broker_url, sqlite_url, namespace, agent_polling_interval=1),
    )


@pytest.fixture
def deployment(tmp_path, broker_url, sqlite_url, namespace):
    oc, settings = start_deployment(tmp_path, broker_url, sqlite_url, namespace)
    yield oc, settings
    oc.stop()


def configure_runs(audit: AuditLog) -> list[dict]:
    return list(list_runs(audit, RunFilter(handler="configure_new_node", limit=100)))


def configure_steps(audit: AuditLog) -> list[dict]:
    return [
        s
        for r in configure_runs(audit)
        for s in run_with_steps(audit, r["id"])["steps"]
        if s["name"] == "configure os-collect-config"
    ]


def test_a_deployment_and_a_scale_up_complete_with_no_human_step(deployment, workers, tmp_path):
    oc, settings = deployment
    os_env = oc.environment()
    worker = workers(settings, env=os_env)
    watcher = workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete")
    for member in oc.heat.members:  # each node fetched its own resource's URL, and only that one
        assert {p.client for p in oc.metadata.polls_of(member.metadata_url)} == {member.host}
    audit = AuditLog.open(settings.database())
    wait_for(
        lambda: len(r := configure_runs(audit)) == 5 and all(x["status"] == "succeeded" for x in r),
        timeout=30,
        message="five runs succeeded",
    )
    before = {s["target"] for s in configure_steps(audit)}
    assert len(before) == 5

    oc.heat.scale("ComputeDeployedServer", 2)
    wait_for(lambda: oc.heat.root.status == "UPDATE_COMPLETE", timeout=60, message="scale-up complete")
    wait_for(
        lambda: len(r := configure_runs(audit)) == 7 and all(x["status"] == "succeeded" for x in r),
        timeout=30,
        message="seven runs succeeded",
    )
    steps = configure_steps(audit)
    new = [s["target"] for s in steps if s["target"] not in before]
    assert sorted(t.split(":")[0] for t in new) == ["127.0.0.23", "127.0.0.24"]
    assert len(steps) == 7, "no step touched the nodes configured before the scale-up"

    signatures = [re.search(r"temp_url_sig=([^&]+)", m.metadata_url).group(1) for m in oc.heat.members]
    with audit.engine.connect() as c:
        tables = " ".join(
            str(row) for t in ("envelope", "run", "step") for row in c.execute(text(f"select * from {t}"))
        )
    shown = "".join(
        run_cli(settings, tmp_path, "audit", "show", r["id"], "--json").stdout for r in configure_runs(audit)
    )
    worker.terminate()
    watcher.terminate()
    logs = worker.log_path.read_text() + watcher.log_path.read_text()
    assert "temp_url_sig=***" in tables and "temp_url_sig=***" in shown
    for sig in signatures:
        assert sig not in tables and sig not in shown and sig not in logs


def test_one_worker_process_with_watch_does_the_whole_deployment(deployment, workers):
    """With a signing key set: the watcher's events are signed, and they are what runs."""
    oc, settings = deployment
    settings = settings.model_copy(update={"signing_key": SecretStr("deployment-key")})
    worker = workers(settings, "--watch", "overcloud", "--watch-interval", "0.3", env=oc.environment())
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete")
    audit = AuditLog.open(settings.database())
    wait_for(
        lambda: len(r := configure_runs(audit)) == 5 and all(x["status"] == "succeeded" for x in r),
        timeout=30,
        message="five runs succeeded",
    )
    assert audit.cursor("overcloud") is not None, "the watcher in the worker keeps its cursor"
    assert list_envelopes(audit, status="rejected") == []
    events = list_envelopes(audit, status="accepted", limit=1000)
    assert events and all(json.loads(e["payload"]).get("keyid") == "default" for e in events)
    assert worker.terminate() == 0


def test_restarting_the_watcher_mid_deployment_neither_loses_nor_repeats_a_reaction(deployment, workers):
    oc, settings = deployment
    os_env = oc.environment()
    workers(settings, env=os_env)
    audit = AuditLog.open(settings.database())
    first = workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    wait_for(lambda: configure_runs(audit), timeout=30, message="a first reaction")
    first.kill()
    workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete")
    wait_for(lambda: all(r["status"] == "succeeded" for r in configure_runs(audit)), timeout=30, message="runs done")
    assert len(configure_runs(audit)) == 5 and len(configure_steps(audit)) == 5


def test_a_changed_host_key_is_refused_until_the_operator_trusts_it(deployment, workers, tmp_path):
    oc, settings = deployment
    node = oc.nodes["127.0.0.22"]
    oc.faults.add(Fault("host_key_changed", node.address))  # the node now presents another key
    os_env = oc.environment()
    workers(settings, env=os_env)
    workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    audit = AuditLog.open(settings.database())
    refused = wait_for(
        lambda: [r for r in configure_runs(audit) if r["error"] and "host key changed" in r["error"]],
        timeout=40,
        message="the changed key refused",
    )
    assert f"stackreflex nodes trust {node.address}:{node.port}`" in refused[0]["error"]  # the port, to trust it
    assert oc.heat.root.status == "CREATE_IN_PROGRESS"
    trusted = run_cli(settings, tmp_path, "nodes", "trust", f"{node.address}:{node.port}")
    assert trusted.returncode == 0 and "replaced" in trusted.stdout
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete after trust")


def test_inventory_errors_are_one_clear_line_each(tmp_path):
    env = {
        "OVERCLOUD_ROLES": "ControllerDeployedServer ComputeDeployedServer",
        "ControllerDeployedServer_hosts": "192.0.2.10 192.0.2.11",
        "ComputeDeployedServer_hosts": "192.0.2.20",
    }
    inventory = load_inventory(environ=env)
    assert inventory.host_for("ComputeDeployedServer", 0) == Host("192.0.2.20")
    cases = [
        (
            lambda: inventory.host_for("ComputeDeployedServer", 1),
            "role ComputeDeployedServer has 1 host(s) in the inventory but Heat is creating member 1",
        ),
        (lambda: inventory.host_for("CephStorage", 0), "role CephStorage is not in the inventory"),
        (
            lambda: inventory.host_for("ComputeDeployedServer", -1),  # never the last host by a negative index
            "ComputeDeployedServer[-1]: a member index is a whole number from 0",
        ),
        (
            lambda: load_inventory(environ={**env, "ComputeDeployedServer_hosts": "192.0.2.10"}),
            "host 192.0.2.10 is listed twice: ControllerDeployedServer[0] and ComputeDeployedServer[0]",
        ),
        (lambda: load_inventory(environ={}), "no node inventory: pass --inventory FILE"),
        (lambda: load_inventory(environ={"OVERCLOUD_ROLES": "X"}), "OVERCLOUD_ROLES names X but X_hosts is not set"),
        (lambda: load_inventory(tmp_path / "missing.yaml"), "inventory"),
        (lambda: Host.parse("192.0.2.1:ssh"), "the port after ':' must be a number"),
    ]
    for call, message in cases:
        with pytest.raises(InventoryError) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)
    by_file = tmp_path / "inventory.yaml"
    by_file.write_text("roles:\n  Compute: [192.0.2.30:2222]\nservers:\n  mystack-abc/web-server: 192.0.2.99\n")
    loaded = load_inventory(by_file)
    assert loaded.host_for("Compute", 0) == Host("192.0.2.30", 2222)
    assert loaded.host_for(None, None, path="mystack-abc/web-server") == Host("192.0.2.99")


def test_agents_configure_does_the_whole_stack_in_a_window_and_status_shows_each_node(deployment, workers, tmp_path):
    oc, settings = deployment
    os_env = oc.environment()
    plan = run_cli(settings, tmp_path, "agents", "configure", "--stack", "overcloud", "--dry-run", env=os_env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.count("temp_url_sig=***") == 5 and "127.0.0.13" in plan.stdout
    assert all(not node.commands for node in oc.nodes.values()), "a dry run touches nothing"
    workers(settings, env=os_env)
    done = run_cli(
        settings,
        tmp_path,
        "agents",
        "configure",
        "--stack",
        "overcloud",
        "--concurrency",
        "2",
        "--wait",
        "--timeout",
        "90",
        env=os_env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("succeeded") >= 5 and "written" in done.stdout
    audit = AuditLog.open(settings.database())
    over_ssh = []  # each node run from its first step until its agent fetched: what the window bounds
    for r in list_runs(audit, RunFilter(handler="configure_node_command", limit=100)):
        steps = run_with_steps(audit, r["id"])["steps"]
        [fetched] = [s for s in steps if s["name"] == "agent fetched its metadata"]
        over_ssh.append((steps[0]["started_at"], fetched["finished_at"]))
    at_once = max(sum(1 for begin, end in over_ssh if begin <= t < end) for t, _ in over_ssh)
    assert len(over_ssh) == 5 and at_once <= 2, over_ssh
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=30, message="deployment complete")
    shown = run_cli(settings, tmp_path, "agents", "status", "--stack", "overcloud", env=os_env)
    assert shown.returncode == 0 and shown.stdout.count("polling") == 5
    assert shown.stdout.count("4/4 deployments complete") == 5, shown.stdout
    again = run_cli(
        settings,
        tmp_path,
        "agents",
        "configure",
        "--stack",
        "overcloud",
        "--wait",
        "--timeout",
        "90",
        env=os_env,
        timeout=120,
    )
    assert again.returncode == 0 and again.stdout.count("unchanged") == 5, again.stdout
    for sig in (re.search(r"temp_url_sig=([^&]+)", m.metadata_url).group(1) for m in oc.heat.members):
        assert sig not in plan.stdout + done.stdout + shown.stdout + again.stdout


def test_doctor_checks_every_path_and_names_what_fails(deployment, tmp_path):
    oc, settings = deployment
    os_env = oc.environment()
    healthy = run_cli(settings, tmp_path, "doctor", "--stack", "overcloud", env=os_env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    for check in ("Keystone", "Heat", "RabbitMQ", "database", "SSH", "Heat API from node", "Swift from node"):
        assert check in healthy.stdout
    inventoried = sum(len(r.hosts) for r in oc.scenario.roles)  # the undercloud is not in this inventory
    assert "FAIL" not in healthy.stdout and healthy.stdout.count("HTTP ") == 2 * inventoried
    oc.faults.add(Fault("node_unreachable", "127.0.0.12"))
    broken = run_cli(settings, tmp_path, "doctor", "--stack", "overcloud", env=os_env)
    assert broken.returncode == 1 and broken.stdout.count("FAIL") == 1 and "127.0.0.12" in broken.stdout
    oc.faults.clear()
    # an inventory of servers: entries only (a stack that is not TripleO-shaped): its nodes are checked too
    servers = tmp_path / "servers.yaml"
    servers.write_text(
        json.dumps(
            {
                "servers": {
                    f"stack-{i}/deployed-server": f"{h}:{oc.nodes[h].port}"
                    for i, h in enumerate(["127.0.0.11", "127.0.0.21"])
                }
            }
        )
    )
    only_servers = run_cli(
        settings.model_copy(update={"inventory": servers}), tmp_path, "doctor", "--stack", "overcloud", env=os_env
    )
    assert only_servers.returncode == 0, only_servers.stdout + only_servers.stderr
    assert only_servers.stdout.count("Heat API from node") == 2


def test_an_unreachable_node_is_retried_then_fails_alone_and_status_shows_it(deployment, workers, tmp_path):
    oc, settings = deployment
    settings = settings.model_copy(
        update={"handler_overrides": {"configure_new_node": {"max_retries": 2, "min_backoff": 0.2, "max_backoff": 0.5}}}
    )
    oc.faults.add(Fault("node_unreachable", "127.0.0.22"))
    os_env = oc.environment()
    workers(settings, env=os_env)
    workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    audit = AuditLog.open(settings.database())
    wait_for(
        lambda: len(r := configure_runs(audit)) == 5 and all(x["status"] in ("succeeded", "dead") for x in r),
        timeout=60,
        message="every run settled",
    )
    runs = {r["status"]: r for r in configure_runs(audit)}
    dead = [r for r in configure_runs(audit) if r["status"] == "dead"]
    assert len(dead) == 1 and dead[0]["attempts"] == 3 and "127.0.0.22" in dead[0]["error"]
    assert "unreachable" in dead[0]["error"] or "SSH" in dead[0]["error"]
    assert [m.member.status for m in oc.heat.members].count("CREATE_COMPLETE") == 4
    assert oc.heat.root.status == "CREATE_IN_PROGRESS" and runs["succeeded"]
    shown = run_cli(settings, tmp_path, "agents", "status", "--stack", "overcloud", env=os_env)
    line = next(l for l in shown.stdout.splitlines() if "127.0.0.22" in l)
    assert "unreachable" in line and shown.stdout.count("polling") == 4


@pytest.mark.parametrize(
    "transport, layout", [("POLL_SERVER_HEAT", "ini"), ("POLL_SERVER_HEAT", "local-data"), ("POLL_SERVER_CFN", "ini")]
)
def test_heat_and_cfn_nodes_get_their_collector_and_its_secret_stays_on_the_node(
    tmp_path, broker_url, sqlite_url, namespace, workers, transport, layout
):
    oc, settings = start_deployment(tmp_path, broker_url, sqlite_url, namespace, controllers=1, transport=transport)
    collector = {"POLL_SERVER_HEAT": "heat", "POLL_SERVER_CFN": "cfn"}[transport]
    try:
        settings = settings.model_copy(update={"agent_layout": layout})
        worker = workers(settings, "--watch", "overcloud", "--watch-interval", "0.3", env=oc.environment())
        wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete")
        secrets = []
        for member in oc.heat.members:
            node = oc.nodes[member.host]
            path = settings.agent_config_path if layout == "ini" else settings.agent_local_data_path
            config = node.files[path].decode()
            secret = member.password if collector == "heat" else member.secret_key
            secrets.append(secret)
            assert secret in config and not member.metadata_url
            if layout == "ini":
                assert f"collectors={collector}" in config and f"\n[{collector}]\n" in config
            else:
                assert json.loads(config)["os-collect-config"]["heat"]["resource_name"] == "deployed-server"
                assert node.modes["/var/lib/os-collect-config/local-data"] == 0o700
            cached = json.loads(node.files[f"/var/lib/os-collect-config/{collector}.json"])
            mine = cached["os-collect-config"][collector]
            assert mine["user_id" if collector == "heat" else "access_key_id"] in (member.user_id, member.access_key)
        status = run_cli(settings, tmp_path, "agents", "status", "--stack", "overcloud", env=oc.environment())
        assert status.stdout.count("polling") == 3, status.stdout + status.stderr
        audit = AuditLog.open(settings.database())
        runs = configure_runs(audit)
        assert len(runs) == 3 and {r["status"] for r in runs} == {"succeeded"}
        with audit.engine.connect() as c:
            tables = " ".join(
                str(row) for t in ("envelope", "run", "step") for row in c.execute(text(f"select * from {t}"))
            )
        shown = "".join(run_cli(settings, tmp_path, "audit", "show", r["id"], "--json").stdout for r in runs)
        worker.terminate()
        logs = worker.log_path.read_text()
        for secret in secrets:
            for where in (tables, shown, logs, status.stdout):
                assert secret not in where
        assert f'"{collector}"' in shown  # what was configured is on record, redacted
    finally:
        oc.stop()


def test_a_failed_deployment_fails_its_nodes_run_with_heats_reason_and_the_others_succeed(
    tmp_path, broker_url, sqlite_url, namespace, workers
):
    oc, settings = start_deployment(tmp_path, broker_url, sqlite_url, namespace)
    try:
        broken = oc.heat.members[1]
        oc.faults.add(Fault("deployment_failure", broken.host, match="HostsEntry", code=3))
        workers(settings, "--watch", "overcloud", "--watch-interval", "0.3", env=oc.environment())
        audit = AuditLog.open(settings.database())
        wait_for(
            lambda: len(r := configure_runs(audit)) == 5 and all(x["status"] in ("succeeded", "failed") for x in r),
            timeout=60,
            message="runs ended",
        )
        assert oc.heat.root.status == "CREATE_FAILED"
        runs = configure_runs(audit)
        [failed] = [r for r in runs if r["status"] == "failed"]
        assert [r["status"] for r in runs].count("succeeded") == 4
        reason = "Deployment to server failed: deploy_status_code : Deployment exited with non-zero status code: 3"
        assert failed["error"] == (
            f"ControllerDeployedServer[1] on {broken.host}:{oc.nodes[broken.host].port}: "
            f"HostsEntryDeployment failed: Error: resources.HostsEntryDeployment: {reason}"
        )
        [step] = [s for s in run_with_steps(audit, failed["id"])["steps"] if s["name"] == "Heat deployments"]
        assert step["status"] == "failed" and "exited with status 3" in step["detail"]["deploy_stderr"]
        listed = run_cli(settings, tmp_path, "audit", "runs", "--status", "failed", "--json")
        assert "HostsEntryDeployment failed" in listed.stdout
        report = tmp_path / "report.html"
        run_cli(settings, tmp_path, "audit", "report", "--stack", "overcloud", "--html", str(report))
        assert "HostsEntryDeployment failed: Error: resources.HostsEntryDeployment" in report.read_text()
        timeline = json.loads(
            run_cli(
                settings, tmp_path, "audit", "timeline", "--stack", "overcloud", "--status", "accepted", "-f", "json"
            ).stdout
        )
        heat = [e for e in timeline if e["what"] == "heat.resource.CREATE_FAILED"]
        assert heat, "Heat's failure events are in the stack's timeline"
        stack_failed = [e for e in timeline if e["what"] == "heat.stack.CREATE_FAILED"]
        assert stack_failed, "and so is the stack's end"
        envelopes = list_envelopes(audit, limit=5000)
        failures = [e for e in envelopes if e["type"] == "heat.resource.CREATE_FAILED"]
        assert any(
            "HostsEntryDeployment" in e["payload"] and "non-zero status code: 3" in e["payload"] for e in failures
        )
        status = run_cli(settings, tmp_path, "agents", "status", "--stack", "overcloud", env=oc.environment())
        assert status.stdout.count("4/4 deployments complete") == 4 and "HostsEntryDeployment failed" in status.stdout
    finally:
        oc.stop()


def test_a_node_whose_agent_stops_fails_its_run_at_the_deadline_naming_the_deployments_that_wait(
    tmp_path, broker_url, sqlite_url, namespace, workers
):
    oc, settings = start_deployment(tmp_path, broker_url, sqlite_url, namespace, controllers=1)
    try:
        stopped = oc.heat.members[0]
        settings = settings.model_copy(update={"deployments_deadline": 4.0})
        workers(settings, "--watch", "overcloud", "--watch-interval", "0.3", env=oc.environment())
        audit = AuditLog.open(settings.database())
        wait_for(
            lambda: any(
                s["name"] == "agent fetched its metadata"
                for r in configure_runs(audit)
                for s in run_with_steps(audit, r["id"])["steps"]
                if r["subject"] and s["target"] and s["target"].startswith(stopped.host)
            ),
            timeout=30,
            message="the first node's agent fetched",
        )
        oc.faults.add(Fault("agent_stopped", stopped.host))
        wait_for(
            lambda: any(r["status"] == "failed" for r in configure_runs(audit)),
            timeout=60,
            message="a run failed at its deadline",
        )
        [failed] = [r for r in configure_runs(audit) if r["status"] == "failed"]
        assert failed["error"].startswith(
            "gave up waiting for Heat to complete the deployments of ControllerDeployedServer[0]: "
        )
        assert "Deployment" in failed["error"].split(": ", 1)[1]
    finally:
        oc.stop()


def test_a_first_watch_starts_from_now_unless_asked_for_the_whole_history(
    deployment, more_namespaces, workers, tmp_path
):
    """After a deployment is over, a watcher on a fresh audit log publishes nothing of its
    history by default (only resources still in progress would be), and all of it with
    ``--from beginning``; each says which it did."""
    oc, settings = deployment
    os_env = oc.environment()
    workers(settings, env=os_env)
    workers(settings, "overcloud", "--interval", "0.3", command="watch", env=os_env)
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="deployment complete")
    for start_from, namespace in (("now", f"{settings.namespace}-now"), ("beginning", f"{settings.namespace}-all")):
        more_namespaces.append(namespace)
        fresh = settings.model_copy(
            update={"namespace": namespace, "database_url": SecretStr(f"sqlite:///{tmp_path}/{start_from}.db")}
        )
        workers(fresh, env=os_env)
        watcher = workers(fresh, "overcloud", "--interval", "0.3", "--from", start_from, command="watch", env=os_env)
        audit = AuditLog.open(fresh.database())
        wait_for(lambda: audit.cursor("overcloud") is not None, timeout=30, message="the first look done")
        wait_drained(namespace)
        accepted = list_envelopes(audit, status="accepted", limit=10_000)
        said = watcher.log_path.read_text()
        if start_from == "now":
            assert accepted == [] and "watching from now" in said
        else:
            assert len(accepted) > 20 and "watching from now" not in said
            assert {e["type"] for e in accepted} >= {"heat.resource.CREATE_IN_PROGRESS", "heat.stack.CREATE_COMPLETE"}
