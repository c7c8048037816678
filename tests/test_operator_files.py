"""The operator's own files: ``~/.ssh/config`` (HostName, User, Port, IdentityFile, ProxyJump) and
TripleO's ``tripleo-ansible-inventory.yaml`` / plain Ansible inventories, against simulated nodes
over real SSH (a node forwarding ``direct-tcpip`` as sshd does, to be another's jump host)."""

import json
import textwrap
from pathlib import Path

import paramiko
import pytest

from stackreflex.core.settings import Settings
from stackreflex.tasks.inventory import Host, InventoryError, load_inventory
from stackreflex.tasks.ssh import SSHError, open_ssh, run, trust_host
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .conftest import run_cli, wait_for

CTL0, CTL1, CMP0, UNDERCLOUD = "127.0.0.81", "127.0.0.82", "127.0.0.91", "127.0.0.80"
#: Not the simulator's default: a connection as ``stack`` (stackreflex's default user) is refused.
NODE_USER = "tripleo-admin"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """Two controllers, a compute and an undercloud whose deployment completes at once; every host
    key recorded in ``known_hosts``; the client key outside the settings (the files give it)."""
    base = tmp_path_factory.mktemp("opfiles")
    key = paramiko.ECDSAKey.generate()
    (base / ".ssh").mkdir()
    key.write_private_key_file(str(base / ".ssh" / "id_sim"))
    scenario = Scenario(
        signal_transport="NO_SIGNAL",
        speed=20,
        ssh_user=NODE_USER,
        undercloud=UNDERCLOUD,
        roles=[
            Role("ControllerDeployedServer", 2, [CTL0, CTL1]),
            Role("ComputeDeployedServer", 1, [CMP0]),
        ],
    )
    oc = Overcloud.start(scenario, state_dir=base / "hostkeys", authorized_keys=[key])
    plain = Settings(ssh_known_hosts=base / "known_hosts", ssh_config_file=None)
    for node in oc.nodes.values():
        trust_host(plain, node.address, node.port)
    wait_for(lambda: oc.heat.root.status == "CREATE_COMPLETE", timeout=60, message="the stack to complete")
    yield oc, base
    oc.stop()


@pytest.fixture
def home(cloud, tmp_path, monkeypatch):
    """``~`` is the module's directory (its ``.ssh/id_sim``), as on an undercloud."""
    monkeypatch.setenv("HOME", str(cloud[1]))
    return cloud[1]


def ssh_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(textwrap.dedent(text))
    return path


def settings_for(cloud, config: Path | None, **explicit) -> Settings:
    return Settings(ssh_known_hosts=cloud[1] / "known_hosts", ssh_config_file=config, **explicit)


def hostname_over(client: paramiko.SSHClient) -> str:
    with client:
        return run(client, "hostname")[1].strip()


# -- ~/.ssh/config --------------------------------------------------------------------------------


def test_a_host_alias_gives_the_address_port_user_and_identity_files(cloud, home, tmp_path):
    oc, _ = cloud
    config = ssh_config(
        tmp_path,
        f"""\
        Host ctl0
            HostName {CTL0}
            Port {oc.nodes[CTL0].port}
            User {NODE_USER}
            IdentityFile ~/.ssh/id_missing
            IdentityFile ~/.ssh/id_sim
        """,
    )
    assert hostname_over(open_ssh(settings_for(cloud, config), "ctl0")) == "overcloud-controller-0"
    # without the config, the same name is no node at all
    with pytest.raises(SSHError, match="node ctl0"):
        open_ssh(settings_for(cloud, None, ssh_key_file=home / ".ssh" / "id_sim"), "ctl0")


@pytest.mark.alone  # its relay-closed wait missed (30 s) beside another test file on two cores
def test_a_proxyjump_chain_reaches_the_node_through_each_jump_host_and_closes_them_with_the_client(
    cloud, home, tmp_path
):
    oc, _ = cloud
    config = ssh_config(
        tmp_path,
        f"""\
        Host ctl1
            HostName {CTL1}
            Port {oc.nodes[CTL1].port}
            ProxyJump jump-a,{NODE_USER}@{CTL0}:{oc.nodes[CTL0].port}
        Host jump-a
            HostName {CMP0}
            Port {oc.nodes[CMP0].port}
        Host *
            User {NODE_USER}
            IdentityFile ~/.ssh/id_sim
        """,
    )
    second, target = oc.nodes[CTL0], oc.nodes[CTL1]
    seen = len(target.peers), len(second.peers)
    client = open_ssh(settings_for(cloud, config), "ctl1")
    jumps = [c.get_transport() for c in client.jumps]
    assert run(client, "hostname")[1] == "overcloud-controller-1\n"
    # the target was dialled by the second jump host, which was dialled by the first
    assert [p[0] for p in target.peers[seen[0] :]] == [CTL0]
    assert [p[0] for p in second.peers[seen[1] :]] == [CMP0]
    assert len(jumps) == 2 and all(t is not None and t.is_active() for t in jumps)
    client.close()
    assert client.jumps == [] and not any(t.is_active() for t in jumps)
    # the jump hosts' relays end with the connection: the target's server side goes down too
    wait_for(lambda: not any(t.is_active() for t in target._transports[-1:]), timeout=30, message="relay closed")


