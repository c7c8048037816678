"""Backups before an upgrade (seed 001 §2.1–2.2): the undercloud, and the overcloud's control plane.

What the runbook has operators type, node by node, as steps: the space check, the database dumps
(the root password read from hieradata and handed to ``mysql`` on stdin: it is never on a command
line, in a log, in the audit log or in the manifest), Redis, MongoDB when the deployment has one,
and each node's filesystem archive. Every artefact is made in a private directory on the node,
streamed back over SFTP into ``dest`` (see :mod:`stackreflex.tasks.artefacts`), then that
directory is removed — whatever happened, and checked gone. A manifest beside the files lists
each artefact with its size and SHA-256.
"""

import json
import secrets
import shlex
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paramiko
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.errors import HandlerFailed, StackreflexError
from ..core.registry import handler
from ..core.settings import Settings
from ..tasks import ssh as remote
from ..tasks.artefacts import discard_partials, fetch, free_name, write_manifest
from ..tasks.heat import deployed_servers
from ..tasks.inventory import Host, load_inventory
from ..validations.builtin import HAPROXY_CONFIG
from ..validations.parsers import df, haproxy_bind
from .context import RunContext
from .orders import read_order

if TYPE_CHECKING:
    from openstack.connection import Connection

#: The seed's archive lists (§2.1 step 3, §2.2 step 4); missing ones are skipped (--ignore-failed-read).
UNDERCLOUD_PATHS = (
    "/etc",
    "/var/log",
    "/var/lib/glance",
    "/var/lib/certmonger",
    "/var/lib/docker",
    "/var/lib/registry",
    "/srv/node",
    "/root",
    "/home/stack",
)
CONTROLLER_PATHS = (
    "/etc",
    "/srv/node",
    "/var/log",
    "/var/lib/nova",
    "/var/lib/glance",
    "/var/lib/keystone",
    "/var/lib/cinder",
    "/var/lib/heat",
    "/var/lib/heat-config",
    "/var/lib/heat-cfntools",
    "/var/lib/rabbitmq",
    "/var/lib/neutron",
    "/var/lib/haproxy",
    "/var/lib/openvswitch",
    "/var/lib/redis",
    "/usr/libexec/os-apply-config",
    "/home/heat-admin",
)
CONTROLLER_EXCLUDES = ("/var/lib/nova/instances",)
HIERADATA = "/etc/puppet/hieradata/service_configs.json"
#: The databases' size is part of the estimate where they are dumped.
MYSQL_DATA = "/var/lib/mysql"
#: The SQL that lists what to dump and whose grants to keep (§2.2 steps 1.5–1.6).
DATABASES_SQL = (
    "select distinct table_schema from information_schema.tables where engine='innodb' and table_schema != 'mysql';"
)
USERS_SQL = (
    "SELECT CONCAT('SHOW GRANTS FOR ''',user,'''@''',host,''';') FROM mysql.user "
    "where (length(user) > 0 and user NOT LIKE 'root')"
)
#: mysql and mysqldump read the root password from an option file on stdin.
OPTIONS_ON_STDIN = "--defaults-extra-file=/dev/stdin"


class BackupOrder(BaseModel):
    """The data of ``command.backup.undercloud`` and ``command.backup.controlplane``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Where the artefacts go, on the host of the worker that runs the backup (absolute).
    dest: str = Field(min_length=1)
    stack: str = Field(default="overcloud", min_length=1)

    @field_validator("dest")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"dest {value!r} must be an absolute path (it is on the worker's host)")
        return value


@dataclass(frozen=True)
class Node:
    host: Host
    name: str


@dataclass
class Plan:
    """What one backup does on one node, in order: (step, command) pairs as they are run (no
    secret in any of them), the paths whose size is the estimate, and the files it fetches."""

    node: Node
    steps: list[tuple[str, str]] = field(default_factory=list)
    paths: tuple[str, ...] = ()
    fetches: list[tuple[str, str]] = field(default_factory=list)


def workdir(run_id: str, execution: str) -> str:
    """The node's private directory for one execution of a backup (a second execution of the same
    run, after a worker was lost, never writes into the first one's)."""
    return f"/var/tmp/stackreflex-backup-{run_id[:8]}-{execution}"


