"""The simulated overcloud through the real openstacksdk over real HTTP: Keystone, Heat's
TripleO-shaped deployment as the real Heat runs it (deployed servers complete at once, their
software deployments wait for the nodes' agents and their signals), and the metadata each
node polls."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openstack
import pytest
from openstack import exceptions

from stackreflex_sim.agent import CONFIG_PATH, Agent
from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario, load_scenario

from .conftest import wait_for


def small_scenario(**overrides) -> Scenario:
    values = {
        "deployment_time": 0.05,
        "roles": [
            Role("ControllerDeployedServer", 3, ["127.0.0.11", "127.0.0.12", "127.0.0.13"]),
            Role("ComputeDeployedServer", 2, ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]),
        ],
    }
    values.update(overrides)
    return Scenario(**values)


@pytest.fixture
def overcloud():
    oc = Overcloud.start(small_scenario())
    yield oc
    oc.stop()


def deployed_servers(conn, stack_id: str) -> list[dict]:
    """What `openstack stack resource list -n5 --filter name=deployed-server overcloud` shows."""
    return conn.orchestration.get(
        f"/stacks/overcloud/{stack_id}/resources", params={"nested_depth": 5, "name": "deployed-server"}
    ).json()["resources"]


def metadata_url(conn, resource: dict) -> str:
    """`.["os-collect-config"].request.metadata_url` of a resource's metadata."""
    stack_href = next(link["href"] for link in resource["links"] if link["rel"] == "stack")
    path = stack_href.split("/v1/", 1)[1].split("/", 1)[1]
    metadata = conn.orchestration.get(f"/{path}/resources/{resource['resource_name']}/metadata").json()["metadata"]
    return metadata["os-collect-config"]["request"]["metadata_url"]


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stack_status(conn) -> str:
    return conn.orchestration.find_stack("overcloud").status


def deployments(conn, stack_id: str) -> list[dict]:
    """Every software deployment resource of the stack, as `openstack stack resource list -n5` lists them."""
    listed = conn.orchestration.get(f"/stacks/overcloud/{stack_id}/resources", params={"nested_depth": 5}).json()
    return [r for r in listed["resources"] if r["resource_type"].endswith("Deployment")]


def start_agent(oc: Overcloud, member) -> Agent:
    """The node's os-collect-config, configured with what its deployed server's metadata says."""
    occ = member.deployed_server.metadata["os-collect-config"]
    collector = occ["collectors"][0]
    section = "".join(f"{k}={v}\n" for k, v in occ[collector].items())
    files = {
        CONFIG_PATH: f"[DEFAULT]\ncollectors={collector}\npolling_interval=0.2\n\n[{collector}]\n{section}".encode()
    }
    agent = Agent(
        member.host, files, threading.RLock(), oc.heat.clock, oc.faults, member.host, oc.scenario.deployment_time
    )
    agent.start()
    return agent


@pytest.fixture
def agents():
    started = []
    yield lambda oc, member: started.append(start_agent(oc, member)) or started[-1]
    for agent in started:
        agent.stop()


def test_the_default_scenario_is_the_documented_deployed_server_layout():
    scenario = load_scenario()
    assert scenario.stack == "overcloud"
    assert [(r.name, r.count) for r in scenario.roles] == [
        ("ControllerDeployedServer", 3),
        ("ComputeDeployedServer", 2),
    ]


def test_openstacksdk_authenticates_and_finds_the_stack_through_the_redirect(overcloud):
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    assert (stack.name, stack.status) == ("overcloud", "CREATE_IN_PROGRESS")
    assert conn.orchestration.find_stack("no-such-stack") is None
    with pytest.raises(exceptions.NotFoundException, match=r"The Stack \(nope\) could not be found"):
        conn.orchestration.get_stack("nope")


def test_requests_without_a_token_are_refused(overcloud):
    status, _ = fetch(f"{overcloud.heat.endpoint}/stacks")
    assert status == 401


