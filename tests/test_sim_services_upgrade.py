"""What the pre-upgrade validations read from the simulator: Neutron's agents, Ironic's nodes, Cinder's
and Nova's services, through unmodified openstacksdk and the operators' own `openstack` CLI."""

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest
from openstack import exceptions

from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import load_scenario

OPENSTACK = str(Path(sys.executable).with_name("openstack"))
CONTROLLERS = [f"overcloud-controller-{i}" for i in range(3)]
COMPUTES = ["compute-10.localdomain", "compute-11.localdomain", "compute-12.localdomain"]


@pytest.fixture(scope="module")
def overcloud():
    oc = Overcloud.start(load_scenario())
    yield oc
    oc.stop()


@pytest.fixture
def conn(overcloud):
    yield overcloud.connect()
    overcloud.faults.clear()
    for host in COMPUTES:
        overcloud.nova.power(host, True)


def get(overcloud, path: str, **headers) -> tuple[int, dict, dict]:
    """A request without a token (the version documents need none)."""
    request = urllib.request.Request(overcloud.base_url + path, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    return response.status, dict(response.headers), json.loads(response.read())


def test_the_sdk_lists_agents_services_and_nodes_without_discovery_warnings(conn, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        agents = list(conn.network.agents())
        by_host = {}
        for agent in agents:
            by_host.setdefault(agent.host, set()).add(agent.agent_type)
        assert by_host == {
            **{
                f"{c}.localdomain": {"Open vSwitch agent", "DHCP agent", "L3 agent", "Metadata agent"}
                for c in CONTROLLERS
            },
            **{c: {"Open vSwitch agent"} for c in COMPUTES},
        }
        assert all(a.is_alive and a.is_admin_state_up for a in agents)
        [l3] = conn.network.agents(host="overcloud-controller-1.localdomain", agent_type="L3 agent")
        assert (l3.binary, l3.topic, l3.availability_zone) == ("neutron-l3-agent", "l3_agent", "nova")
        assert conn.network.get_agent(l3.id).configuration["agent_mode"] == "legacy"
        assert len(list(conn.network.agents(binary="neutron-openvswitch-agent"))) == 6

        volume = {(s.binary, s.host): s for s in conn.block_storage.services()}
        assert set(volume) == {("cinder-scheduler", c) for c in CONTROLLERS} | {
            ("cinder-volume", "hostgroup@tripleo_ceph")
        }
        assert {(s.availability_zone, s.status, s.state) for s in volume.values()} == {("nova", "enabled", "up")}
        assert [s.host for s in conn.block_storage.services(binary="cinder-volume", host="hostgroup")] == [
            "hostgroup@tripleo_ceph"
        ]
        assert sorted(s.host for s in conn.compute.services()) == COMPUTES

        nodes = list(conn.baremetal.nodes(details=True))
        assert [n.name for n in nodes] == ["compute-10", "compute-11", "compute-12"]
        assert {(n.provision_state, n.power_state, n.is_maintenance, n.fault) for n in nodes} == {
            ("active", "power on", False, None)
        }
        assert all(n.instance_id for n in nodes)
        assert conn.baremetal.get_node("compute-11").id == nodes[1].id
    discovery = [w for w in caught if "discover" in str(w.message).lower() or "version" in str(w.message).lower()]
    assert discovery == [], [str(w.message) for w in discovery]
    assert not [r for r in caplog.records if r.name.startswith(("keystoneauth", "openstack"))], caplog.text


def test_a_compute_hosts_agent_is_dead_while_its_node_is_down(overcloud, conn):
    overcloud.nova.power("compute-11.localdomain", False)
    alive = {a.host: a.is_alive for a in conn.network.agents(agent_type="Open vSwitch agent")}
    assert [h for h, up in alive.items() if not up] == ["compute-11.localdomain"]
    assert [a.host for a in conn.network.agents(is_alive=False)] == ["compute-11.localdomain"]
    overcloud.nova.power("compute-11.localdomain", True)
    assert all(a.is_alive for a in conn.network.agents())


def test_the_ironic_maintenance_fault_puts_exactly_that_node_in_maintenance(overcloud, conn):
    nodes = {n.name: n for n in conn.baremetal.nodes()}
    overcloud.faults.add(Fault("ironic_maintenance", "compute-11"))
    overcloud.faults.add(Fault("ironic_maintenance", nodes["compute-12"].id))  # by uuid too
    shown = {n.name: (n.is_maintenance, n.maintenance_reason, n.fault) for n in conn.baremetal.nodes(details=True)}
    assert shown == {
        "compute-10": (False, None, None),
        "compute-11": (True, "simulated maintenance", None),
        "compute-12": (True, "simulated maintenance", None),
    }
    assert sorted(n.name for n in conn.baremetal.nodes(maintenance=True)) == ["compute-11", "compute-12"]
    overcloud.faults.clear()
    assert not any(n.is_maintenance for n in conn.baremetal.nodes())


def test_errors_and_version_documents_are_the_real_ones(overcloud, conn):
    missing = conn.network.get("/agents/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "NeutronError": {"type": "AgentNotFound", "message": "Agent nope could not be found.", "detail": ""}
    }
    refused = conn.network.get("/agents?colour=red").json()["NeutronError"]
    assert refused["message"] == "['colour'] is invalid attribute for filtering"
    with pytest.raises(exceptions.NotFoundException) as caught:
        conn.baremetal.get_node("nope")
    assert caught.value.details == "Node nope could not be found."
    body = conn.baremetal.get("/nodes/nope", microversion="1.50").json()
    assert json.loads(body["error_message"]) == {
        "faultcode": "Client",
        "faultstring": "Node nope could not be found.",
        "debuginfo": None,
    }
    status, headers, body = get(overcloud, "/baremetal/v1/", **{"X-OpenStack-Ironic-API-Version": "1.200"})
    assert status == 406 and headers["X-OpenStack-Ironic-API-Maximum-Version"] == "1.87"
    assert json.loads(body["error_message"])["description"] == (
        "Version 1.200 was requested but the minor version is not supported by this service. "
        "The supported version range is: [1.1, 1.87]."
    )
    status, headers, body = get(overcloud, "/baremetal/", **{"OpenStack-API-Version": "baremetal 1.50"})
    assert status == 200 and headers["X-OpenStack-Ironic-API-Version"] == "1.50"
    assert body["default_version"]["version"] == "1.87" and body["default_version"]["min_version"] == "1.1"
    assert get(overcloud, "/network/")[2]["versions"][0]["id"] == "v2.0"


def test_the_operators_cli_lists_agents_services_and_nodes(overcloud, conn, tmp_path):
    overcloud.faults.add(Fault("ironic_maintenance", "compute-10"))
    env = {**os.environ, **overcloud.environment(), "HOME": str(tmp_path)}
    commands = {
        "agents": ["network", "agent", "list"],
        "volume": ["volume", "service", "list"],
        "compute": ["compute", "service", "list"],
        "nodes": ["baremetal", "node", "list"],
        "missing": ["baremetal", "node", "show", "nope"],
    }
    running = {
        k: subprocess.Popen(
            [OPENSTACK, *args, *(["-f", "json"] if k != "missing" else [])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, args in commands.items()
    }
    done = {k: (p.communicate(timeout=120), p.returncode) for k, p in running.items()}
    for key in ("agents", "volume", "compute", "nodes"):
        assert done[key][1] == 0, done[key][0][1]
    out = {k: json.loads(done[k][0][0]) for k in ("agents", "volume", "compute", "nodes")}
    assert len(out["agents"]) == 15 and {a["Alive"] for a in out["agents"]} == {True}
    assert {(s["Binary"], s["Host"]) for s in out["volume"]} >= {
        ("cinder-volume", "hostgroup@tripleo_ceph"),
        ("cinder-scheduler", "overcloud-controller-0"),
    }
    assert sorted(s["Host"] for s in out["compute"]) == COMPUTES
    assert {n["name"]: n["maintenance"] for n in out["nodes"]} == {
        "compute-10": True,
        "compute-11": False,
        "compute-12": False,
    }
    (_, stderr), code = done["missing"]
    assert code != 0 and "Node nope could not be found. (HTTP 404)" in stderr
