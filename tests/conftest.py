"""Fixtures: the real RabbitMQ, real SQLite and PostgreSQL databases, real worker processes.

Each test gets its own namespace (exchange and queue prefix) and its own database, and
everything is deleted afterwards.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paramiko
import psycopg
import pytest
from kombu import Connection

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.cli.common import load_all_handlers
from stackreflex.core.settings import Settings
from stackreflex.tasks.ssh import trust_host
from stackreflex_sim.overcloud import Overcloud

BROKER_URL = os.environ.get("STACKREFLEX_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get("STACKREFLEX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HANDLERS = str(Path(__file__).with_name("sample_handlers.py"))
OTHER_HANDLERS = str(Path(__file__).with_name("other_handlers.py"))
HANDLER_NAMES = [
    "note",
    "fail_always",
    "block_until_released",
    "wait_for_file",
    "only_when_go",
    "do_command",
    "too_slow",
    "wait_in_step",
    "fail_after_each_wake",
    "elsewhere",
    "elsewhere_filtered",
    "step_then_wait",
    "first",  # test_router's
    "second",
]


@pytest.fixture(scope="session")
def broker_url() -> str:
    try:
        with Connection(normalise_amqp_url(BROKER_URL)) as c:
            c.ensure_connection(max_retries=2)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {BROKER_URL} ({exc}); run the tests with scripts/test")
    return BROKER_URL


@pytest.fixture
def namespace(broker_url):
    ns = f"t{uuid.uuid4().hex[:10]}"
    yield ns
    remove_namespace(broker_url, ns)


@pytest.fixture
def more_namespaces(broker_url):
    """Namespaces a test makes besides its own (it appends them here), removed like it once the
    test's worker processes have stopped: request this fixture before ``workers``."""
    made: list[str] = []
    yield made
    for ns in made:
        remove_namespace(broker_url, ns)


def remove_namespace(broker_url: str, ns: str) -> None:
    """Delete a namespace's queues (the router's, every handler's, built-in or the tests') and exchanges."""
    with Connection(normalise_amqp_url(broker_url)) as c:
        names = HANDLER_NAMES + [h.name for h in load_all_handlers()]
        queues = [f"{ns}.router", f"{ns}.dlq", f"{ns}.unrouted"] + [
            f"{ns}.{h}{suffix}" for h in names for suffix in ("", ".DQ", ".XQ")
        ]
        for q in queues:
            channel = c.channel()
            try:
                channel.queue_delete(q)
            except Exception:
                pass
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
        for exchange in (ns, f"{ns}.unrouted"):
            channel = c.channel()
            try:
                channel.exchange_delete(exchange)
            except Exception:
                pass


def _postgres_database():
    name = f"srx_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); run the tests with scripts/test")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/audit.db"
        return
    url, name = _postgres_database()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url():
    """A new PostgreSQL database, for what only PostgreSQL can stage (a trigger that fails writes)."""
    url, name = _postgres_database()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/audit.db"


def make_settings(broker_url, database_url, namespace, **extra) -> Settings:
    """Settings for a test. Classic queues: quorum queues are the product's default, tested on
    their own and on a 3-node cluster (test_cluster.py); the whole suite creating and deleting
    thousands of them wedged the single test broker (RabbitMQ 3.10) once."""
    return Settings(
        broker_url=broker_url,
        database_url=database_url,
        namespace=namespace,
        **{"lease_seconds": 2.0, "worker_threads": 4, "queue_type": "classic", **extra},
    )


def overcloud_with_nodes(tmp_path: Path, scenario, inventory, settings: Settings):
    """Start the simulated overcloud with SSH nodes that accept a fresh key, write the inventory
    ``inventory(oc)`` returns, and record every node's host key: settings that reach the nodes."""
    key = paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_ecdsa"
    key.write_private_key_file(str(key_file))
    oc = Overcloud.start(scenario, state_dir=tmp_path / "hostkeys", authorized_keys=[key])
    inventory_file = tmp_path / "inventory.yaml"
    inventory_file.write_text(json.dumps(inventory(oc)))
    settings = settings.model_copy(
        update={"inventory": inventory_file, "ssh_key_file": key_file, "ssh_known_hosts": tmp_path / "known_hosts"}
    )
    for node in oc.nodes.values():
        trust_host(settings, node.address, node.port)
    return oc, settings