def test_deployed_servers_complete_at_once_and_their_deployments_wait_for_the_agents(overcloud):
    """What seed 004 shows: `openstack stack resource list -n 5 overcloud | grep deployed-server`
    gives CREATE_COMPLETE rows while the servers' stack resources stay CREATE_IN_PROGRESS."""
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    servers = deployed_servers(conn, stack.id)
    assert len(servers) == 5
    assert {(s["resource_type"], s["resource_status"]) for s in servers} == {
        ("OS::Heat::DeployedServer", "CREATE_COMPLETE")
    }
    names = [next(l["href"] for l in s["links"] if l["rel"] == "stack").rsplit("/", 2)[-2] for s in servers]
    assert all(n.startswith(("overcloud-ControllerDeployedServer-", "overcloud-ComputeDeployedServer-")) for n in names)
    assert names[0].split("-")[3] == "0" and names[0].split("-")[5] == "ControllerDeployedServer"
    listed = conn.orchestration.get(f"/stacks/overcloud/{stack.id}/resources", params={"nested_depth": 5}).json()
    server_resources = [r for r in listed["resources"] if r["resource_type"].endswith("DeployedServerServer")]
    assert len(server_resources) == 5 and {r["resource_status"] for r in server_resources} == {"CREATE_IN_PROGRESS"}
    waiting = deployments(conn, stack.id)
    assert sorted({r["resource_name"] for r in waiting}) == ["HostsEntryDeployment", "InstanceIdDeployment"]
    assert len(waiting) == 10 and {r["resource_status"] for r in waiting} == {"CREATE_IN_PROGRESS"}
    urls = [metadata_url(conn, s) for s in servers]
    assert len(set(urls)) == 5 and all("temp_url_sig=" in u and "temp_url_expires=" in u for u in urls)
    status, body = fetch(urls[0])
    shown = json.loads(body)
    assert status == 200 and [d["name"] for d in shown["deployments"]] == [
        "HostsEntryDeployment",
        "InstanceIdDeployment",
    ]
    inputs = {i["name"]: i["value"] for i in shown["deployments"][0]["inputs"]}
    assert inputs["deploy_signal_transport"] == "TEMP_URL_SIGNAL" and inputs["deploy_signal_verb"] == "PUT"
    assert inputs["deploy_server_id"] == servers[0]["physical_resource_id"]
    assert set(shown["os-collect-config"]) >= {"heat", "cfn", "zaqar", "request", "collectors"}
    assert shown["os-collect-config"]["heat"] == dict.fromkeys(shown["os-collect-config"]["heat"])  # unused: null
    refused = conn.orchestration.get(f"/stacks/overcloud/{stack.id}/resources", params={"colour": "red"})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("Invalid filter parameters")
    assert (
        deployed_servers(conn, stack.id)
        and not conn.orchestration.get(
            f"/stacks/overcloud/{stack.id}/resources", params={"name": "deployed-server"}
        ).json()["resources"]
    )


def test_the_deployment_completes_only_once_each_nodes_agent_has_run_its_deployments(overcloud, agents):
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    first, *others = overcloud.heat.members
    for member in others:
        agents(overcloud, member)
    wait_for(lambda: all(m.completed for m in others), timeout=10, message="four members complete")
    assert stack_status(conn) == "CREATE_IN_PROGRESS"
    assert first.member.status == "CREATE_IN_PROGRESS" and not first.polled_at
    # the member stack's deployments were created once its server's stack completed, and ran at the next poll
    names = {
        r["resource_name"]: r["resource_status"]
        for r in deployments(conn, stack.id)
        if next(l["href"] for l in r["links"] if l["rel"] == "stack").rsplit("/", 2)[-2] == others[0].member.nested.name
    }
    assert names == {"NetworkDeployment": "CREATE_COMPLETE", "ControllerDeployedServerDeployment": "CREATE_COMPLETE"}
    agents(overcloud, first)
    wait_for(lambda: stack_status(conn) == "CREATE_COMPLETE", timeout=10, message="stack complete")
    records = conn.orchestration.get("/software_deployments").json()["software_deployments"]
    assert len(records) == 20 and {r["status"] for r in records} == {"COMPLETE"}
    assert {r["status_reason"] for r in records} == {"Outputs received"}
    mine = conn.orchestration.get(
        "/software_deployments", params={"server_id": first.deployed_server.physical_id}
    ).json()["software_deployments"]
    assert len(mine) == 4 and all(r["output_values"]["deploy_status_code"] == 0 for r in mine)
    shown = conn.orchestration.get(f"/software_deployments/{mine[0]['id']}").json()["software_deployment"]
    assert shown["id"] == mine[0]["id"] and shown["config_id"] == mine[0]["config_id"]
    assert [len(overcloud.metadata.polls_of(m.metadata_url)) > 0 for m in overcloud.heat.members] == [True] * 5


