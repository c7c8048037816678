"""The trust boundary (#18): handlers take their authority from the cloud, not from the event.

A deployed-server event names a resource; Heat says which role and member it is, the inventory
which node that is. An envelope that says otherwise, or names what Heat does not have, is
refused before any node is touched. The simulated overcloud over real HTTP and SSH, real
RabbitMQ and a worker process."""

import re
from urllib.parse import quote, unquote

import pytest

from stackreflex.core.envelope import Envelope
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import run_with_steps
from stackreflex.tasks.agents import AgentLayout, AgentSource, UnsafeValue
from stackreflex.tasks.heat import (
    DeployedServer,
    HeatError,
    NotADeployedServer,
    NotInHeat,
    agent_source,
    deployed_server,
    deployed_servers,
    events_after,
    find_stack,
    resource_type,
)
from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .conftest import make_settings, overcloud_with_nodes
from .test_runtime import publish_all, run_ends

CONTROLLER, COMPUTE = "ControllerDeployedServer", "ComputeDeployedServer"
#: What every node's agent configuration held before the events: it must still hold it, byte for byte.
BEFORE = (
    b"[DEFAULT]\ncollectors=request\ncommand=os-refresh-config\npolling_interval=30\n\n"
    b"[request]\nmetadata_url=http://192.0.2.1/before\n"
)


def small_scenario() -> Scenario:
    return Scenario(
        deployment_time=0.1, roles=[Role(CONTROLLER, 2, ["127.0.0.11", "127.0.0.12"]), Role(COMPUTE, 1, ["127.0.0.21"])]
    )


@pytest.fixture
def cloud(tmp_path, broker_url, sqlite_url, namespace, workers):
    """A deployment waiting for its agents (no watcher: the tests publish the events), a worker,
    and every node's agent configuration as it was before."""
    scenario = small_scenario()
    oc, settings = overcloud_with_nodes(
        tmp_path,
        scenario,
        lambda oc: {"roles": {r.name: [f"{h}:{oc.nodes[h].port}" for h in r.hosts] for r in scenario.roles}},
        make_settings(broker_url, sqlite_url, namespace, agent_polling_interval=1),
    )
    for node in oc.nodes.values():
        node.files[settings.agent_config_path] = BEFORE
    workers(settings, env=oc.environment())
    yield oc, settings
    oc.stop()


def member(oc, role: str, index: int):
    return next(m for m in oc.heat.members if (m.role, m.index) == (role, index))


def event_data(m, **changes) -> dict:
    """What the watcher publishes for member ``m``'s deployed server going CREATE_IN_PROGRESS."""
    stack = m.deployed_server.stack
    return {
        "stack": "overcloud",
        "owner_stack": stack.name,
        "owner_stack_id": stack.id,
        "resource_name": m.deployed_server.name,
        "physical_resource_id": None,
        "resource_type": "OS::Heat::DeployedServer",
        "status": "CREATE_IN_PROGRESS",
        "role": m.role,
        "index": m.index,
        **changes,
    }


def resource_event(data: dict) -> Envelope:
    return Envelope.new("heat.resource.CREATE_IN_PROGRESS", subject="overcloud", data=data)


def node_files(oc) -> dict:
    return {address: dict(node.files) for address, node in oc.nodes.items()}


def check_step(audit: AuditLog, run: dict) -> dict:
    """The run's (last) check of the envelope against Heat."""
    return [s for s in run_with_steps(audit, run["id"])["steps"] if s["name"] == "check the server against Heat"][-1]


