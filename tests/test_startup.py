"""A command starts with only what it needs: `--help` and `--version` load no SDK, the audit
queries no broker, cloud or SSH library, and an audit log already current needs no alembic."""

import json
import subprocess
import sys

import typer
from alembic.script import ScriptDirectory

from stackreflex.cli.app import COMMANDS, load_command
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.database import HEAD_REVISION, alembic_config, make_engine

from .conftest import env_for

#: What costs a command's start-up most (openstacksdk alone took 0.4 s of CPU).
HEAVY = ("openstack", "keystoneauth1", "paramiko", "dramatiq", "kombu", "pika", "amqp", "alembic")

PROBE = """
import json, sys
from stackreflex.cli.app import main
among = json.loads(sys.argv[2])
sys.argv = ["stackreflex", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as end:
    code = end.code
else:
    code = 0
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in among)}),
      file=sys.stderr)
"""


def loaded_by(tmp_path, database_url: str, *args: str, among=HEAVY) -> dict:
    """Run one command in a fresh interpreter; its exit code and which of ``among`` it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(among)],
        env=env_for(Settings(database_url=database_url), tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_help_and_version_load_no_sdk_and_no_database_library(tmp_path):
    url = f"sqlite:///{tmp_path}/audit.db"
    for args in (["--help"], ["--version"]):
        probe = loaded_by(
            tmp_path, url, *args, among=(*HEAVY, "sqlalchemy", "sqlmodel", "click")
        )  # click: not ours to import (typer carries its own)
        assert probe == {"code": 0, "loaded": []}, args


def test_audit_queries_load_no_broker_cloud_or_ssh_library(tmp_path, database_url):
    AuditLog.open(database_url)  # migrated: what a worker leaves
    for args in (
        ["audit", "runs"],
        ["audit", "timeline", "--stack", "overcloud"],
        ["audit", "stats"],
        ["audit", "envelopes"],
        ["audit", "--help"],
    ):
        probe = loaded_by(tmp_path, database_url, *args)
        assert probe == {"code": 0, "loaded": []}, args


def test_a_database_behind_the_newest_revision_is_migrated(tmp_path):
    url = f"sqlite:///{tmp_path}/audit.db"
    probe = loaded_by(tmp_path, url, "audit", "runs")  # a new database: alembic makes the schema
    assert probe["code"] == 0 and "alembic" in probe["loaded"]
    assert loaded_by(tmp_path, url, "audit", "runs") == {"code": 0, "loaded": []}


def test_the_newest_revision_is_alembics_head():
    engine = make_engine("sqlite://")
    assert ScriptDirectory.from_config(alembic_config(engine)).get_current_head() == HEAD_REVISION


def test_help_lists_each_command_as_the_command_describes_itself():
    for name, (_, _, listed) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert (command.help or "").split("\n\n")[0] == listed, name
    root = typer.main.get_command(__import__("stackreflex.cli.app", fromlist=["app"]).app)
    assert root.list_commands(typer.Context(root)) == list(COMMANDS)