def test_an_untrusted_jump_host_is_refused_naming_it_and_its_config_line(cloud, home, tmp_path):
    oc, base = cloud
    config = ssh_config(
        tmp_path,
        f"""\
        Host *
            User {NODE_USER}
            IdentityFile ~/.ssh/id_sim

        Host ctl1
            HostName {CTL1}
            Port {oc.nodes[CTL1].port}
            ProxyJump bastion
        Host bastion
            HostName {CMP0}
            Port {oc.nodes[CMP0].port}
        """,
    )
    # a known_hosts file that has the target but not its jump host
    known = tmp_path / "known_hosts"
    known.write_text(
        "".join(line + "\n" for line in (base / "known_hosts").read_text().splitlines() if CMP0 not in line)
    )
    settings = Settings(ssh_known_hosts=known, ssh_config_file=config)
    message = rf"ProxyJump bastion \({config} line 8\): host key not trusted: \[{CMP0}\]:{oc.nodes[CMP0].port}"
    with pytest.raises(SSHError, match=message):
        open_ssh(settings, "ctl1")
    # nor can the target be trusted through it: the jump host comes first
    with pytest.raises(SSHError, match=message):
        trust_host(settings, "ctl1", known_hosts=tmp_path / "new_known_hosts")
    assert not (tmp_path / "new_known_hosts").exists()


def test_nodes_trust_records_a_node_reached_through_its_jump_host(cloud, home, tmp_path):
    oc, _ = cloud
    target = oc.nodes[CTL1]
    config = ssh_config(
        tmp_path,
        f"""\
        Host ctl1
            HostName {CTL1}
            Port {target.port}
            ProxyJump {NODE_USER}@{CMP0}:{oc.nodes[CMP0].port}
        Host *
            IdentityFile ~/.ssh/id_sim
        """,
    )
    known = tmp_path / "known_hosts"
    known.write_text("".join(line + "\n" for line in oc.known_hosts_lines() if CTL1 not in line))
    seen = len(target.peers)
    done = run_cli(
        settings_for(cloud, config),
        tmp_path,
        "nodes",
        "trust",
        "ctl1",
        "--known-hosts",
        str(known),
        "-f",
        "json",
        env={"STACKREFLEX_SSH_CONFIG_FILE": str(config), "HOME": str(home)},
    )
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert (row["node"], row["recorded"], row["fingerprint"]) == ("ctl1", "added", target.key.fingerprint)
    assert [p[0] for p in target.peers[seen:]] == [CMP0]  # read through the jump host
    recorded = paramiko.HostKeys(str(known)).lookup(f"[{CTL1}]:{target.port}")
    assert recorded is not None and recorded[target.key.get_name()] == target.key
    # and the node is then reachable through it, host key checked
    assert hostname_over(open_ssh(settings_for(cloud, config, ssh_user=NODE_USER), "ctl1", known_hosts=known))


def test_a_forward_to_an_address_off_the_loopback_is_administratively_prohibited(cloud, home, tmp_path):
    oc, _ = cloud
    config = ssh_config(
        tmp_path,
        f"""\
        Host far
            HostName 192.0.2.10
            ProxyJump {CMP0}:{oc.nodes[CMP0].port}
        Host *
            User {NODE_USER}
            IdentityFile ~/.ssh/id_sim
        """,
    )
    with pytest.raises(SSHError, match=r"ProxyJump 127.0.0.91 .*cannot forward to 192.0.2.10:22.*prohibited"):
        open_ssh(settings_for(cloud, config), "far")


def test_explicit_settings_and_the_inventory_win_over_the_ssh_config(cloud, home, tmp_path):
    oc, _ = cloud
    port = oc.nodes[CTL0].port
    config = ssh_config(
        tmp_path,
        f"""\
        Host {CTL0}
            User nobody
            Port 1
            IdentityFile ~/.ssh/id_sim
        """,
    )
    # the config alone: its user and port are used, and they are wrong
    with pytest.raises(SSHError, match=rf"node {CTL0}: .*port 1\b"):
        open_ssh(settings_for(cloud, config), CTL0)
    # settings the operator set win over it
    explicit = settings_for(cloud, config, ssh_user=NODE_USER, ssh_port=port)
    assert hostname_over(open_ssh(explicit, CTL0)) == "overcloud-controller-0"
    # the inventory's word for the node wins over both
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[Controller]\nctl0 ansible_host={CTL0} ansible_port={port} ansible_user={NODE_USER}\n")
    wrong = settings_for(cloud, config, ssh_user="stack", ssh_port=2, inventory=inventory)
    assert hostname_over(open_ssh(wrong, CTL0)) == "overcloud-controller-0"