def test_a_failed_deployment_fails_its_parents_with_heats_own_reasons_and_the_others_go_on(overcloud, agents):
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    broken = overcloud.heat.members[1]
    overcloud.faults.add(Fault("deployment_failure", broken.host, match="HostsEntry", code=3))
    for member in overcloud.heat.members:
        agents(overcloud, member)
    wait_for(
        lambda: all(m.completed for m in overcloud.heat.members if m is not broken),
        timeout=10,
        message="the other members complete",
    )
    assert stack_status(conn) == "CREATE_FAILED"
    leaf = "Deployment to server failed: deploy_status_code : Deployment exited with non-zero status code: 3"
    above = "Deployment to server failed: deploy_status_code: Deployment exited with non-zero status code: 3"
    failed = sorted(
        (r["resource_name"], r["resource_status_reason"])
        for r in conn.orchestration.get(
            f"/stacks/overcloud/{stack.id}/resources", params={"nested_depth": 5, "status": "FAILED"}
        ).json()["resources"]
    )
    path = "resources.ControllerDeployedServer.resources.HostsEntryDeployment"
    assert failed == [  # the group, the member, the server stack resource, the deployment
        ("1", f"Error: resources[1].{path}: {above}"),
        ("ControllerDeployedServer", f"Error: {path}: {above}"),
        ("ControllerDeployedServer", f"Error: resources.ControllerDeployedServer.resources[1].{path}: {above}"),
        ("HostsEntryDeployment", f"Error: resources.HostsEntryDeployment: {leaf}"),
    ]
    assert conn.orchestration.find_stack("overcloud").status_reason == (
        "Resource CREATE failed: Error: resources.ControllerDeployedServer.resources[1].resources."
        f"ControllerDeployedServer.resources.HostsEntryDeployment: {above}"
    )
    [record] = [
        r
        for r in conn.orchestration.get("/software_deployments").json()["software_deployments"]
        if r["status"] == "FAILED"
    ]
    assert record["server_id"] == broken.deployed_server.physical_id
    assert record["status_reason"] == "deploy_status_code : Deployment exited with non-zero status code: 3"
    assert "exited with status 3" in record["output_values"]["deploy_stderr"]


@pytest.mark.parametrize(
    "transport, signals",
    [("POLL_SERVER_HEAT", "HEAT_SIGNAL"), ("POLL_SERVER_CFN", "CFN_SIGNAL"), ("POLL_TEMP_URL", "NO_SIGNAL")],
)
def test_every_polling_and_signal_transport_completes_the_deployment(transport, signals, agents):
    oc = Overcloud.start(small_scenario(transport=transport, signal_transport=signals))
    try:
        occ = oc.heat.members[0].deployed_server.metadata["os-collect-config"]
        collector = {"POLL_SERVER_HEAT": "heat", "POLL_SERVER_CFN": "cfn", "POLL_TEMP_URL": "request"}[transport]
        assert occ["collectors"] == [collector, "local"] and all(occ[collector].values())
        if transport == "POLL_SERVER_CFN":
            assert (
                occ["cfn"]["metadata_url"] == oc.heat.cfn_endpoint and occ["cfn"]["path"] == "deployed-server.Metadata"
            )
        if signals == "NO_SIGNAL":  # nothing to wait for: Heat completes the deployments at once
            assert oc.heat.root.status == "CREATE_COMPLETE" and not any(m.polled_at for m in oc.heat.members)
            assert {d.status_reason for d in oc.heat.deployments.values()} == {"Not waiting for outputs signal"}
            return
        for member in oc.heat.members:
            agents(oc, member)
        wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=15, message="stack complete")
        assert all(m.polled_at for m in oc.heat.members)
        assert {d.status_reason for d in oc.heat.deployments.values()} == {"Outputs received"}
    finally:
        oc.stop()


