"""Settings as an operator gives them: options over the environment over the TOML file over the
defaults; the file's sections; errors that name the setting and the file, never a secret."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from stackreflex.core import settings as settings_module
from stackreflex.core.errors import ConfigError
from stackreflex.core.settings import Settings, load_settings, sections

from .conftest import env_for

SECRET = "hunter2-do-not-print"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No STACKREFLEX_* variable of the shell running the tests, and no default config file."""
    for name in list(os.environ):
        if name.upper().startswith("STACKREFLEX_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG_PATH", tmp_path / "no-such-dir" / "config.toml")


def config(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(config_file: Path | None = None, **overrides) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(config_file, **overrides)
    return str(raised.value)


def test_options_beat_the_environment_which_beats_the_file_which_beats_the_defaults(tmp_path, monkeypatch):
    path = config(
        tmp_path,
        '[ssh]\nuser = "tripleo-admin"\nport = 2022\ntimeout = 5.0\n[log]\nlevel = "DEBUG"\nformat = "json"\n',
    )
    monkeypatch.setenv("STACKREFLEX_SSH_PORT", "2222")
    monkeypatch.setenv("STACKREFLEX_LOG_FORMAT", "text")
    monkeypatch.setenv("STACKREFLEX_SSH_TIMEOUT", "7.5")
    loaded = load_settings(path, log_format="json", ssh_timeout=None)  # None: the option was not given
    assert loaded.ssh_user == "tripleo-admin"  # the file
    assert loaded.log_level == "DEBUG"  # the file
    assert loaded.ssh_port == 2222  # the environment over the file
    assert loaded.ssh_timeout == 7.5  # the environment, the option not given
    assert loaded.log_format == "json"  # the option over the environment over the file
    assert loaded.agent_concurrency == 16 and loaded.namespace == "stackreflex"  # the defaults


def test_an_empty_variable_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKREFLEX_SSH_USER", "")
    monkeypatch.setenv("STACKREFLEX_AGENT_CONCURRENCY", "")
    assert load_settings(config(tmp_path, 'ssh_user = "heat-admin"\n')).ssh_user == "heat-admin"
    assert load_settings().agent_concurrency == 16


def test_the_default_file_is_read_when_there_and_not_missed_when_not(tmp_path, monkeypatch):
    assert load_settings().ssh_user == "stack"  # no file at the default path: the defaults
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG_PATH", config(tmp_path, '[ssh]\nuser = "tripleo-admin"\n'))
    assert load_settings().ssh_user == "tripleo-admin"


def test_sections_and_flat_names_say_the_same(tmp_path):
    sectioned = config(
        tmp_path,
        """
namespace = "edge"
[ssh]
user = "tripleo-admin"
key_file = "/home/stack/.ssh/id_rsa"
[agent]
polling_interval = 5
fetch_deadline = 120
[validation]
min_free_percent = 15
[backup]
min_free_gb = 7
[signature]
max_age = 300
[broker]
url = "amqps://stackreflex:pw@undercloud:5671/"
ca_file = "/etc/pki/ca.pem"
[database]
url = "postgresql://db/stackreflex"
outage_limit = 60
[reconcile]
grace = 90
interval = 15
[log]
format = "json"
level = "DEBUG"
[worker]
threads = 8
[router]
prefetch = 10
[signing.keys]
k1 = "one"
k2 = "two"
[handler_overrides.configure_new_node]
max_retries = 3
time_limit = 900
""",
        "sectioned.toml",
    )
    flat = config(
        tmp_path,
        """
namespace = "edge"
ssh_user = "tripleo-admin"
ssh_key_file = "/home/stack/.ssh/id_rsa"
agent_polling_interval = 5
agent_fetch_deadline = 120
validation_min_free_percent = 15
backup_min_free_gb = 7
signature_max_age = 300
broker_url = "amqps://stackreflex:pw@undercloud:5671/"
broker_ca_file = "/etc/pki/ca.pem"
database_url = "postgresql://db/stackreflex"
database_outage_limit = 60
reconcile_grace = 90
reconcile_interval = 15
log_format = "json"
log_level = "DEBUG"
worker_threads = 8
router_prefetch = 10
signing_keys = {k1 = "one", k2 = "two"}
[handler_overrides.configure_new_node]
max_retries = 3
time_limit = 900
""",
        "flat.toml",
    )
    from_sections, from_flat = load_settings(sectioned), load_settings(flat)
    assert from_sections == from_flat
    assert from_sections.ssh_user == "tripleo-admin" and from_sections.ssh_key_file == Path("/home/stack/.ssh/id_rsa")
    assert from_sections.agent_polling_interval == 5 and from_sections.validation_min_free_percent == 15
    assert from_sections.broker_url.get_secret_value() == "amqps://stackreflex:pw@undercloud:5671/"
    assert {k: v.get_secret_value() for k, v in from_sections.signing_keys.items()} == {"k1": "one", "k2": "two"}
    assert from_sections.handler_overrides == {"configure_new_node": {"max_retries": 3.0, "time_limit": 900.0}}
    assert (from_sections.worker_threads, from_sections.router_prefetch, from_sections.reconcile_grace) == (8, 10, 90)


def test_the_sections_are_the_first_words_of_the_settings_names():
    found = sections()
    for name in Settings.model_fields:
        section, _, rest = name.partition("_")
        if rest:
            assert found[section][rest] == name
    assert not set(found) & set(Settings.model_fields)  # a section never hides a setting
    assert {"ssh", "agent", "validation", "backup", "signature", "broker", "database", "reconcile", "log"} <= set(found)
    assert {"worker", "router"} <= set(found)


def test_dict_and_list_settings_come_from_the_environment_as_json(monkeypatch, tmp_path):
    monkeypatch.setenv("STACKREFLEX_SIGNING_KEYS", '{"Key-1": "one", "key-2": "two"}')
    monkeypatch.setenv("STACKREFLEX_VALIDATIONS", '["site.checks", "/etc/stackreflex/checks.py"]')
    monkeypatch.setenv("STACKREFLEX_HANDLER_OVERRIDES", '{"configure_new_node": {"max_retries": 1}}')
    path = config(tmp_path, '[handler_overrides.backup]\nmax_retries = 5\n[signing.keys]\nold = "zero"\n')
    loaded = load_settings(path)
    assert loaded.signing_keys == {"Key-1": SecretStr("one"), "key-2": SecretStr("two")}  # the ids as given
    assert loaded.validations == ["site.checks", "/etc/stackreflex/checks.py"]
    # a variable replaces the file's table whole, as any setting does
    assert loaded.handler_overrides == {"configure_new_node": {"max_retries": 1.0}}


def test_unknown_settings_and_sections_are_named_with_a_suggestion(tmp_path):
    path = config(
        tmp_path,
        'ssh_usr = "x"\npolling_interval = 5\n[ssh]\nprot = 22\n[sshh]\nuser = "x"\n'
        "[handler_override.configure_new_node]\nmax_retries = 1\n[zzzz]\nq = 1\n",
    )
    message = problem(path)
    assert message.startswith(f"config file {path}: ")
    assert "unknown setting ssh_usr (did you mean ssh_user?)" in message
    assert "unknown setting polling_interval (did you mean agent_polling_interval?)" in message
    assert "unknown setting prot in [ssh] (did you mean port?)" in message
    assert "unknown section [sshh] (did you mean [ssh]?)" in message
    assert "unknown section [handler_override] (did you mean [handler_overrides]?)" in message
    assert "unknown section [zzzz]" in message and "[zzzz] (did you mean" not in message


def test_a_section_written_as_a_value_is_named(tmp_path):
    message = problem(config(tmp_path, 'ssh = "tripleo-admin"\n'))
    assert "ssh is a section: its settings go in a table [ssh] (user, key_file, port" in message


def test_a_setting_written_both_ways_is_an_error(tmp_path):
    path = config(tmp_path, 'ssh_user = "stack"\n[ssh]\nuser = "tripleo-admin"\n')
    assert problem(path) == f"config file {path}: ssh_user is set twice, as ssh_user and as user in [ssh]"


def test_a_bad_value_names_the_setting_and_where_it_was_given(tmp_path, monkeypatch):
    path = config(tmp_path, '[ssh]\nport = "many"\n[agent]\nlayout = "yaml"\n')
    message = problem(path)
    assert message.startswith("invalid settings: ")
    assert f"ssh_port: Input should be a valid integer, unable to parse string as an integer (from {path})" in message
    assert f"agent_layout: Input should be 'ini' or 'local-data' (from {path})" in message
    monkeypatch.setenv("STACKREFLEX_WORKER_THREADS", "0")
    assert "worker_threads: Input should be greater than or equal to 1 (from STACKREFLEX_WORKER_THREADS)" in problem()
    assert "log_format: Input should be 'text' or 'json' (from the command line)" in problem(log_format="xml")


def test_a_variable_that_is_not_json_is_named(monkeypatch):
    monkeypatch.setenv("STACKREFLEX_VALIDATIONS", "site.checks")
    assert problem() == "STACKREFLEX_VALIDATIONS is not JSON: Expecting value"


def test_a_missing_config_file_is_an_error_and_a_broken_one_names_the_line(tmp_path):
    missing = tmp_path / "nope.toml"
    assert problem(missing) == f"config file {missing} does not exist"
    assert problem(tmp_path) == f"config file {tmp_path} is not a file"
    broken = config(tmp_path, "[ssh\nuser = 1\n")
    assert problem(broken).startswith(f"config file {broken}: ") and "line 1" in problem(broken)


@pytest.mark.parametrize(
    ("toml", "environment"),
    [
        (f"broker_url = amqp://stack:{SECRET}@undercloud:5672/\n", {}),  # not TOML
        (f'[broker]\nurl = ["amqp://stack:{SECRET}@undercloud:5672/"]\n', {}),  # not a string
        (f'[broker]\nuri = "amqp://stack:{SECRET}@undercloud:5672/"\n', {}),  # unknown
        (f'dispatch_key = "{SECRET}"\n[dispatch]\nkey = "{SECRET}"\n', {}),  # twice
        (f'signing_key = {{ value = "{SECRET}" }}\n', {}),  # a table
        ("", {"STACKREFLEX_SIGNING_KEYS": f'{{"k1": "{SECRET}", '}),  # not JSON
        ("", {"STACKREFLEX_SIGNING_KEYS": f'["{SECRET}"]'}),  # not a dict
        ("", {"STACKREFLEX_DATABASE_URL": SECRET, "STACKREFLEX_SSH_PORT": SECRET}),  # not a number beside it
    ],
)
def test_no_error_shows_a_secret(tmp_path, monkeypatch, toml, environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    message = problem(config(tmp_path, toml))
    assert message and SECRET not in message


def test_settings_built_directly_read_nothing_but_their_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKREFLEX_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    monkeypatch.setenv("STACKREFLEX_SSH_USER", "from-the-environment")
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG_PATH", config(tmp_path, 'namespace = "from-the-file"\n'))
    built = Settings(database_url="sqlite:///x.db")
    assert built.broker_url is None and built.embedded
    assert built.ssh_user == "stack" and built.namespace == "stackreflex"
    assert built.database() == "sqlite:///x.db"
    copied = built.model_copy(update={"ssh_user": "tripleo-admin"})
    assert copied.ssh_user == "tripleo-admin" and built.ssh_user == "stack"
    assert load_settings().ssh_user == "from-the-environment"  # while loading does read them


def test_the_command_line_reads_the_file_its_sections_and_the_environment(tmp_path):
    """Through the real CLI in a fresh HOME: ``doctor`` shows the audit database it uses."""
    home = tmp_path / "home"
    default = home / ".config" / "stackreflex" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/default.db"\n')
    given = config(tmp_path, f'[database]\nurl = "sqlite:///{tmp_path}/given.db"\n[log]\nlevel = "INFO"\n')
    typo = config(tmp_path, '[database]\nurll = "sqlite:///x.db"\n', "typo.toml")
    base = {k: v for k, v in env_for(Settings(), tmp_path).items() if not k.startswith("OS_")}

    def doctor(*options: str, **environment: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "stackreflex", *options, "doctor", "--no-nodes"],
            env={**base, **environment},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def database_row(result: subprocess.CompletedProcess) -> str:
        return next(line for line in result.stdout.splitlines() if "database" in line and "sqlite" in line)

    assert f"sqlite:///{tmp_path}/default.db" in database_row(doctor())
    assert f"sqlite:///{tmp_path}/given.db" in database_row(doctor("--config", str(given)))
    from_env = doctor("--config", str(given), STACKREFLEX_DATABASE_URL=f"sqlite:///{tmp_path}/env.db")
    assert f"sqlite:///{tmp_path}/env.db" in database_row(from_env) and " ok " in database_row(from_env)
    bad = doctor("--config", str(typo))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == f"error: config file {typo}: unknown setting urll in [database] (did you mean url?)"
    missing = doctor("--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and f"config file {tmp_path / 'none.toml'} does not exist" in missing.stderr