def env_for(settings: Settings, tmp_path: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKREFLEX_")}
    env.update(
        {
            "STACKREFLEX_NAMESPACE": settings.namespace,
            "STACKREFLEX_LEASE_SECONDS": str(settings.lease_seconds),
            "STACKREFLEX_WORKER_THREADS": str(settings.worker_threads),
            "STACKREFLEX_LOG_FORMAT": settings.log_format,
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "HOME": str(tmp_path / "home"),
            "COLUMNS": "200",
        }
    )
    if settings.database_url is not None:
        env["STACKREFLEX_DATABASE_URL"] = settings.database_url.get_secret_value()
    if settings.broker_url is not None:
        env["STACKREFLEX_BROKER_URL"] = settings.broker_url.get_secret_value()
    if settings.signing_key is not None:
        env["STACKREFLEX_SIGNING_KEY"] = settings.signing_key.get_secret_value()
    if settings.signing_keys:
        env["STACKREFLEX_SIGNING_KEYS"] = json.dumps(
            {k: v.get_secret_value() for k, v in settings.signing_keys.items()}
        )
    if settings.signing_key_id:
        env["STACKREFLEX_SIGNING_KEY_ID"] = settings.signing_key_id
    for name in (
        "log_level",
        "inventory",
        "ssh_key_file",
        "ssh_known_hosts",
        "ssh_user",
        "agent_layout",
        "reconcile_grace",
        "reconcile_interval",
        "database_outage_limit",
        "agent_polling_interval",
        "deployments_deadline",
        "queue_type",
    ):
        value = getattr(settings, name)
        if value is not None and value != Settings.model_fields[name].default:
            env[f"STACKREFLEX_{name.upper()}"] = str(value)
    if settings.handler_overrides:
        env["STACKREFLEX_HANDLER_OVERRIDES"] = json.dumps(settings.handler_overrides)
    env.update(extra or {})
    return env


class WorkerProcess:
    """``stackreflex worker`` (or ``watch``) in a child process, with its log in a file."""

    def __init__(self, env: dict, log_path: Path, *args: str, command: str = "worker", handlers: str = HANDLERS):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.ready_text = "worker ready" if command == "worker" else "watching"
        argv = ["worker", "--handlers", handlers, *args] if command == "worker" else [command, *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stackreflex", *argv],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, count: int = 1, timeout: float = 30) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.read_text(errors="replace").count(self.ready_text) >= count:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up, no acks."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()


@pytest.fixture
def workers(tmp_path):
    """Start workers with ``start(settings, *args)``; all are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings,
        *args: str,
        ready: int = 1,
        command: str = "worker",
        env: dict | None = None,
        handlers: str = HANDLERS,
    ) -> WorkerProcess:
        w = WorkerProcess(
            env_for(settings, tmp_path, env),
            tmp_path / f"{command}{len(started)}.log",
            *args,
            command=command,
            handlers=handlers,
        )
        started.append(w)
        return w.wait_ready(ready)

    yield start
    for w in started:
        if w.proc.poll() is None:
            try:
                w.terminate(timeout=40)
            except subprocess.TimeoutExpired:
                w.kill()


def run_cli(
    settings: Settings, tmp_path: Path, *args: str, timeout: float = 60, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stackreflex", *args],
        env=env_for(settings, tmp_path, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listed_queues(namespace: str) -> list[dict]:
    """Every queue of ``namespace`` as RabbitMQ lists it: name, messages ready, messages held
    unacknowledged by a consumer."""
    argv = [
        "rabbitmqctl",
        "-q",
        "list_queues",
        "--formatter",
        "json",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ]
    listed = subprocess.run(
        argv if os.getuid() == 0 else ["sudo", "-n", *argv], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [q for q in json.loads(listed or "[]") if q["name"].startswith(f"{namespace}.")]


def queues_drained(namespace: str) -> bool:
    """No queue of ``namespace`` holds a message, ready or held unacknowledged by a consumer
    (dead letters and the CLI's follow queues aside): every delivery has been handled."""
    mine = [
        q for q in listed_queues(namespace) if not q["name"].endswith((".XQ", ".dlq")) and ".follow." not in q["name"]
    ]
    return all(q["messages_ready"] == 0 and q["messages_unacknowledged"] == 0 for q in mine)


def wait_drained(namespace: str, timeout: float = 30) -> None:
    """For negative checks ("no second run"): wait until the broker has nothing left to deliver."""
    wait_for(
        lambda: queues_drained(namespace) and queues_drained(namespace),
        timeout,
        interval=0.2,
        message=f"every queue of {namespace} drained",
    )


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def assert_no_word_split(lines: list[str], values: list[str]) -> None:
    """Every word of ``values`` (a run of letters and digits; CamelCase is words) shows whole in
    ``lines``; one split at the edge of a cell would show as two shorter runs instead."""

    def words(text: str) -> set[str]:
        return {w for run in re.findall(r"[A-Za-z0-9]+", text) for w in re.split(r"(?<=[a-z])(?=[A-Z])", run)}

    shown = {word for line in lines for word in words(line)}
    missing = {word for value in values for word in words(value)} - shown
    assert not missing, f"split or missing: {sorted(missing)[:10]}"


_REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """stackreflex built as a wheel, as an operator would ship it to the host."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):  # a copy: a build leaves build/ and *.egg-info behind
        shutil.copy(_REPO / name, source)
    shutil.copytree(_REPO / "stackreflex", source / "stackreflex", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("stackreflex-*.whl")
    return found


#: the venv's bin, where the shell finds stackreflex and the operators' `openstack`
VENV_BIN = Path(sys.executable).parent


def serve(tmp_path, *options: str):
    """``stackreflex sim serve`` as a process of its own, on free ports; yields its env file and
    the environment of a shell with nothing of stackreflex or OpenStack set."""
    env_file = tmp_path / "simrc"
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACKREFLEX_", "OS_"))}
    home.mkdir(exist_ok=True)  # the shell's working directory: what examples write lands there
    env.update(HOME=str(home), XDG_STATE_HOME=str(tmp_path / "state"), PATH=f"{VENV_BIN}:{env['PATH']}")
    served = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stackreflex",
            "sim",
            "serve",
            "--port",
            "0",
            "--ssh-port",
            "0",
            "--state-dir",
            str(tmp_path / "sim"),
            "--env-file",
            str(env_file),
            *options,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not env_file.exists():
        assert served.poll() is None, served.stderr.read()
        assert time.monotonic() < deadline, "the simulator never wrote its env file"
        time.sleep(0.1)
    yield env_file, env
    served.send_signal(signal.SIGTERM)
    served.wait(timeout=30)


@pytest.fixture
def simulator(tmp_path):
    yield from serve(tmp_path)


def shell(env_file: Path, env: dict, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f". {env_file} && {script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["HOME"],
    )