def test_forged_events_change_no_node_and_fail_naming_the_disagreement(cloud):
    oc, settings = cloud
    compute, controller = member(oc, COMPUTE, 0), member(oc, CONTROLLER, 1)
    path = f"{compute.deployed_server.stack.name}/deployed-server"
    before = node_files(oc)
    forged = {  # each: the envelope, the handler it reaches, the reason its run must fail with
        "another role's member": (
            resource_event(event_data(compute, role=CONTROLLER, index=1)),
            "configure_new_node",
            f"refused: the envelope disagrees with Heat about {path}: role {CONTROLLER} (Heat: {COMPUTE}); "
            f"index 1 (Heat: 0)",
        ),
        "the same, as a command": (
            Envelope.new(
                "command.agent.configure", subject="overcloud", data=event_data(compute, role=CONTROLLER, index=1)
            ),
            "configure_node_command",
            f"refused: the envelope disagrees with Heat about {path}: role {CONTROLLER} (Heat: {COMPUTE}); "
            f"index 1 (Heat: 0)",
        ),
        "another server's id": (
            resource_event(event_data(compute, physical_resource_id=controller.deployed_server.physical_id)),
            "configure_new_node",
            f"refused: the envelope disagrees with Heat about {path}: physical_resource_id "
            f"{controller.deployed_server.physical_id} (Heat: {compute.deployed_server.physical_id})",
        ),
        "a resource that does not exist": (
            resource_event(event_data(compute, resource_name="no-such-server")),
            "configure_new_node",
            f"refused: Heat has no resource no-such-server in stack {compute.deployed_server.stack.name} "
            f"(id {compute.deployed_server.stack.id}): The Resource (no-such-server) could not be found.",
        ),
        "a deployment called a server": (
            resource_event(event_data(compute, resource_name="HostsEntryDeployment")),
            "configure_new_node",
            f"refused: the envelope disagrees with Heat about {compute.deployed_server.stack.name}/"
            "HostsEntryDeployment: resource_type OS::Heat::DeployedServer (Heat: OS::Heat::SoftwareDeployment)",
        ),
        "a stack name that is not the stack's": (
            resource_event(event_data(compute, owner_stack=controller.deployed_server.stack.name)),
            "configure_new_node",
            "could not be found",
        ),
    }
    publish_all(settings, [envelope for envelope, _, _ in forged.values()])
    audit = AuditLog.open(settings.database())
    for what, (envelope, handler, reason) in forged.items():  # failed, not dead: refused, not retried out
        run = run_ends(audit, envelope, handler, "failed")
        assert reason in run["error"] and "\n" not in run["error"], what
        step = check_step(audit, run)
        assert step["status"] == "failed" and reason in step["error"], what
    heat_said = check_step(audit, run_ends(audit, forged["another role's member"][0], "configure_new_node", "failed"))
    assert (heat_said["detail"]["heat"]["role"], heat_said["detail"]["heat"]["index"]) == (COMPUTE, 0)
    assert heat_said["detail"]["envelope"]["role"] == CONTROLLER
    assert node_files(oc) == before, "no node's files changed"
    assert all(not node.commands for node in oc.nodes.values()), "no command ran on any node"
    assert oc.nodes[controller.host].files[settings.agent_config_path] == BEFORE


def test_the_genuine_event_configures_the_right_node_and_only_it(cloud):
    oc, settings = cloud
    compute = member(oc, COMPUTE, 0)
    before = node_files(oc)
    # as Heat's own event shows it before the resource has its id: its physical resource name
    genuine = resource_event(event_data(compute, physical_resource_id=compute.deployed_server.placeholder))
    publish_all(settings, [genuine])
    audit = AuditLog.open(settings.database())
    run = run_ends(audit, genuine, "configure_new_node", "succeeded", timeout=60)
    config = oc.nodes[compute.host].files[settings.agent_config_path].decode()
    assert f"metadata_url={compute.metadata_url}\n" in config
    assert {p.client for p in oc.metadata.polls_of(compute.metadata_url)} == {compute.host}
    for address, files in node_files(oc).items():
        if address != compute.host:
            assert files == before[address], f"{address} was not touched"
    step = check_step(audit, run)
    assert (
        step["status"] == "succeeded"
        and step["detail"]["heat"]["physical_resource_id"] == compute.deployed_server.physical_id
    )


def test_a_newline_in_heats_metadata_is_refused_and_writes_no_line(cloud):
    oc, settings = cloud
    compute = member(oc, COMPUTE, 0)
    injected = "\n[DEFAULT]\ncommand=/usr/bin/touch /tmp/owned"
    with oc.heat.lock:
        compute.deployed_server.metadata["os-collect-config"]["request"]["metadata_url"] += injected
    before = node_files(oc)
    event = resource_event(event_data(compute))
    publish_all(settings, [event])
    run = run_ends(AuditLog.open(settings.database()), event, "configure_new_node", "failed")
    assert run["error"] == (
        f"refused: the metadata of {COMPUTE}[0] in Heat: os-collect-config "
        "request.metadata_url holds a control character (U+000A): refused, it would change "
        "the meaning of the node's agent configuration"
    )
    assert node_files(oc) == before
    assert not any(b"/tmp/owned" in content for files in node_files(oc).values() for content in files.values())


def test_values_bound_for_an_agent_configuration_are_checked_and_urls_encoded():
    layout = AgentLayout("ini", "/etc/os-collect-config.conf", "/t", "/l", "/c", "os-collect-config", 30, False)
    temp_url = "http://192.0.2.1:8080/v1/AUTH_x/ov-c/obj?temp_url_sig=ab12&temp_url_expires=1700000000"
    assert AgentSource.from_metadata({"request": {"metadata_url": temp_url}}).settings["metadata_url"] == temp_url
    spaced = AgentSource.from_metadata({"request": {"metadata_url": "http://192.0.2.1/a b/100%?x=1 2"}})
    assert spaced.settings["metadata_url"] == "http://192.0.2.1/a%20b/100%25?x=1%202"
    heat = {
        "auth_url": "http://192.0.2.1/identity/v3",
        "user_id": "u",
        "password": "p\rw",
        "project_id": "p",
        "stack_id": "s/1",
        "resource_name": "deployed-server",
    }
    refusals = [
        (
            lambda: AgentSource.from_metadata({"heat": heat}),
            "os-collect-config heat.password holds a control character (U+000D)",
        ),
        (
            lambda: AgentSource.from_metadata({"request": {"metadata_url": "file:///etc/shadow"}}),
            "os-collect-config request.metadata_url is not an http(s) URL",
        ),
        (
            lambda: AgentSource.from_metadata({"request": {"metadata_url": "http://a b/"}}),
            "os-collect-config request.metadata_url is not an http(s) URL",
        ),
        (
            lambda: AgentSource.from_metadata({"request": {"metadata_url": {"nested": "x"}}}),
            "os-collect-config request.metadata_url is not a text value",
        ),
        (
            lambda: layout.render(AgentSource("request", (("metadata_url", "http://h/\u2028command=x"),))),
            "os-collect-config request.metadata_url holds a control character (U+2028)",
        ),
    ]
    for call, message in refusals:
        with pytest.raises(UnsafeValue) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)
        assert "p\rw" not in str(caught.value), "a refusal never shows the value: it may be a secret"
    rendered = layout.render(spaced).decode()
    assert rendered.count("command=") == 1 and rendered.count("[DEFAULT]") == 1


