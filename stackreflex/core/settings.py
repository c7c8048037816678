"""Settings: one typed object, read once from the command's options, the environment and a TOML
file, then passed in.

Precedence: the command's options over the environment (``STACKREFLEX_<SETTING>``, dict and list
settings as JSON, an empty variable as unset) over the TOML file (``--config``, default
``~/.config/stackreflex/config.toml``; a ``--config`` file that is not there is an error, a
missing default one is not) over the defaults below. ``Settings(...)`` built directly holds its
arguments and the defaults only: :func:`load_settings` is what reads the environment and the file.

In the file, a setting ``<section>_<name>`` may be written ``<name>`` in the table
``[<section>]``: a section is the first word of settings' names (agent, backup, broker, database,
log, reconcile, router, signature, signing, ssh, validation, worker and the others :func:`sections`
lists). Flat names work too. A setting written both ways, an unknown setting and an unknown
section are errors naming them and the file::

    # ~/.config/stackreflex/config.toml (mode 0600 if it holds secrets)
    namespace = "stackreflex"
    inventory = "/home/stack/inventory.yaml"

    [broker]
    url = "amqps://stackreflex:PASSWORD@undercloud.ctlplane.localdomain:5671/"  # broker_url
    ca_file = "/etc/pki/ca-trust/source/anchors/cm-local-ca.pem"               # broker_ca_file

    [database]
    url = "postgresql://stackreflex:PASSWORD@db.example.com/stackreflex"
    outage_limit = 600

    [ssh]
    user = "tripleo-admin"
    key_file = "/home/stack/.ssh/id_rsa"

    [agent]
    polling_interval = 30
    concurrency = 16

    [validation]
    min_free_percent = 10

    [backup]
    min_free_gb = 3.5

    [signature]
    max_age = 900

    [reconcile]
    grace = 60
    interval = 30

    [log]
    format = "json"
    level = "INFO"

    [worker]
    threads = 16

    [router]
    prefetch = 64

    [handler_overrides.configure_new_node]  # a table of tables, one per handler
    max_retries = 3
    time_limit = 900
"""

import difflib
import json
import os
import tomllib
from collections.abc import Iterable
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .envelope import Envelope
from .errors import ConfigError

#: Where settings are read from when no ``--config`` is given.
DEFAULT_CONFIG_PATH = Path("~/.config/stackreflex/config.toml").expanduser()

#: Prefix of every environment variable stackreflex reads.
ENV_PREFIX = "STACKREFLEX_"