# -- inventories ----------------------------------------------------------------------------------


def tripleo_inventory(oc: Overcloud) -> str:
    """What ``tripleo-ansible-inventory --static-yaml-inventory`` writes (tripleo-common's
    ``TripleoInventory.list(dynamic=False)``, as its test data has it), for the simulated nodes;
    ``ansible_port`` added since the simulated sshds listen on their own ports."""

    def host(name: str, address: str) -> str:
        return (
            f"    {name}: {{ansible_host: {address}, ansible_port: {oc.nodes[address].port}, "
            f"canonical_hostname: {name}.localdomain,\n"
            f"      ctlplane_hostname: {name}.ctlplane.localdomain, ctlplane_ip: {address},\n"
            f"      deploy_server_id: 6c1befea-4173-49bd-9507-631cc33f44a2, internal_api_ip: 172.16.2.199}}\n"
        )

    role_vars = textwrap.indent(
        "vars:\n  ansible_ssh_user: {user}\n  bootstrap_server_id: 6c1befea-4173-49bd-9507-631cc33f44a2\n"
        "  serial: '1'\n  tripleo_role_name: {role}\n  tripleo_role_networks: [ctlplane, internal_api]\n",
        "  ",
    )
    return (
        "Undercloud:\n  hosts:\n    undercloud: {}\n  vars:\n    ansible_connection: local\n"
        f"    ansible_host: {UNDERCLOUD}\n    ansible_port: {oc.nodes[UNDERCLOUD].port}\n"
        "    ansible_python_interpreter: /usr/bin/python3\n    ansible_remote_tmp: /tmp/ansible-${USER}\n"
        "    overcloud_admin_password: 9RDyelRD5PT5Jk6q4efjYG6Es\n    plan: overcloud\n"
        "    undercloud_service_list: [tripleo_ironic_conductor]\n"
        # yaml.dump sorts the hosts: -1 after -0, and -10 would come before -2
        "ControllerDeployedServer:\n  hosts:\n"
        + host("overcloud-controller-1", CTL1)
        + host("overcloud-controller-0", CTL0)
        + role_vars.format(user=NODE_USER, role="ControllerDeployedServer")
        + "ComputeDeployedServer:\n  hosts:\n"
        + host("overcloud-novacompute-0", CMP0)
        + role_vars.format(user=NODE_USER, role="ComputeDeployedServer")
        + "overcloud:\n  children:\n    ComputeDeployedServer: {}\n    ControllerDeployedServer: {}\n"
        "  vars: {container_cli: podman, ctlplane_vip: 192.168.24.7}\n"
        "allovercloud:\n  children:\n    overcloud: {}\n"
        "nova_compute:\n  children:\n    ComputeDeployedServer: {}\n  vars: {ansible_ssh_user: heat-admin}\n"
        "mysql:\n  children:\n    ControllerDeployedServer: {}\n  vars: {ansible_ssh_user: heat-admin}\n"
        "excluded_overcloud:\n  hosts: {}\n"
    )


def test_tripleo_s_own_inventory_gives_the_roles_hosts_users_and_undercloud(cloud, tmp_path):
    oc, _ = cloud
    path = tmp_path / "tripleo-ansible-inventory.yaml"
    path.write_text(tripleo_inventory(oc))
    inventory = load_inventory(path)
    user, ports = NODE_USER, {a: n.port for a, n in oc.nodes.items()}
    assert inventory.roles == {
        "ControllerDeployedServer": [Host(CTL0, ports[CTL0], user), Host(CTL1, ports[CTL1], user)],
        "ComputeDeployedServer": [Host(CMP0, ports[CMP0], user)],
    }
    # the role's own ansible_ssh_user, not the service groups' (parents: a child's vars win)
    assert inventory.host_for("ComputeDeployedServer", 0).user == NODE_USER
    assert inventory.hostnames["overcloud-novacompute-0"] == Host(CMP0, ports[CMP0], user)
    assert inventory.undercloud == Host(UNDERCLOUD, ports[UNDERCLOUD])
    # numbers in host names order the members, not the alphabet
    many = path.read_text().replace("overcloud-controller-1:", "overcloud-controller-10:")
    many = many.replace("overcloud-controller-0:", "overcloud-controller-2:")
    path.write_text(many)
    assert [h.address for h in load_inventory(path).roles["ControllerDeployedServer"]] == [CTL0, CTL1]


