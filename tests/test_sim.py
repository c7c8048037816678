"""The simulated overcloud through the real openstacksdk over real HTTP: Keystone, Heat's
TripleO-shaped deployment, and the temp-URL metadata each node polls."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openstack
import pytest
from openstack import exceptions

from stackreflex.sim.overcloud import Overcloud
from stackreflex.sim.scenario import Role, Scenario, load_scenario

from .conftest import wait_for


def small_scenario(**overrides) -> Scenario:
    values = dict(deployment_time=0.2, roles=[
        Role("ControllerDeployedServer", 3, ["127.0.0.11", "127.0.0.12", "127.0.0.13"]),
        Role("ComputeDeployedServer", 2, ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"])])
    values.update(overrides)
    return Scenario(**values)


@pytest.fixture
def overcloud():
    oc = Overcloud.start(small_scenario())
    yield oc
    oc.stop()


def deployed_servers(conn, stack_id: str) -> list[dict]:
    """What `openstack stack resource list -n5 --filter name=deployed-server overcloud` shows."""
    return conn.orchestration.get(f"/stacks/overcloud/{stack_id}/resources",
                                  params={"nested_depth": 5, "name": "deployed-server"}).json()["resources"]


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


def test_the_default_scenario_is_the_documented_deployed_server_layout():
    scenario = load_scenario()
    assert scenario.stack == "overcloud"
    assert [(r.name, r.count) for r in scenario.roles] == [("ControllerDeployedServer", 3), ("ComputeDeployedServer", 2)]


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


def test_nested_deployed_servers_are_listed_with_their_own_metadata_urls(overcloud):
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    servers = deployed_servers(conn, stack.id)
    assert len(servers) == 5
    assert {s["resource_type"] for s in servers} == {"OS::Heat::DeployedServer"}
    assert all(s["resource_status"] == "CREATE_IN_PROGRESS" for s in servers)
    names = [next(l["href"] for l in s["links"] if l["rel"] == "stack").rsplit("/", 2)[-2] for s in servers]
    assert all(n.startswith("overcloud-ControllerDeployedServer-") or n.startswith("overcloud-ComputeDeployedServer-")
               for n in names)
    assert names[0].split("-")[3] == "0" and names[0].split("-")[5] == "ControllerDeployedServer"
    urls = [metadata_url(conn, s) for s in servers]
    assert len(set(urls)) == 5 and all("temp_url_sig=" in u and "temp_url_expires=" in u for u in urls)
    refused = conn.orchestration.get(f"/stacks/overcloud/{stack.id}/resources", params={"colour": "red"})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("Invalid filter parameters")
    assert deployed_servers(conn, stack.id) and not conn.orchestration.get(
        f"/stacks/overcloud/{stack.id}/resources", params={"name": "deployed-server"}).json()["resources"]


def test_the_deployment_completes_only_after_each_node_polls_its_own_url(overcloud):
    conn = overcloud.connect()
    stack = conn.orchestration.find_stack("overcloud")
    urls = [metadata_url(conn, s) for s in deployed_servers(conn, stack.id)]
    for url in urls[:-1]:
        status, body = fetch(url)
        assert status == 200 and "deployments" in json.loads(body)
    time.sleep(0.6)
    assert stack_status(conn) == "CREATE_IN_PROGRESS"
    statuses = [s["resource_status"] for s in deployed_servers(conn, stack.id)]
    assert statuses.count("CREATE_COMPLETE") == 4 and statuses[-1] == "CREATE_IN_PROGRESS"
    fetch(urls[-1])
    wait_for(lambda: stack_status(conn) == "CREATE_COMPLETE", timeout=10, message="stack complete")
    assert [len(overcloud.metadata.polls_of(u)) for u in urls] == [1, 1, 1, 1, 1]


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
    after = conn.orchestration.get(path, params={"nested_depth": 5, "sort_dir": "asc",
                                                 "marker": everything[9]["id"]}).json()["events"]
    assert [e["id"] for e in after] == [e["id"] for e in everything[10:]]
    purged = conn.orchestration.get(path, params={"nested_depth": 5, "marker": "00000000-0000-4000-8000-000000000000"})
    assert [e["id"] for e in purged.json()["events"]] == [e["id"] for e in everything]
    in_progress = [e for e in everything if e["resource_name"] == "deployed-server"]
    assert len(in_progress) == 5 and {e["resource_status"] for e in in_progress} == {"CREATE_IN_PROGRESS"}


def test_old_events_are_purged_past_the_per_stack_limit():
    oc = Overcloud.start(small_scenario(max_events_per_stack=3))
    try:
        conn = oc.connect()
        group = next(s for s in oc.heat.stacks.values() if s.name.startswith("overcloud-ControllerDeployedServer-")
                     and s.name.count("-") == 2)
        events = conn.orchestration.get(f"/stacks/{group.name}/{group.id}/events").json()["events"]
        assert len(events) == 3 and events[-1]["resource_status"] == "CREATE_IN_PROGRESS"
    finally:
        oc.stop()


def test_scaling_up_adds_members_that_start_in_progress_and_the_update_completes(overcloud):
    conn = overcloud.connect()
    stack_id = conn.orchestration.find_stack("overcloud").id
    for s in deployed_servers(conn, stack_id):
        fetch(metadata_url(conn, s))
    wait_for(lambda: stack_status(conn) == "CREATE_COMPLETE", timeout=10, message="initial deployment")
    added = overcloud.heat.scale("ComputeDeployedServer", 2)
    assert [(m.index, m.host) for m in added] == [(2, "127.0.0.23"), (3, "127.0.0.24")]
    assert stack_status(conn) == "UPDATE_IN_PROGRESS"
    servers = deployed_servers(conn, stack_id)
    assert [s["resource_status"] for s in servers].count("CREATE_IN_PROGRESS") == 2
    for s in servers:
        if s["resource_status"] == "CREATE_IN_PROGRESS":
            fetch(metadata_url(conn, s))
    wait_for(lambda: stack_status(conn) == "UPDATE_COMPLETE", timeout=10, message="scale-up complete")


def test_sim_serve_prints_exports_that_openstacksdk_can_use(tmp_path):
    env_file = tmp_path / "overcloudrc"
    proc = subprocess.Popen([sys.executable, "-m", "stackreflex", "sim", "serve", "--port", "0", "--ssh-port", "0",
                             "--state-dir", str(tmp_path / "sim"), "--env-file", str(env_file)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        wait_for(env_file.exists, timeout=20, message="env file written")
        exports = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
        assert {"OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME"} <= set(exports)
        conn = openstack.connect(auth_url=exports["OS_AUTH_URL"], username=exports["OS_USERNAME"],
                                 password=exports["OS_PASSWORD"].strip("'"), project_name=exports["OS_PROJECT_NAME"],
                                 user_domain_name="Default", project_domain_name="Default",
                                 load_yaml_config=False, load_envvars=False)
        assert conn.orchestration.find_stack("overcloud").status == "CREATE_IN_PROGRESS"
        base = exports["OS_AUTH_URL"].rsplit("/identity", 1)[0]
        scaled = subprocess.run([sys.executable, "-m", "stackreflex", "sim", "scale", "ComputeDeployedServer", "+1",
                                 "--url", base], capture_output=True, text=True, timeout=30)
        assert scaled.returncode == 0 and "127.0.0.23" in scaled.stdout
        too_many = subprocess.run([sys.executable, "-m", "stackreflex", "sim", "scale", "ComputeDeployedServer", "+9",
                                   "--url", base], capture_output=True, text=True, timeout=30)
        assert too_many.returncode == 2 and "cannot grow" in too_many.stderr
        sim = lambda *args: subprocess.run([sys.executable, "-m", "stackreflex", "sim", *args, "--url", base],
                                           capture_output=True, text=True, timeout=30)
        injected = sim("fault", "api_error", "/stacks", "--count", "1")
        assert injected.returncode == 0 and "api_error on /stacks (1 times)" in injected.stdout
        with pytest.raises(exceptions.HttpException):
            conn.orchestration.find_stack("overcloud")
        assert conn.orchestration.find_stack("overcloud") is not None
        assert sim("fault", "gremlins", "x").returncode == 2
        assert sim("fault", "clear", "any").returncode == 0
        default = load_scenario()
        hosts = sum(len(role.hosts) for role in default.roles) + len(default.compute_addresses)
        assert (tmp_path / "sim" / "client_key").exists() and len(list((tmp_path / "sim" / "hostkeys").glob("*.key"))) == hosts
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


def test_the_speed_factor_compresses_simulated_time():
    oc = Overcloud.start(small_scenario(deployment_time=60, speed=300))  # a minute in 0.2 s
    try:
        conn = oc.connect()
        for s in deployed_servers(conn, conn.orchestration.find_stack("overcloud").id):
            fetch(metadata_url(conn, s))
        started = time.monotonic()
        wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=5, message="stack complete")
        assert time.monotonic() - started < 2
    finally:
        oc.stop()