@pytest.fixture
def heat_api():
    oc = Overcloud.start(small_scenario())
    yield oc, oc.connect()
    oc.stop()


@pytest.mark.parametrize("name", ["a b", "a/b", "a?b=c", "a#b", "../../x", "sp ace/sl?ash#hash%2F"])
def test_names_reach_heats_api_whole_as_one_quoted_path_segment(heat_api, name):
    """Each call's request, as the simulated Heat API receives it: the name quoted whole, in its
    place (a fault aimed at exactly that path answers 500, so its hit is the proof)."""
    oc, conn = heat_api
    stack = member(oc, COMPUTE, 0).deployed_server.stack
    q = quote(name, safe="")
    base = f"/heat/v1/{oc.heat.project_id}/stacks"
    calls = [
        (
            lambda: deployed_server(conn, name, stack.id, "deployed-server"),
            f"{base}/{q}/{stack.id}/resources/deployed-server",
        ),
        (
            lambda: deployed_server(conn, stack.name, name, "deployed-server"),
            f"{base}/{stack.name}/{q}/resources/deployed-server",
        ),
        (lambda: deployed_server(conn, stack.name, stack.id, name), f"{base}/{stack.name}/{stack.id}/resources/{q}"),
        (
            lambda: agent_source(conn, DeployedServer(stack.name, stack.id, name, "", "", None, None)),
            f"{base}/{stack.name}/{stack.id}/resources/{q}/metadata",
        ),
        (lambda: events_after(conn, name, stack.id, None), f"{base}/{q}/{stack.id}/events"),
        (lambda: find_stack(conn, name), f"{base}/{q}"),
    ]
    for call, path in calls:
        fault = oc.faults.add(Fault("api_error", f"^{re.escape(path)}$", count=1, status=500))
        with pytest.raises(HeatError):
            call()
        assert fault.hits == 1, f"the request reached {path}"
    fault = oc.faults.add(
        Fault(
            "api_error",
            f"^{re.escape(base)}/{re.escape(stack.name)}/{stack.id}/resources/{re.escape(q)}$",
            count=1,
            status=500,
        )
    )
    assert resource_type(conn, stack.name, stack.id, name) is None and fault.hits == 1


def test_a_resource_name_cannot_walk_out_of_its_stack(heat_api):
    oc, conn = heat_api
    compute, controller = member(oc, COMPUTE, 0).deployed_server, member(oc, CONTROLLER, 1).deployed_server
    escape = f"../../{controller.stack.name}/{controller.stack.id}/resources/deployed-server"
    with pytest.raises(NotInHeat) as caught:
        deployed_server(conn, compute.stack.name, compute.stack.id, escape)
    assert unquote(re.search(r"The Resource \((.*)\) could not be found", caught.value.explanation)[1]) == escape


def test_heat_names_a_server_by_its_nesting_and_refuses_what_cannot_be_addressed(heat_api):
    oc, conn = heat_api
    servers = {s.label: s for s in deployed_servers(conn, "overcloud")}
    assert sorted(servers) == [f"{COMPUTE}[0]", f"{CONTROLLER}[0]", f"{CONTROLLER}[1]"]
    for m in oc.heat.members:
        one = deployed_server(conn, m.deployed_server.stack.name, m.deployed_server.stack.id, "deployed-server")
        assert one == servers[f"{m.role}[{m.index}]"] and one.physical_id == m.deployed_server.physical_id
    stack = member(oc, COMPUTE, 0).deployed_server.stack
    with pytest.raises(NotADeployedServer) as caught:
        deployed_server(conn, stack.name, stack.id, "HostsEntryDeployment")
    assert caught.value.resource_type == "OS::Heat::SoftwareDeployment"
    for args, what in [
        (("", stack.id, "deployed-server"), "the stack name is empty"),
        ((stack.name, "", "deployed-server"), "the stack id is empty"),
        ((stack.name, stack.id, ""), "the resource name is empty"),
    ]:
        with pytest.raises(HeatError) as refused:
            deployed_server(conn, *args)
        assert str(refused.value) == f"{what}: no Heat API path can name it"