def test_a_cfn_request_with_a_bad_signature_is_refused(agents):
    oc = Overcloud.start(small_scenario(transport="POLL_SERVER_CFN"))
    try:
        member = oc.heat.members[0]
        member.deployed_server.metadata["os-collect-config"]["cfn"]["secret_access_key"] = "not-the-key"
        agent = agents(oc, member)
        wait_for(lambda: agent.last_status is not None, timeout=5, message="the agent's first request")
        assert agent.last_status == 403 and not member.polled_at and agent.polls == 0
    finally:
        oc.stop()


def test_an_agent_that_stops_polling_leaves_its_deployments_waiting(overcloud, agents):
    stopped = overcloud.heat.members[0]
    overcloud.faults.add(Fault("agent_stopped", stopped.host))
    for member in overcloud.heat.members:
        agents(overcloud, member)
    wait_for(lambda: all(m.completed for m in overcloud.heat.members[1:]), timeout=10, message="the others complete")
    assert not stopped.polled_at and {d.status for d in stopped.deployments} == {"IN_PROGRESS"}
    assert overcloud.heat.root.status == "CREATE_IN_PROGRESS"


def test_a_bad_or_expired_signature_is_refused_as_swift_does(overcloud):
    conn = overcloud.connect()
    url = metadata_url(conn, deployed_servers(conn, conn.orchestration.find_stack("overcloud").id)[0])
    forged = url.replace("temp_url_sig=", "temp_url_sig=0")
    status, body = fetch(forged)
    assert status == 401 and b"Temp URL invalid" in body
    expired = url.split("temp_url_expires=")[0] + "temp_url_expires=1"
    assert fetch(expired)[0] == 401
    assert overcloud.metadata.polls_of(url) == []


def test_events_page_with_an_exclusive_marker_and_name_the_root_stack(overcloud):
    conn = overcloud.connect()
    stack_id = conn.orchestration.find_stack("overcloud").id
    path = f"/stacks/overcloud/{stack_id}/events"
    everything = conn.orchestration.get(path, params={"nested_depth": 5, "sort_dir": "asc"}).json()["events"]
    top_only = conn.orchestration.get(path, params={"sort_dir": "asc"}).json()["events"]
    assert len(everything) > len(top_only) >= 1
    assert everything[0]["resource_name"] == "overcloud" and everything[0]["physical_resource_id"] == stack_id
    assert all(any(l["rel"] == "root_stack" for l in e["links"]) for e in everything)
    assert not any(l["rel"] == "root_stack" for l in top_only[0]["links"])
    after = conn.orchestration.get(
        path, params={"nested_depth": 5, "sort_dir": "asc", "marker": everything[9]["id"]}
    ).json()["events"]
    assert [e["id"] for e in after] == [e["id"] for e in everything[10:]]
    purged = conn.orchestration.get(path, params={"nested_depth": 5, "marker": "00000000-0000-4000-8000-000000000000"})
    assert [e["id"] for e in purged.json()["events"]] == [e["id"] for e in everything]
    servers = [e for e in everything if e["resource_name"] == "deployed-server"]
    assert [e["resource_status"] for e in servers] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"] * 5
    # while a resource is created its event names it by a placeholder; its id comes with the next one
    placeholder, created = servers[0]["physical_resource_id"], servers[1]["physical_resource_id"]
    assert (
        placeholder.startswith("overcloud-ControllerDeployedServer-")
        and placeholder.endswith(placeholder.rsplit("-", 1)[-1])
        and "deployed-server" in placeholder
    )
    assert created == overcloud.heat.members[0].deployed_server.physical_id


def test_old_events_are_purged_past_the_per_stack_limit():
    oc = Overcloud.start(small_scenario(max_events_per_stack=3))
    try:
        conn = oc.connect()
        group = next(
            s
            for s in oc.heat.stacks.values()
            if s.name.startswith("overcloud-ControllerDeployedServer-") and s.name.count("-") == 2
        )
        events = conn.orchestration.get(f"/stacks/{group.name}/{group.id}/events").json()["events"]
        assert len(events) == 3 and events[-1]["resource_status"] == "CREATE_IN_PROGRESS"
    finally:
        oc.stop()