def test_a_plain_ansible_inventory_ini_or_yaml_is_read_with_group_and_host_vars(tmp_path):
    ini = tmp_path / "hosts"
    ini.write_text(
        textwrap.dedent("""\
        # the operator's own
        [Controller]
        ctl-0 ansible_host=192.0.2.10 ansible_port=2222
        ctl-1 ansible_host=192.0.2.11 ansible_user=admin ansible_ssh_private_key_file=~/.ssh/ctl

        [Compute]
        192.0.2.20

        [Undercloud]
        undercloud ansible_host=192.0.2.1

        [overcloud:children]
        Controller
        Compute

        [overcloud:vars]
        ansible_user=heat-admin
        """)
    )
    loaded = load_inventory(ini)
    assert loaded.roles == {
        "Controller": [
            Host("192.0.2.10", 2222, "heat-admin"),
            Host("192.0.2.11", None, "admin", Path("~/.ssh/ctl").expanduser()),
        ],
        "Compute": [Host("192.0.2.20", None, "heat-admin")],
    }
    assert loaded.undercloud == Host("192.0.2.1") and loaded.hostnames["ctl-1"].address == "192.0.2.11"
    yaml_form = tmp_path / "hosts.yaml"
    yaml_form.write_text(
        textwrap.dedent("""\
        all:
          vars: {ansible_user: root}
          children:
            web:
              hosts:
                web-0: {ansible_host: 192.0.2.30}
                web-1: {ansible_host: 192.0.2.31, ansible_user: deploy}
        """)
    )
    assert load_inventory(yaml_form).roles == {
        "web": [Host("192.0.2.30", None, "root"), Host("192.0.2.31", None, "deploy")]
    }
    # stackreflex's own form is still read as before
    own = tmp_path / "own.yaml"
    own.write_text("roles: {Compute: ['192.0.2.30:2222']}\nundercloud: 192.0.2.1\n")
    assert load_inventory(own).roles == {"Compute": [Host("192.0.2.30", 2222)]}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[Compute]\ncompute-[0:9] ansible_host=192.0.2.1\n", r"line 2: host ranges \(compute-\[0:9\]\)"),
        ("[Compute]\ncompute-0 ansible_host\n", "line 2: host compute-0: expected key=value"),
        ("Compute:\n  hosts: [a, b]\n", "group Compute: hosts, children and vars must be mappings"),
        ("Compute:\n  hosts:\n    c0: {ansible_port: ssh}\n", "host c0: ansible_port 'ssh' is not a number"),
        ("Compute:\n  host:\n    c0: {}\n", "Compute: neither stackreflex's keys"),
        ("- a\n- b\n", "expected stackreflex's 'roles:"),
        ("a: [b\n", "neither YAML nor an Ansible INI inventory"),
    ],
)
def test_an_inventory_stackreflex_cannot_read_is_refused_naming_the_file_and_why(tmp_path, text, why):
    path = tmp_path / "inventory"
    path.write_text(text)
    with pytest.raises(InventoryError, match=rf"inventory {path}.*{why}"):
        load_inventory(path)


def test_an_inventory_merged_from_several_stacks_is_refused_for_the_stack_s_own(tmp_path):
    path = tmp_path / "merged.yaml"
    role = "  vars: {tripleo_role_name: Compute}\n"
    path.write_text(
        "Compute:\n  children:\n    cell1_Compute: {}\n    overcloud_Compute: {}\n"
        f"cell1_Compute:\n  hosts:\n    cell1-compute-0: {{ansible_host: 192.0.2.10}}\n{role}"
        f"overcloud_Compute:\n  hosts:\n    overcloud-compute-0: {{ansible_host: 192.0.2.20}}\n{role}"
    )
    with pytest.raises(InventoryError, match=r"cell1_Compute and overcloud_Compute.*overcloud-deploy/<stack>"):
        load_inventory(path)


@pytest.mark.slow
def test_validations_reach_every_node_through_tripleo_s_inventory(cloud, home, tmp_path):
    """`stackreflex validate overcloud` with the inventory TripleO wrote: each node found by its
    role and index, reached as the inventory's user (stackreflex's default user is refused)."""
    oc, base = cloud
    path = tmp_path / "tripleo-ansible-inventory.yaml"
    path.write_text(tripleo_inventory(oc))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/audit.db",
        inventory=path,
        ssh_key_file=home / ".ssh" / "id_sim",
        ssh_known_hosts=base / "known_hosts",
    )
    done = run_cli(
        settings,
        tmp_path,
        *("validate", "overcloud", "--only", "failed-units", "--only", "disk-space", "--wait", "-f", "json"),
        env=oc.environment(),
        timeout=90,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    rows = json.loads(done.stdout)
    assert sorted((r["check"], r["target"], r["verdict"]) for r in rows) == [
        (check, node, "pass")
        for check in ("disk-space", "failed-units")
        for node in ("overcloud-compute-0", "overcloud-controller-0", "overcloud-controller-1")
    ]
