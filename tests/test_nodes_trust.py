"""``stackreflex nodes trust --known-hosts PATH``: an operator records trust in the service
user's known_hosts (say /etc/stackreflex/known_hosts), not in their own configured one."""

import json
import stat

import pytest

from stackreflex.tasks.ssh import SSHError, open_ssh, run
from stackreflex_sim.scenario import Role, Scenario

from .conftest import make_settings, overcloud_with_nodes, run_cli


@pytest.fixture
def nodes(tmp_path, sqlite_url):
    scenario = Scenario(roles=[Role("ComputeDeployedServer", 2, ["127.0.0.31", "127.0.0.32"])])
    oc, settings = overcloud_with_nodes(
        tmp_path,
        scenario,
        lambda oc: {"roles": {"ComputeDeployedServer": [f"{h}:{n.port}" for h, n in oc.nodes.items()]}},
        make_settings(None, sqlite_url, "trust"),
    )
    yield oc, settings
    oc.stop()


def test_trust_records_the_keys_in_the_given_file_which_the_service_then_uses(nodes, tmp_path):
    oc, settings = nodes
    operator_own = settings.ssh_known_hosts
    before = operator_own.read_text()
    service_file = tmp_path / "etc" / "stackreflex" / "known_hosts"
    service_file.parent.mkdir(parents=True)
    service_file.write_text("")
    service_file.chmod(0o640)
    targets = [f"{n.address}:{n.port}" for n in oc.nodes.values()]

    first = run_cli(settings, tmp_path, "nodes", "trust", *targets, "--known-hosts", str(service_file), "-f", "json")
    assert first.returncode == 0, first.stderr
    assert sorted(r["recorded"] for r in json.loads(first.stdout)) == ["added"] * len(targets)
    assert operator_own.read_text() == before, "the configured known_hosts is left alone"
    recorded = service_file.read_text().splitlines()
    assert sorted(line.split()[0] for line in recorded) == sorted(f"[{n.address}]:{n.port}" for n in oc.nodes.values())
    assert stat.S_IMODE(service_file.stat().st_mode) == 0o640, "the file keeps the mode it was given"

    again = run_cli(settings, tmp_path, "nodes", "trust", *targets, "--known-hosts", str(service_file), "-f", "json")
    assert [r["recorded"] for r in json.loads(again.stdout)] == ["unchanged"] * len(targets)

    # the service, whose ssh_known_hosts points at that file, reaches the nodes; without it, refused
    service = settings.model_copy(update={"ssh_known_hosts": service_file})
    node = next(iter(oc.nodes.values()))
    with open_ssh(service, node.address, port=node.port) as ssh:
        assert run(ssh, "hostname")[0] == 0
    with pytest.raises(SSHError, match=r"host key not trusted: .* is not in .*empty"):
        open_ssh(settings.model_copy(update={"ssh_known_hosts": tmp_path / "empty"}), node.address, port=node.port)


def test_a_known_hosts_path_that_cannot_be_written_is_one_clear_error(nodes, tmp_path):
    oc, settings = nodes
    (tmp_path / "a-file").write_text("")
    node = next(iter(oc.nodes.values()))
    bad = tmp_path / "a-file" / "known_hosts"
    result = run_cli(settings, tmp_path, "nodes", "trust", f"{node.address}:{node.port}", "--known-hosts", str(bad))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr and "cannot write" in result.stderr
