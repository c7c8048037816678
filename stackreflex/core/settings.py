"""Settings: one typed object, read once from a TOML file and the environment, then passed in.

Precedence: environment (``STACKREFLEX_*``) over the TOML file (``--config``, default
``~/.config/stackreflex/config.toml``) over the defaults below.
"""

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError

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


class Settings(BaseModel):
    """Everything configurable, with defaults that work on a laptop (embedded mode)."""

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
    """Read settings from a TOML file and the environment; errors name the bad setting."""
    values: dict[str, Any] = {}
    path = config_file or DEFAULT_CONFIG_PATH
    if config_file is not None and not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.exists():
        try:
            values.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    for name, info in Settings.model_fields.items():
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env not in (None, ""):
            if info.annotation is not None and getattr(info.annotation, "__origin__", None) in (dict, list):
                try:
                    env = json.loads(env)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not JSON: {exc.msg}") from None
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