def default_state_dir() -> Path:
    """The user's state directory (XDG), where the embedded audit log lives."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "stackreflex"


class Settings(BaseSettings):
    """Everything configurable, with defaults that work on a laptop (embedded mode)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid")

    #: AMQP URL (``amqp://`` or ``amqps://``); unset means embedded: in-memory bus, in-process worker.
    broker_url: SecretStr | None = None
    #: CA bundle used to verify the broker's certificate with ``amqps://``.
    broker_ca_file: Path | None = None
    #: SQLAlchemy URL of the audit log; unset means SQLite in the state directory.
    database_url: SecretStr | None = None
    #: HMAC key (id ``default``); when a key is set, every envelope published is signed and the
    #: router refuses any envelope not signed by a key of the ring, or signed outside the window.
    signing_key: SecretStr | None = None
    #: A key ring for rotation, id → key (JSON in STACKREFLEX_SIGNING_KEYS); every key verifies.
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    #: Which key of the ring signs (needed when the ring holds several keys).
    signing_key_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: A signature is good this long after its signing time, and its signing time may be this
    #: far ahead of the router's clock (seconds).
    signature_max_age: float = Field(900.0, gt=0)
    signature_max_skew: float = Field(60.0, ge=0)
    #: Key of the HMAC on each message the router sends a handler; unset means a key generated
    #: into the audit database on first start (every process of the installation reads it there).
    dispatch_key: SecretStr | None = None
    #: The most a message on the bus may be (bytes) and the deepest its JSON may nest.
    envelope_max_bytes: int = Field(1 << 20, ge=1024)
    envelope_max_depth: int = Field(64, ge=4, le=512)
    #: Type of the queues stackreflex declares (follow queues excepted): ``quorum`` (replicated across
    #: a RabbitMQ cluster; needs RabbitMQ 3.10 or later), ``classic``, or ``auto``: quorum where the
    #: broker supports it, classic on older brokers and the embedded bus.
    queue_type: Literal["auto", "quorum", "classic"] = "auto"
    #: Name of the topic exchange, and prefix of every queue stackreflex declares.
    namespace: str = Field("stackreflex", pattern=r"^[A-Za-z0-9_.-]+$")
    #: Worker threads per worker process.
    worker_threads: int = Field(16, ge=1, le=256)
    #: A running handler's claim on its run lapses this long after its worker stops heartbeating.
    lease_seconds: float = Field(30.0, gt=0)
    #: A run nothing moves on (its lease lapsed, its wake-up or retry is overdue, it never
    #: started) is sent a message again once it is this late (seconds): longer than a backlog
    #: may delay a live message, since a message too many is skipped but costs a claim.
    reconcile_grace: float = Field(60.0, gt=0)
    #: How often each process serving handlers looks for such runs (seconds).
    reconcile_interval: float = Field(30.0, gt=0)
    #: How long a write waits for an unreachable audit database before giving up (seconds).
    database_outage_limit: float = Field(600.0, gt=0)
    #: Which envelopes' runs are announced on the bus (``envelope.routed``, ``run.progress``,
    #: ``run.finished``): ``followed`` ones (published with ``notify``, as ``--wait`` does), or
    #: ``all``, for tools that watch every run from the bus. A notice nobody reads still costs
    #: the broker and the worker a message per run.
    run_notices: Literal["followed", "all"] = "followed"
    #: Messages the router takes from the broker before acknowledging any.
    router_prefetch: int = Field(64, ge=1)
    #: Log format: ``text`` for people, ``json`` for log collectors.
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    #: SSH settings used by ``ctx.ssh(host)``.
    ssh_user: str = "stack"
    ssh_key_file: Path | None = None
    ssh_port: int = 22
    ssh_known_hosts: Path = Path("~/.ssh/known_hosts").expanduser()
    #: OpenSSH client config (HostName, User, Port, IdentityFile, ProxyJump), read when the file
    #: exists; the inventory and settings set explicitly win over it, it wins over the defaults.
    ssh_config_file: Path | None = Path("~/.ssh/config").expanduser()
    ssh_timeout: float = 10.0
    #: Run node commands through ``sudo -n`` (the SSH user has passwordless sudo).
    ssh_sudo: bool = True
    #: Node inventory file; unset means OVERCLOUD_ROLES and <Role>_hosts.
    inventory: Path | None = None
    #: How os-collect-config is configured: ``ini`` (/etc/os-collect-config.conf) or ``local-data`` (JSON).
    agent_layout: Literal["ini", "local-data"] = "ini"
    agent_config_path: str = "/etc/os-collect-config.conf"
    agent_template_path: str = "/usr/libexec/os-apply-config/templates/etc/os-collect-config.conf"
    agent_local_data_path: str = "/var/lib/os-collect-config/local-data/stackreflex.json"
    #: Where os-collect-config caches what each collector fetched (``request.json``, ``heat.json``).
    agent_cache_dir: str = "/var/lib/os-collect-config"
    agent_service: str = "os-collect-config"
    agent_polling_interval: int = Field(30, ge=1)
    #: Nodes configured at once by `agents configure`.
    agent_concurrency: int = Field(16, ge=1, le=512)
    #: How long a node's run waits for its agent to fetch its metadata, then for Heat's software
    #: deployments of its server to complete (seconds); past it, the run fails naming what waits.
    agent_fetch_deadline: float = Field(600.0, gt=0)
    deployments_deadline: float = Field(1800.0, gt=0)
    #: Per-handler retry and time policy, overriding the handler's own: {name: {max_retries, min_backoff,
    #: max_backoff, time_limit}} (TOML table, or JSON in STACKREFLEX_HANDLER_OVERRIDES).
    handler_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: openstacksdk cloud name (``clouds.yaml``); unset means ``OS_CLOUD`` or the ``OS_*`` variables.
    cloud: str | None = None
    #: The overcloud's cloud name in ``clouds.yaml`` (its ``overcloudrc``), for the checks that ask the
    #: overcloud's own APIs; unset means the same cloud as ``cloud``.
    overcloud_cloud: str | None = None
    #: Extra validation checks: modules or files holding ``Check`` objects (JSON list in the environment).
    validations: list[str] = Field(default_factory=list)
    #: A filesystem with less free space than this fails the disk checks (under twice this, a warning).
    validation_min_free_percent: float = Field(10.0, gt=0, lt=100)
    #: A Ceph OSD fuller than this fails the OSD space check.
    validation_osd_max_used_percent: float = Field(80.0, gt=0, le=100)
    #: The undercloud backup needs this much free space where it stages its archive (GB; the runbook
    #: expects an archive of 3.5 GB or more).
    backup_min_free_gb: float = Field(3.5, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Built directly, settings are their arguments: tests' settings never pick up the
        process's environment. :func:`load_settings` reads the environment and the file."""
        return (init_settings,)

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    def announces(self, envelope: Envelope) -> bool:
        """Whether the runs of ``envelope`` are announced on the bus (see ``run_notices``)."""
        return bool(envelope.notify) or self.run_notices == "all"

    def database(self) -> str:
        """The audit log URL, defaulting to SQLite in the state directory."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        path = default_state_dir() / "audit.db"
        return f"sqlite:///{path}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from ``overrides`` (the command's options; ``None`` is not given), the
    environment and a TOML file, in that precedence; an error names the bad setting and where it
    was given, never its value."""
    path = config_file or DEFAULT_CONFIG_PATH
    if config_file is not None and not config_file.is_file():
        reason = "is not a file" if config_file.exists() else "does not exist"
        raise ConfigError(f"config file {config_file} {reason}")
    given = {k: v for k, v in overrides.items() if v is not None}
    sources: list[tuple[PydanticBaseSettingsSource, str | None]] = [  # lowest precedence first
        (_SectionedToml(Settings, path), str(path)),
        (_Environment(Settings), None),
        (InitSettingsSource(Settings, given), "the command line"),
    ]
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for source, origin in sources:
        for name, value in source().items():
            values[name] = value
            origins[name] = origin or _variable(name)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = origins.get(str(error["loc"][0])) if error["loc"] else None
            problems.append(
                f"{'.'.join(map(str, error['loc']))}: {error['msg']}" + (f" (from {where})" if where else "")
            )
        raise ConfigError(f"invalid settings: {'; '.join(problems)}") from None


def _variable(name: str) -> str:
    """The environment variable of setting ``name``."""
    return ENV_PREFIX + name.upper()


class _Environment(EnvSettingsSource):
    """``STACKREFLEX_<SETTING>``; a dict or list setting's variable that is not JSON is named."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{_variable(field_name)} is not JSON: {exc.msg}") from None


def sections() -> dict[str, dict[str, str]]:
    """Each section of the file, its names → the settings they stand for: the first word of a
    setting's name is its section (``ssh_key_file`` is ``key_file`` in ``[ssh]``)."""
    found: dict[str, dict[str, str]] = {}
    for name in Settings.model_fields:
        section, _, rest = name.partition("_")
        if rest and section not in Settings.model_fields:
            found.setdefault(section, {})[rest] = name
    return found


class _SectionedToml(TomlConfigSettingsSource):
    """The TOML file, its sections read as the flat settings they stand for; anything in it that
    is not a setting is an error (a typo would otherwise leave a default in force unnoticed)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {file_path} cannot be read: {exc.strerror}") from None
        return _flatten(data, file_path)


def _flatten(data: dict[str, Any], file: Path | Traversable) -> dict[str, Any]:
    fields, tables = Settings.model_fields, sections()
    flat: dict[str, Any] = {}
    written: dict[str, str] = {}  # setting → how the file wrote it
    problems: list[str] = []

    def put(name: str, value: Any, spelled: str) -> None:
        if name in written:
            problems.append(f"{name} is set twice, as {written[name]} and as {spelled}")
        flat[name], written[name] = value, spelled

    for key, value in data.items():
        if key in fields:
            put(key, value, key)
        elif key in tables and isinstance(value, dict):
            for rest, inner in value.items():
                if rest in tables[key]:
                    put(tables[key][rest], inner, f"{rest} in [{key}]")
                else:
                    problems.append(f"unknown setting {rest} in [{key}]{_did_you_mean(rest, tables[key])}")
        elif key in tables:
            problems.append(f"{key} is a section: its settings go in a table [{key}] ({', '.join(tables[key])})")
        elif isinstance(value, dict):
            suggestion = _did_you_mean(key, [*tables, *fields], "[{}]")
            problems.append(f"unknown section [{key}]{suggestion}")
        else:
            problems.append(f"unknown setting {key}{_did_you_mean(key, fields)}")
    if problems:
        raise ConfigError(f"config file {file}: {'; '.join(problems)}")
    return flat


def _did_you_mean(word: str, candidates: Iterable[str], form: str = "{}") -> str:
    close = difflib.get_close_matches(word.lower(), list(candidates), n=1)
    return f" (did you mean {form.format(close[0])}?)" if close else ""