def test_scaling_up_adds_members_whose_deployments_wait_and_the_update_completes(overcloud, agents):
    conn = overcloud.connect()
    for member in overcloud.heat.members:
        agents(overcloud, member)
    wait_for(lambda: stack_status(conn) == "CREATE_COMPLETE", timeout=10, message="initial deployment")
    added = overcloud.heat.scale("ComputeDeployedServer", 2)
    assert [(m.index, m.host) for m in added] == [(2, "127.0.0.23"), (3, "127.0.0.24")]
    assert stack_status(conn) == "UPDATE_IN_PROGRESS"
    assert all(m.deployed_server.status == "CREATE_COMPLETE" and m.member.status == "CREATE_IN_PROGRESS" for m in added)
    for member in added:
        agents(overcloud, member)
    wait_for(lambda: stack_status(conn) == "UPDATE_COMPLETE", timeout=10, message="scale-up complete")


def test_sim_serve_prints_exports_that_openstacksdk_can_use(tmp_path):
    env_file = tmp_path / "overcloudrc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stackreflex",
            "sim",
            "serve",
            "--port",
            "0",
            "--ssh-port",
            "0",
            "--state-dir",
            str(tmp_path / "sim"),
            "--env-file",
            str(env_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        wait_for(env_file.exists, timeout=20, message="env file written")
        exports = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
        assert {"OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME"} <= set(exports)
        conn = openstack.connect(
            auth_url=exports["OS_AUTH_URL"],
            username=exports["OS_USERNAME"],
            password=exports["OS_PASSWORD"].strip("'"),
            project_name=exports["OS_PROJECT_NAME"],
            user_domain_name="Default",
            project_domain_name="Default",
            load_yaml_config=False,
            load_envvars=False,
        )
        assert conn.orchestration.find_stack("overcloud").status == "CREATE_IN_PROGRESS"
        base = exports["OS_AUTH_URL"].rsplit("/identity", 1)[0]
        scaled = subprocess.run(
            [sys.executable, "-m", "stackreflex", "sim", "scale", "ComputeDeployedServer", "+1", "--url", base],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert scaled.returncode == 0 and "127.0.0.23" in scaled.stdout
        too_many = subprocess.run(
            [sys.executable, "-m", "stackreflex", "sim", "scale", "ComputeDeployedServer", "+9", "--url", base],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert too_many.returncode == 2 and "cannot grow" in too_many.stderr

        def sim(*args):
            return subprocess.run(
                [sys.executable, "-m", "stackreflex", "sim", *args, "--url", base],
                capture_output=True,
                text=True,
                timeout=30,
            )

        injected = sim("fault", "api_error", "/stacks", "--count", "1")
        assert injected.returncode == 0 and "api_error on /stacks (1 times)" in injected.stdout
        with pytest.raises(exceptions.HttpException):
            conn.orchestration.find_stack("overcloud")
        assert conn.orchestration.find_stack("overcloud") is not None
        assert sim("fault", "gremlins", "x").returncode == 3  # a usage error
        assert sim("fault", "clear", "any").returncode == 0
        default = load_scenario()
        hosts = (
            sum(len(role.hosts) for role in default.roles) + len(default.compute_addresses) + bool(default.undercloud)
        )
        assert (tmp_path / "sim" / "client_key").exists() and len(
            list((tmp_path / "sim" / "hostkeys").glob("*.key"))
        ) == hosts
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_a_deployment_past_its_timeout_fails():
    oc = Overcloud.start(small_scenario(create_timeout=0.3))
    try:
        wait_for(lambda: oc.heat.root.status == "CREATE_FAILED", timeout=5, message="stack failed")
        assert oc.heat.root.reason == "Timed out"
    finally:
        oc.stop()


def test_the_speed_factor_compresses_simulated_time(agents):
    oc = Overcloud.start(small_scenario(deployment_time=60, speed=600))  # a minute in 0.1 s
    try:
        started = time.monotonic()
        for member in oc.heat.members:
            agents(oc, member)
        wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=10, message="stack complete")
        assert time.monotonic() - started < 5  # four minutes of deployments per node
    finally:
        oc.stop()
