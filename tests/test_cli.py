"""The command line as an operator meets it: publishing on RabbitMQ and embedded, the demo, errors as
one clear line."""

import json
import re

import pytest

from stackreflex import __version__
from stackreflex.core.settings import Settings

from .conftest import HANDLERS, make_settings, run_cli


def embedded(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/audit.db")


def test_version_and_help(tmp_path):
    assert run_cli(embedded(tmp_path), tmp_path, "--version").stdout.strip() == f"stackreflex {__version__}"
    helped = run_cli(embedded(tmp_path), tmp_path, "--help").stdout
    for command in ("demo", "worker", "publish", "audit", "dlq"):
        assert command in helped
    shown = run_cli(embedded(tmp_path), tmp_path, "host", "evacuate", "--help").stdout
    assert "evacuate [OPTIONS] {HOST}" in shown  # typer's braces: required
    assert "<bool>" not in shown and "<float>" not in shown and "FLOAT" in shown


def test_every_help_reads_as_prose():
    """No paragraph of any command's help breaks mid-sentence (a docstring's line breaks would
    print as they are), no flag shows a type, and each listing command has the output options."""
    from stackreflex.cli.app import COMMANDS, load_command

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for name in COMMANDS:
        for path, command in walk(load_command(name), name):
            for paragraph in (command.help or "").split("\n\n"):
                later = paragraph.splitlines()[1:]
                assert all(line.startswith("stackreflex ") for line in later), (path, paragraph)
            for param in command.params:
                if getattr(param, "is_flag", False):
                    assert param.metavar == "", (path, param.name)


@pytest.fixture(params=["amqp", "embedded"])
def on_a_bus(request, tmp_path):
    """Settings and the publish options for each backend: a worker process serving the sample
    handlers on RabbitMQ (the production path), or the handlers in the command's own process."""
    if request.param == "embedded":
        return embedded(tmp_path), ["-H", HANDLERS]
    broker_url, namespace, workers = (request.getfixturevalue(f) for f in ("broker_url", "namespace", "workers"))
    settings = make_settings(broker_url, f"sqlite:///{tmp_path}/audit.db", namespace)
    workers(settings)
    return settings, ["--wait", "--timeout", "60"]


def test_publish_runs_the_handler_and_the_audit_log_shows_it(tmp_path, on_a_bus):
    settings, options = on_a_bus
    mark = tmp_path / "marks"
    done = run_cli(
        settings,
        tmp_path,
        "publish",
        "test.record",
        "-s",
        "node-1",
        *options,
        "-d",
        json.dumps({"value": "x", "mark": str(mark)}),
    )
    assert done.returncode == 0, done.stderr
    assert len(mark.read_text().splitlines()) == 1
    [run] = json.loads(run_cli(settings, tmp_path, "audit", "runs", "--json").stdout)
    assert (run["handler"], run["status"], run["subject"]) == ("note", "succeeded", "node-1")


def test_publish_exits_non_zero_when_a_run_fails(tmp_path, on_a_bus):
    settings, options = on_a_bus
    failed = run_cli(settings, tmp_path, "publish", "test.fail", *options, timeout=90)
    assert failed.returncode == 1
    assert "dead" in failed.stdout


def test_demo_runs_on_the_embedded_default_and_leaves_an_audit_trail(tmp_path):
    settings = Settings()  # nothing configured: SQLite in the state directory, in-memory bus
    demo = run_cli(settings, tmp_path, "demo", timeout=180)
    assert demo.returncode == 0, demo.stderr + demo.stdout
    assert "scale up" in demo.stdout and "temp_url_sig=***" in demo.stdout
    assert not re.search(r"temp_url_sig=(?!\*\*\*)", demo.stdout + demo.stderr)
    assert "ERROR" not in demo.stdout + demo.stderr  # nothing alarming when all is well
    demo_db = tmp_path / "state" / "stackreflex" / "demo.db"
    assert demo_db.exists() and f"STACKREFLEX_DATABASE_URL=sqlite:///{demo_db}" in demo.stdout
    demo_log = Settings(database_url=f"sqlite:///{demo_db}")
    runs = json.loads(run_cli(demo_log, tmp_path, "audit", "runs", "--handler", "configure_new_node", "--json").stdout)
    assert len(runs) == 7 and {r["status"] for r in runs} == {"succeeded"}
    assert len({r["subject"] for r in runs}) == 1 and runs[0]["subject"] == "overcloud"
    for transport, collector in (("POLL_SERVER_CFN", "cfn"), ("POLL_SERVER_HEAT", "heat")):
        again = run_cli(settings, tmp_path, "demo", "--transport", transport, timeout=180)
        assert again.returncode == 0, again.stderr + again.stdout
        assert "ERROR" not in again.stdout + again.stderr
        runs = json.loads(
            run_cli(demo_log, tmp_path, "audit", "runs", "--handler", "configure_new_node", "--json").stdout
        )
        assert len(runs) == 7 and {r["status"] for r in runs} == {"succeeded"}, "each demo has a new log of its own"
        shown = json.loads(run_cli(demo_log, tmp_path, "audit", "show", runs[0]["id"], "--json").stdout)
        [configured] = [s for s in shown["steps"] if s["name"] == "configure os-collect-config"]
        assert configured["detail"][collector]["collector"] == collector
        assert shown["steps"][-1]["detail"]["summary"] == "4/4 deployments complete"
        assert "secret_access_key': '***'" in str(configured["detail"]) or collector == "heat"


def test_errors_are_one_clear_line(tmp_path):
    settings = embedded(tmp_path)
    assert run_cli(settings, tmp_path, "publish", "test.record", "-H", HANDLERS).returncode == 0  # one run to find
    kept = run_cli(settings, tmp_path, "audit", "prune", "--older-than", "1y")
    assert kept.returncode == 0 and kept.stdout.startswith("deleted 0 run(s)"), kept.stdout + kept.stderr  # a year
    cases = [
        (
            ("publish", "test.record", "-H", HANDLERS, "-d", "{oops"),
            "error: --data is not JSON: Expecting property name",
        ),
        (("publish", "nothing.here"), "error: no handler subscribes to nothing.here"),
        (("worker",), "error: stackreflex worker serves a broker, and none is configured"),
        (("audit", "show", "feedface"), "error: no run with id 'feedface'"),
        (("publish", "bad type!"), "error: field 'type': String should match pattern"),
        (("audit", "runs", "--since", "yesterday"), "error: cannot read time 'yesterday'"),
        (("audit", "runs", "--since", "99999999999d"), "error: '99999999999d' is further back than any time"),
        (("audit", "show", "%"), "error: no run with id '%'"),  # a character, not a wildcard
        (("audit", "export", "-o", "/nonexistent/x.json"), "error: cannot write /nonexistent/x.json"),
        (("audit", "report", "--html", "/proc/x.html"), "error: cannot write /proc/x.html"),
        (("audit", "export", "-o", f"{tmp_path}/x.yaml"), f"error: cannot export to {tmp_path}/x.yaml: the file's"),
        (("host", "evacuate", "", "--dry-run"), "error: host: String should have at least 1 character"),
        (("host", "evacuate", "compute-0", "--dry-run"), "error: no cloud is configured: set OS_CLOUD"),
    ]
    for args, message in cases:
        result = run_cli(settings, tmp_path, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert result.stderr.strip().startswith(message), result.stderr


def test_bad_settings_name_the_setting(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('ssh_port = "many"\n')
    result = run_cli(embedded(tmp_path), tmp_path, "--config", str(config), "audit", "runs")
    assert result.returncode == 2 and "ssh_port" in result.stderr
    broken = run_cli(Settings(broker_url="http://rabbit:5672/"), tmp_path, "publish", "a.b")
    assert broken.returncode == 2 and "amqp:// or amqps://" in broken.stderr


def test_json_logs_are_one_object_per_line(tmp_path):
    result = run_cli(
        embedded(tmp_path),
        tmp_path,
        "--log-format",
        "json",
        "-v",
        "publish",
        "test.record",
        "-H",
        HANDLERS,
        "-d",
        json.dumps({"password": "hunter2"}),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert all(line.startswith("{") for line in result.stderr.splitlines())
    messages = [line["message"] for line in lines]
    # one line for the envelope, for each turn of the run, and for each step
    assert sum(m.startswith("envelope routed: test.record") for m in messages) == 1
    assert sum(m.startswith("run started: note") for m in messages) == 1
    assert sum(m.startswith("step succeeded: note") for m in messages) == 1
    assert any(line.get("handler") == "note" and "run succeeded" in line["message"] for line in lines)
    assert "hunter2" not in result.stderr


def test_handler_overrides_come_from_the_environment_as_json(tmp_path, monkeypatch):
    from stackreflex.core.settings import load_settings

    monkeypatch.setenv("STACKREFLEX_HANDLER_OVERRIDES", '{"configure_new_node": {"max_retries": 1}}')
    assert load_settings().handler_overrides == {"configure_new_node": {"max_retries": 1.0}}
    result = run_cli(embedded(tmp_path), tmp_path, "audit", "runs", env={"STACKREFLEX_HANDLER_OVERRIDES": "{oops"})
    assert result.returncode == 2 and "STACKREFLEX_HANDLER_OVERRIDES is not JSON" in result.stderr
