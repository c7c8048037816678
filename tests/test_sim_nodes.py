"""Simulated nodes over real SSH (paramiko over TCP): keys, host keys, commands, reboot,
and the os-collect-config agent that polls its metadata URL once configured."""

import base64
import json

import paramiko
import pytest

from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .conftest import wait_for

OAC_TEMPLATE = "/usr/libexec/os-apply-config/templates/etc/os-collect-config.conf"


@pytest.fixture
def client_key():
    return paramiko.ECDSAKey.generate()


def scenario() -> Scenario:
    return Scenario(
        deployment_time=0.2,
        reboot_time=1.5,
        roles=[Role("ComputeDeployedServer", 2, ["127.0.0.21", "127.0.0.22", "127.0.0.23"])],
    )


@pytest.fixture
def overcloud(tmp_path, client_key):
    oc = Overcloud.start(scenario(), state_dir=tmp_path / "hostkeys", authorized_keys=[client_key])
    yield oc
    oc.stop()


def ssh(oc: Overcloud, address: str, key: paramiko.PKey, known: list[str] | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    for line in known if known is not None else oc.known_hosts_lines():
        host, kind, b64 = line.split()
        client.get_host_keys().add(host, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address,
        port=oc.nodes[address].port,
        username="stack",
        pkey=key,
        timeout=5,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def run(client: paramiko.SSHClient, command: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    i, o, e = client.exec_command(command, timeout=10)
    if stdin is not None:
        i.write(stdin)
        i.channel.shutdown_write()
    return o.channel.recv_exit_status(), o.read().decode(), e.read().decode()


def agent_config(url: str) -> bytes:
    return (
        f"[DEFAULT]\ncollectors=request\ncommand=os-refresh-config\npolling_interval=0.3\n\n"
        f"[request]\nmetadata_url={url}\n"
    ).encode()


def test_key_auth_works_and_a_wrong_key_is_refused(overcloud, client_key):
    with ssh(overcloud, "127.0.0.21", client_key) as client:
        assert run(client, "hostname") == (0, "overcloud-compute-0\n", "")
        assert run(client, "frobnicate --now")[0] == 127
    with pytest.raises(paramiko.AuthenticationException):
        ssh(overcloud, "127.0.0.21", paramiko.ECDSAKey.generate())


def test_host_keys_are_stable_across_restarts_and_an_unknown_one_is_rejected(tmp_path, client_key):
    first = Overcloud.start(scenario(), state_dir=tmp_path / "hostkeys", authorized_keys=[client_key])
    known = first.known_hosts_lines()
    first.stop()
    again = Overcloud.start(scenario(), state_dir=tmp_path / "hostkeys", authorized_keys=[client_key])
    try:
        assert [line.split()[1:] for line in again.known_hosts_lines()] == [line.split()[1:] for line in known]
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            ssh(again, "127.0.0.21", client_key, known=[])
    finally:
        again.stop()


def test_reboot_drops_the_node_then_it_comes_back_with_its_enabled_services(overcloud, client_key):
    with ssh(overcloud, "127.0.0.22", client_key) as client:
        run(client, "sudo systemctl start os-collect-config")
        assert run(client, "sudo reboot")[0] == 0
    wait_for(lambda: not overcloud.nodes["127.0.0.22"].reachable, timeout=5, message="node down")
    with pytest.raises((OSError, paramiko.SSHException)):
        ssh(overcloud, "127.0.0.22", client_key)
    wait_for(lambda: overcloud.nodes["127.0.0.22"].reachable, timeout=10, message="node back")
    with ssh(overcloud, "127.0.0.22", client_key) as client:
        assert run(client, "systemctl is-active os-collect-config") == (0, "active\n", "")


def test_a_configured_agent_polls_its_own_url_runs_its_deployments_and_its_member_completes(overcloud, client_key):
    first, second = overcloud.heat.members
    with ssh(overcloud, first.host, client_key) as client:
        status, _, _ = run(
            client,
            f"sudo rm -f {OAC_TEMPLATE} && sudo install -m 0600 /dev/stdin "
            "/etc/os-collect-config.conf && sudo systemctl restart os-collect-config",
            agent_config(first.metadata_url),
        )
        assert status == 0
        assert run(client, "stat -c %a /etc/os-collect-config.conf") == (0, "600\n", "")
        wait_for(
            lambda: run(client, "test -f /var/lib/os-collect-config/request.json")[0] == 0,
            message="collector cache written",
        )
        cached = json.loads(run(client, "cat /var/lib/os-collect-config/request.json")[1])
        assert cached["os-collect-config"]["request"]["metadata_url"] == first.metadata_url
    polls = overcloud.metadata.polls_of(first.metadata_url)
    assert polls and {p.client for p in polls} == {first.host}
    wait_for(lambda: first.member.status == "CREATE_COMPLETE", timeout=10, message="member complete")
    assert {d.name: d.status for d in first.deployments} == dict.fromkeys(
        ["InstanceIdDeployment", "HostsEntryDeployment", "NetworkDeployment", "ComputeDeployedServerDeployment"],
        "COMPLETE",
    )
    assert second.member.status == "CREATE_IN_PROGRESS"
    # the other layout: a JSON file in local-data, a directory os-collect-config does not make
    local = json.dumps(
        {
            "os-collect-config": {
                "collectors": ["request", "local"],
                "polling_interval": 0.3,
                "request": {"metadata_url": second.metadata_url},
            }
        }
    ).encode()
    with ssh(overcloud, second.host, client_key) as client:
        target = "/var/lib/os-collect-config/local-data/deployed-server.json"
        status, _, err = run(client, f"sudo install -m 0600 /dev/stdin {target}", local)
        assert status == 1 and "No such file or directory" in err
        run(
            client,
            f"sudo install -d -m 0700 /var/lib/os-collect-config/local-data && sudo install -m 0600 "
            f"/dev/stdin {target} && sudo systemctl restart os-collect-config",
            local,
        )
    wait_for(lambda: overcloud.heat.root.status == "CREATE_COMPLETE", timeout=10, message="stack complete")
    assert {p.client for p in overcloud.metadata.polls_of(second.metadata_url)} == {second.host}


def test_ssh_faults_strike_as_a_broken_node_would(overcloud, client_key):
    from stackreflex_sim.faults import Fault

    overcloud.faults.add(Fault("node_unreachable", "127.0.0.21", count=1))
    with pytest.raises((paramiko.SSHException, OSError, EOFError)):
        ssh(overcloud, "127.0.0.21", client_key)
    overcloud.faults.add(Fault("host_key_changed", "127.0.0.21", count=1))
    with pytest.raises(paramiko.BadHostKeyException):
        ssh(overcloud, "127.0.0.21", client_key)
    overcloud.faults.add(Fault("ssh_auth_refused", "127.0.0.21", count=1))
    with pytest.raises(paramiko.AuthenticationException):
        ssh(overcloud, "127.0.0.21", client_key)
    overcloud.faults.add(Fault("command_failure", "127.0.0.21", match="systemctl", count=1))
    with ssh(overcloud, "127.0.0.21", client_key) as client:  # every fault struck its count and is gone
        assert run(client, "hostname")[0] == 0
        status, _, err = run(client, "sudo systemctl restart os-collect-config")
        assert status == 1 and "simulated failure" in err
        assert run(client, "sudo systemctl restart os-collect-config")[0] == 0