def undercloud_plan(node: Node, work: str, stamp: str, dest: str) -> Plan:
    """``dest`` is left out of the archive (on a worker running on the undercloud, a --dest under
    /home/stack would otherwise take every earlier backup into the next one)."""
    dump = f"{work}/undercloud-all-databases.sql"
    archive = f"undercloud-backup-{stamp}.tar"
    exclude = f"--exclude {shlex.quote(dest)} " if any(dest.startswith(p + "/") for p in UNDERCLOUD_PATHS) else ""
    return Plan(
        node,
        [
            ("dump databases", f"mysqldump --opt --all-databases --result-file={dump}"),
            (
                "archive",
                f"tar --xattrs --ignore-failed-read -cf {work}/{archive} {exclude}{dump} {' '.join(UNDERCLOUD_PATHS)}",
            ),
        ],
        (*UNDERCLOUD_PATHS, MYSQL_DATA),
        [(f"{work}/{archive}", archive)],
    )


def controller_plan(node: Node, work: str, stamp: str, *, bootstrap: bool) -> Plan:
    """The bootstrap controller dumps the databases and Redis as well as archiving its files."""
    archive = f"{node.name}-filesystem-{stamp}.tar.gz"
    steps = [
        (
            "archive",
            f"tar --ignore-failed-read --xattrs -zcf {work}/{archive} "
            + " ".join(f"--exclude {p}" for p in CONTROLLER_EXCLUDES)
            + " "
            + " ".join(CONTROLLER_PATHS),
        )
    ]
    fetches = [(f"{work}/{archive}", archive)]
    if bootstrap:
        databases, grants = f"openstack_databases-{stamp}.sql", f"openstack_databases_grants-{stamp}.sql"
        steps = [
            ("read database password", f"cat {HIERADATA}"),
            ("list databases", f"mysql {OPTIONS_ON_STDIN} -s -N -e {_quoted(DATABASES_SQL)}"),
            (
                "dump databases",
                f"mysqldump {OPTIONS_ON_STDIN} --single-transaction --databases DATABASE… "
                f"--result-file={work}/{databases}",
            ),
            (
                "dump grants",
                f'bash -o pipefail -c \'mysql {OPTIONS_ON_STDIN} -s -N -e "SHOW GRANTS FOR …" | '
                f'sed "s/$/;/" > {work}/{grants}\'',
            ),
            (
                "redis",
                f"redis-cli --askpass -h REDIS_VIP ping; redis-cli --askpass -h REDIS_VIP --rdb "
                f"{work}/redis-{stamp}.rdb",
            ),
            ("mongodb", f"mongodump --oplog --host MONGODB_IP --out {work}/mongo (when hieradata has one)"),
            *steps,
        ]
        fetches = [
            (f"{work}/{databases}", databases),
            (f"{work}/{grants}", grants),
            (f"{work}/redis-{stamp}.rdb", f"redis-{stamp}.rdb"),
            *fetches,
        ]
    return Plan(node, steps, (*CONTROLLER_PATHS, MYSQL_DATA) if bootstrap else CONTROLLER_PATHS, fetches)


def undercloud_node(settings: Settings) -> Node:
    return Node(load_inventory(settings.inventory).undercloud_host(), "undercloud")


def controller_nodes(conn: "Connection", settings: Settings, stack: str) -> list[Node]:
    """The stack's controllers from Heat, in index order (the first is the bootstrap node), found
    through the inventory."""
    inventory = load_inventory(settings.inventory)
    servers = [s for s in deployed_servers(conn, stack) if "Controller" in (s.role or "")]
    if not servers:
        raise StackreflexError(f"stack {stack} has no controller (no deployed server of a *Controller* role)")
    return [Node(inventory.host_for(s.role, s.index, path=s.path), s.label) for s in servers]


T = TypeVar("T")


def _nodes(ctx: RunContext, find: Callable[[], T]) -> T:
    try:
        return find()
    except StackreflexError as exc:
        ctx.fail(str(exc))


# -- the handlers ---------------------------------------------------------------------------


