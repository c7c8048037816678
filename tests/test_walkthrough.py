"""The README's simulator walkthrough, typed as written in a shell: `sim serve --env-file F`,
`. F`, then stackreflex and the operators' own `openstack` CLI with nothing else set."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from .conftest import assert_no_word_split, serve, shell


def test_the_simulator_walkthrough_works_as_written(simulator):
    env_file, env = simulator
    listed = shell(
        env_file,
        env,
        "openstack stack resource list -n5 --filter name=deployed-server overcloud -f value -c resource_status",
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["CREATE_COMPLETE"] * 5
    status = shell(env_file, env, "stackreflex agents status --stack overcloud -f value -c host -c agent")
    assert status.returncode == 0, status.stdout + status.stderr
    hosts = [line.split()[0] for line in status.stdout.splitlines()]
    assert len(hosts) == 5 and all(h.startswith("127.0.0.") for h in hosts)
    assert all("not configured" in line for line in status.stdout.splitlines()), status.stdout
    configured = shell(env_file, env, "stackreflex agents configure --stack overcloud --wait -f json")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    after = shell(env_file, env, "stackreflex agents status --stack overcloud -f value -c agent")
    assert after.stdout.split() == ["polling"] * 5, after.stdout + after.stderr


def help_examples() -> list[str]:
    """Every ``Example:`` line of every command's --help."""
    from stackreflex.cli.app import COMMANDS, load_command

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    found = []
    for name in COMMANDS:
        for command in walk(load_command(name)):
            for block in re.findall(r"Examples?: (.*?)(?:\n\s*\n|$)", command.help or "", re.S):
                found += [line.strip() for line in block.splitlines() if line.strip().startswith("stackreflex ")]
    return found


#: Examples whose run id is a placeholder: they run as written and say no such run exists.
PLACEHOLDER_RUN = "3f2a9c1e"


@pytest.mark.slow
@pytest.mark.timeout(720)  # ~220 s alone; beside another test file, more
def test_every_help_example_runs_as_written_against_the_simulator(tmp_path):
    """The examples of --help, typed as they are into a shell set up by `. simrc`, on the shipped
    scenario run fast: each succeeds (one naming a placeholder run id says it does not exist)."""
    fast = tmp_path / "fast.yaml"
    scenario = yaml.safe_load((Path(__file__).parents[1] / "sim/stackreflex_sim/default.yaml").read_text())
    fast.write_text(yaml.safe_dump({**scenario, "speed": 20}))
    examples = [e for e in help_examples() if not e.startswith("stackreflex sim serve")]
    assert len(examples) >= 12, examples
    ran = []
    for env_file, env in serve(tmp_path, "--scenario", str(fast)):
        for example in examples:
            done = shell(env_file, env, example, timeout=240)
            if PLACEHOLDER_RUN in example:
                assert done.returncode == 2 and f"no run with id '{PLACEHOLDER_RUN}'" in done.stderr, (example, done)
            else:
                assert done.returncode == 0, (example, done.stdout[-2000:], done.stderr[-2000:])
            ran.append(example)
        assert {path.name for path in Path(env["HOME"]).iterdir()} >= {"failures.csv", "incident-4711.html"}
        every_listing_in_every_format(env_file, env)
    assert len(ran) == len(examples)


def every_listing_in_every_format(env_file: Path, env: dict) -> None:
    """Each command that prints data, with the examples' runs in the audit log: JSON with its
    keys, `-f value -c KEY` giving the same values, YAML and CSV parsing, and the table at 80
    columns with no word split."""
    exports = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
    sim_url = exports["OS_AUTH_URL"].strip("'").removesuffix("/identity/v3")
    node = yaml.safe_load(Path(exports["STACKREFLEX_INVENTORY"].strip("'")).read_text())["roles"][
        "ControllerDeployedServer"
    ][0]
    run_id = json.loads(shell(env_file, env, "stackreflex audit runs -f json").stdout)[0]["id"]
    listings = [
        ("audit runs", "handler"),
        (f"audit show {run_id[:8]}", "handler"),
        ("audit envelopes", "type"),
        ("audit timeline --stack overcloud", "target"),
        ("audit stats --since 1d", "handler"),
        ("audit waiting", "handler"),
        ("audit slowest", "step"),
        ("agents status --stack overcloud", "host"),
        ("agents configure --stack overcloud --dry-run", "host"),
        ("doctor --stack overcloud", "verdict"),
        (f"sim nodes --url {sim_url}", "host"),
        (f"nodes trust {node} --known-hosts trusted_hosts", "node"),
        ("host evacuate compute-11.localdomain --dry-run", "server"),
        ("volume snapshot --server vm-compute-10-0 --dry-run", "volume"),
        ("image copy cirros --stores dcn0 --dry-run", "store"),
        ("edge check dcn1 --dry-run", "step"),
        ("image copy cirros --stores dcn1 --wait", "store"),
        ("runs resume", "id"),
    ]
    for command, key in listings:
        as_json = shell(env_file, env, f"stackreflex {command} -f json")
        assert as_json.returncode == 0, (command, as_json.stdout, as_json.stderr)
        data = json.loads(as_json.stdout or "[]")
        rows = data if isinstance(data, list) else [data]
        if not rows and command != "audit waiting" and command != "runs resume":
            raise AssertionError(f"{command}: no rows")
        values = shell(env_file, env, f"stackreflex {command} -f value -c {key}").stdout.splitlines()
        assert values == ["" if r[key] is None else str(r[key]) for r in rows], (command, values)
        again = yaml.safe_load(shell(env_file, env, f"stackreflex {command} -f yaml").stdout or "[]")
        again = again if isinstance(again, list) else [again]  # the same keys (a second run may differ: trust)
        assert [sorted(r) for r in again] == [sorted(r) for r in rows], command
        if isinstance(data, list) and data:
            parsed = list(csv.DictReader(io.StringIO(shell(env_file, env, f"stackreflex {command} -f csv").stdout)))
            assert [r[key] for r in parsed] == values, command
        table = shell(env_file, env, f"stackreflex {command} --max-width 80").stdout.splitlines()
        drawn = [line for line in table if line.startswith(("|", "+"))]
        assert all(len(line) <= 80 for line in drawn), (command, max(drawn, key=len))
        assert_no_word_split(table, [str(r[key]) for r in rows if r.get(key) is not None])