def _cancelled_backup(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled backup removes its directories on the nodes and its half-written files."""
    order = BackupOrder.model_validate(event.data or {})
    backup = Backup(ctx, order, event.type.rsplit(".", 1)[-1])
    left = backup.clean_everywhere()
    removed = discard_partials(Path(order.dest), ctx.state.get("fetching", []))
    kept = [a["file"] for a in ctx.state.get("artefacts", [])]
    backup.manifest(f"cancelled: {reason}")
    return (
        f"removed {', '.join(removed) or 'no partial file'} from {order.dest}; node directories "
        f"{'left on ' + ', '.join(left) if left else 'removed'}; verified artefacts kept: {', '.join(kept) or 'none'}"
    )


@handler(
    "command.backup.undercloud",
    max_retries=1,
    min_backoff=10,
    max_backoff=60,
    time_limit=6 * 3600,
    compensate=_cancelled_backup,
)
def backup_undercloud(event: Envelope, ctx: RunContext) -> None:
    """Back up the undercloud (§2.1): space check, database dump, archive, fetched and verified."""
    order = read_order(BackupOrder, event, ctx)
    backup = Backup(ctx, order, "undercloud")
    node = _nodes(ctx, lambda: undercloud_node(ctx.settings))
    backup.run(
        [node],
        lambda node, first: undercloud_plan(node, backup.work, backup.stamp, order.dest),
        backup.undercloud_steps,
    )


@handler(
    "command.backup.controlplane",
    max_retries=1,
    min_backoff=10,
    max_backoff=60,
    time_limit=6 * 3600,
    compensate=_cancelled_backup,
)
def backup_controlplane(event: Envelope, ctx: RunContext) -> None:
    """Back up the overcloud's control plane (§2.2): databases, grants, Redis (and MongoDB) from the
    bootstrap controller, then each controller's filesystem archive."""
    order = read_order(BackupOrder, event, ctx)
    backup = Backup(ctx, order, "controlplane")
    controllers = _nodes(ctx, lambda: controller_nodes(ctx.cloud, ctx.settings, order.stack))
    backup.run(
        controllers,
        lambda node, first: controller_plan(node, backup.work, backup.stamp, bootstrap=first),
        backup.controller_steps,
    )


@dataclass
class Session:
    """One node's SSH session during a backup; ``node.name`` is the node's own host name."""

    node: Node
    ssh: paramiko.SSHClient
    #: set once connected, before any step runs
    plan: Plan = field(init=False, repr=False)


def connect(ctx_ssh: Callable[..., paramiko.SSHClient], node: Node) -> Session:
    """An SSH session to the node, named by its own ``hostname`` (as the runbook names its archive)."""
    ssh = ctx_ssh(node.host.address, port=node.host.port)
    try:
        _, out, _ = remote.run(ssh, "hostname", host=node.name)
    except BaseException:
        ssh.close()
        raise
    return Session(Node(node.host, out.strip() or node.name), ssh)


class Backup:
    """One backup run: its stamp, its directory on the nodes, what it fetched (saved in the run's
    state, so a retried attempt keeps the names and knows what is already here)."""

    def __init__(self, ctx: RunContext, order: BackupOrder, kind: str) -> None:
        self.ctx, self.order, self.kind = ctx, order, kind
        self.dest = Path(order.dest)
        state = ctx.state
        state.setdefault("stamp", utcnow().strftime("%Y-%m-%d-%H-%M-%S"))
        state.setdefault("started", utcnow().isoformat())
        state.setdefault("artefacts", [])
        state.setdefault("nodes", [])
        state.setdefault("workdirs", [])
        state.setdefault("fetching", [])
        self.stamp, self.work = state["stamp"], workdir(ctx.run_id, secrets.token_hex(3))
        self.sudo = ctx.settings.ssh_sudo

    def run(self, nodes: list[Node], make_plan: Callable[[Node, bool], Plan], steps: Callable[[Session], None]) -> None:
        """On each node in turn: connect, plan, run ``steps``, fetch its artefacts; clean up every
        node whatever happens; then write the manifest, saying how the backup ended."""
        ctx, state = self.ctx, self.ctx.state
        # an execution that did not finish (a worker lost) is started over: its files are this run's
        discard_partials(self.dest, state["fetching"])
        for earlier in state["artefacts"]:
            (self.dest / earlier["file"]).unlink(missing_ok=True)
        state.update(
            artefacts=[], fetching=[], nodes=[str(n.host) for n in nodes], workdirs=[*state["workdirs"], self.work]
        )
        state.setdefault("manifest", free_name(self.dest, f"{self.kind}-backup-{self.stamp}.manifest.json"))
        ctx.checkpoint()  # from here on, every node's directory is known to the clean-up (and the cancel)
        try:
            self.dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            ctx.fail(f"cannot create {self.dest}: {exc.strerror}")
        error = None
        try:
            for position, node in enumerate(nodes):
                ctx.progress(position, len(nodes), f"backing up {node.name}")
                with self.session(node) as session:
                    session.plan = make_plan(session.node, position == 0)
                    steps(session)
                    for source, name in session.plan.fetches:
                        self.fetch_one(session, source, name)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                left = self.clean_everywhere()
            except BaseException as exc:  # a cancel arriving meanwhile: its compensation cleans up
                left, error = [], error or exc
            if error is None and left:
                error = HandlerFailed(f"the backup's directory {self.work} is still on {', '.join(left)}")
            self.manifest(None if error is None else str(error))
        if error is not None:
            raise error
        ctx.progress(len(nodes), len(nodes), f"{len(state['artefacts'])} artefacts in {self.dest}")

    @contextmanager
    def session(self, node: Node) -> Iterator[Session]:
        with self.ctx.step("connect", target=node.name) as detail:
            detail["node"] = str(node.host)
            try:
                session = connect(self.ctx.ssh, node)
            except StackreflexError as exc:
                raise HandlerFailed(str(exc)) from None
            detail["hostname"] = session.node.name
        try:
            yield session
        finally:
            session.ssh.close()

    def sh(
        self, session: Session, command: str, *, stdin: bytes | None = None, check: bool = True
    ) -> tuple[int, str, str]:
        try:
            return remote.run(session.ssh, command, stdin=stdin, sudo=self.sudo, check=check, host=session.node.name)
        except remote.CommandFailed as exc:
            raise HandlerFailed(str(exc)) from None

    def prepare(self, session: Session) -> None:
        """Check the space (the node's, where the artefacts are made, and ours, where they go) and
        make the node's private directory."""
        settings = self.ctx.settings
        with self.ctx.step("free space", target=session.node.name) as detail:
            _, out, _ = self.sh(session, f"du -sbc {' '.join(session.plan.paths)}", check=False)
            lines = [line for line in out.splitlines() if line.endswith("\ttotal")]
            estimate = int(lines[-1].split("\t")[0]) if lines else 0
            needed = max(estimate, int(settings.backup_min_free_gb * 1e9) if self.kind == "undercloud" else 0)
            _, out, _ = self.sh(session, "df -P -B1 /var/tmp")
            there = df(out)[0].available if df(out) else 0
            here = shutil.disk_usage(self.dest).free
            detail.update(estimate_bytes=estimate, needed_bytes=needed, node_free_bytes=there, dest_free_bytes=here)
            if there < needed:
                raise HandlerFailed(
                    f"{session.node.name} has {there / 1e9:.1f} GB free in /var/tmp but the backup "
                    f"needs {needed / 1e9:.1f} GB (estimate {estimate / 1e9:.1f} GB; setting "
                    "backup_min_free_gb): free space first; nothing was written"
                )
            if here < needed:
                raise HandlerFailed(
                    f"{self.dest} has {here / 1e9:.1f} GB free but the backup needs "
                    f"{needed / 1e9:.1f} GB: nothing was written"
                )
        user = self.ctx.settings.ssh_user
        self.sh(session, f"install -d -m 700 -o {user} {self.work}")

    def undercloud_steps(self, session: Session) -> None:
        self.prepare(session)
        (_, dump), (_, archive) = session.plan.steps
        dump_file = dump.rsplit("=", 1)[1]
        with self.ctx.step("dump databases", target=session.node.name) as detail:
            self.sh(session, dump)
            detail.update(command=dump, **self.completed(session, dump_file))
        self.archive(session, archive)

    def controller_steps(self, session: Session) -> None:
        self.prepare(session)
        name, stamp, work = session.node.name, self.stamp, self.work
        if any(step == "dump databases" for step, _ in session.plan.steps):  # the bootstrap controller
            secrets = self.hieradata(session)
            options = _options_file(secrets.get("mysql::server::root_password"), name)
            with self.ctx.step("list databases", target=name) as detail:
                _, out, _ = self.sh(
                    session, f"mysql {OPTIONS_ON_STDIN} -s -N -e {_quoted(DATABASES_SQL)}", stdin=options
                )
                databases = [line.strip() for line in out.splitlines() if line.strip()]
                detail["databases"] = databases
                if not databases:
                    raise HandlerFailed(f"{name}: MariaDB lists no InnoDB database to dump")
            with self.ctx.step("dump databases", target=name) as detail:
                dump = f"{work}/openstack_databases-{stamp}.sql"
                self.sh(
                    session,
                    f"mysqldump {OPTIONS_ON_STDIN} --single-transaction --databases "
                    f"{' '.join(map(shlex.quote, databases))} --result-file={dump}",
                    stdin=options,
                )
                detail.update(databases=len(databases), **self.completed(session, dump))
            with self.ctx.step("dump grants", target=name) as detail:
                _, out, _ = self.sh(session, f"mysql {OPTIONS_ON_STDIN} -s -N -e {_quoted(USERS_SQL)}", stdin=options)
                shows = " ".join(line.strip() for line in out.splitlines() if line.strip().startswith("SHOW GRANTS"))
                detail["users"] = len(shows.split(";")) - 1 if shows else 0
                grants = f"{work}/openstack_databases_grants-{stamp}.sql"
                inner = (
                    f"mysql {OPTIONS_ON_STDIN} -s -N -e {shlex.quote(shows)} | sed 's/$/;/' > {grants}"
                    if shows
                    else f"true > {grants}"
                )
                self.sh(session, f"bash -o pipefail -c {shlex.quote(inner)}", stdin=options)
                self.ctx.state["grant_users"] = detail["users"]
            self.redis(session, secrets.get("redis::masterauth"))
            if secrets.get("mongodb::server::bind_ip"):
                self.mongodb(session, secrets["mongodb::server::bind_ip"])
            else:
                self.ctx.record(
                    "mongodb",
                    target=name,
                    started_at=utcnow(),
                    detail={"skipped": "hieradata has no mongodb::server::bind_ip: no telemetry MongoDB"},
                )
        self.archive(session, next(c for s, c in session.plan.steps if s == "archive"))

    def archive(self, session: Session, command: str) -> None:
        """GNU tar exits 1 when a file changed while it read it (a live node's logs): the archive
        is whole and the warning recorded; 2 is a fatal error."""
        with self.ctx.step("archive", target=session.node.name) as detail:
            status, _, err = self.sh(session, command, check=False)
            detail.update(command=command, exit=status, warnings=_tar_warnings(err))
            if status not in (0, 1):
                raise HandlerFailed(
                    f"{session.node.name}: tar exited {status}: {(err.strip().splitlines() or ['no output'])[-1][:300]}"
                )

    def hieradata(self, session: Session) -> dict[str, Any]:
        """The passwords of hieradata, kept in memory for this execution only."""
        with self.ctx.step("read database password", target=session.node.name) as detail:
            _, out, _ = self.sh(session, f"cat {HIERADATA}")
            try:
                data: dict[str, Any] = json.loads(out)
            except json.JSONDecodeError:
                raise HandlerFailed(f"{session.node.name}: {HIERADATA} is not JSON") from None
            if not data.get("mysql::server::root_password"):
                raise HandlerFailed(f"{session.node.name}: {HIERADATA} has no mysql::server::root_password")
            detail["found"] = sorted(
                k
                for k in ("mysql::server::root_password", "redis::masterauth", "mongodb::server::bind_ip")
                if data.get(k)
            )
        return data

    def completed(self, session: Session, dump: str) -> dict[str, str]:
        """The dump's last line must say it completed (mysqldump writes it last)."""
        _, out, _ = self.sh(session, f"tail -n 1 {dump}")
        if "-- Dump completed" not in out:
            raise HandlerFailed(f"{session.node.name}: {dump} does not end with '-- Dump completed': it was cut short")
        return {"last_line": out.strip()}

    def redis(self, session: Session, password: str | None) -> None:
        """The snapshot of the Redis behind the VIP (the master, wherever it runs), streamed by
        ``redis-cli --rdb`` as a replica would get it: never a stale local dump.rdb."""
        name = session.node.name
        with self.ctx.step("redis", target=name) as detail:
            _, config, _ = self.sh(session, HAPROXY_CONFIG, check=False)
            bind = haproxy_bind(config, "redis")
            if bind is None:
                detail["skipped"] = "haproxy.cfg has no 'listen redis': no Redis to back up"
                session.plan.fetches[:] = [f for f in session.plan.fetches if not f[1].startswith("redis-")]
                return
            vip, auth = bind[0], f"{password or ''}\n".encode()
            cli = f"redis-cli --askpass -h {vip}"
            _, out, _ = self.sh(session, f"{cli} ping", stdin=auth)
            if "PONG" not in out:
                raise HandlerFailed(f"{name}: Redis at {vip} did not answer PONG: {out.strip()[:200]}")
            _, _, err = self.sh(session, f"{cli} --rdb {self.work}/redis-{self.stamp}.rdb", stdin=auth)
            if "Transfer finished with success" not in err:
                raise HandlerFailed(f"{name}: redis-cli --rdb did not finish: {err.strip()[-200:]}")
            detail.update(endpoint=vip)

    def mongodb(self, session: Session, address: str) -> None:
        out_dir, archive = f"{self.work}/mongo", f"mongo-{self.stamp}.tar"
        with self.ctx.step("mongodb", target=session.node.name) as detail:
            self.sh(session, f"mongodump --oplog --host {shlex.quote(address)} --out {out_dir}")
            self.sh(session, f"tar -cf {self.work}/{archive} -C {self.work} mongo")
            detail["host"] = address
        session.plan.fetches.insert(-1, (f"{self.work}/{archive}", archive))

    def fetch_one(self, session: Session, source: str, name: str) -> None:
        state = self.ctx.state
        final = free_name(self.dest, name)
        state["fetching"].append(final)
        self.ctx.checkpoint()  # a worker lost mid-transfer leaves final.partial: the next execution removes it
        with self.ctx.step(f"fetch {name}", target=session.node.name) as detail:
            try:
                artefact = fetch(session.ssh, source, self.dest, final, node=session.node.name, sudo=self.sudo)
            except StackreflexError as exc:
                raise HandlerFailed(str(exc)) from None
            detail.update(
                file=artefact.file,
                size=artefact.size,
                sha256=artefact.sha256,
                verified=artefact.verified,
                source=source,
            )
            if name.startswith("openstack_databases_grants"):
                _check_grants(self.dest / artefact.file, state.get("grant_users", 0))
        state["artefacts"].append(asdict(artefact))
        self.ctx.checkpoint()

    def clean_everywhere(self) -> list[str]:
        """Remove the backup's directory from every node, checking it is gone; returns the nodes it
        is still on (unreachable ones)."""
        left = []
        for name in self.ctx.state.get("nodes", []):
            host = Host.parse(name)
            try:
                with self.ctx.step("clean up", target=name) as detail:
                    ssh = self.ctx.ssh(host.address, port=host.port)
                    dirs = self.ctx.state.get("workdirs", [])
                    try:
                        remote.run(ssh, f"rm -rf {' '.join(dirs)}", sudo=self.sudo, host=name)
                        still = [
                            d
                            for d in dirs
                            if remote.run(ssh, f"test -e {d}", sudo=self.sudo, check=False, host=name)[0] == 0
                        ]
                    finally:
                        ssh.close()
                    detail.update(removed=dirs)
                    if still:
                        raise HandlerFailed(f"{', '.join(still)} still on {name} after rm -rf")
            except Exception:
                left.append(name)
        return left

    def manifest(self, error: str | None) -> None:
        state = self.ctx.state
        manifest = {
            "backup": self.kind,
            "stack": self.order.stack if self.kind == "controlplane" else None,
            "run_id": self.ctx.run_id,
            "started_at": state["started"],
            "finished_at": utcnow().isoformat(),
            "status": "complete" if error is None else ("cancelled" if error.startswith("cancelled") else "failed"),
            "error": None if error is None else error[:2000],
            "nodes": state["nodes"],
            "artefacts": state["artefacts"],
        }
        name = state.get("manifest") or free_name(self.dest, f"{self.kind}-backup-{self.stamp}.manifest.json")
        try:
            write_manifest(self.dest, name, manifest)
        except OSError as exc:
            if error is None:
                raise HandlerFailed(f"cannot write the manifest in {self.dest}: {exc.strerror}") from None


def _options_file(password: str | None, node: str) -> bytes:
    """The ``[client]`` option file mysql reads on stdin (quotes and backslashes escaped)."""
    if not password:
        raise HandlerFailed(f"{node}: no database root password in hieradata")
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'[client]\nuser=root\npassword="{escaped}"\n'.encode()


def _check_grants(path: Path, users: int) -> None:
    """At least one grant line per user listed: a user dropped mid-dump ends the pipeline early."""
    lines = sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())
    if lines < users:
        raise HandlerFailed(f"{path.name} has {lines} grant line(s) for {users} user(s): it was cut short")


def _quoted(sql: str) -> str:
    """SQL in double quotes, as the runbook types it (it has single quotes, nothing a shell expands)."""
    assert not set(sql) & set('"$`\\'), sql
    return f'"{sql}"'


def _tar_warnings(stderr: str) -> list[str]:
    """What tar skipped (a path this deployment does not have), as it said it."""
    return [line.strip() for line in stderr.splitlines() if "Warning" in line or "Cannot stat" in line][:20]
