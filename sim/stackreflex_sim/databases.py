"""The databases on the simulated nodes, as the backup runbooks reach them.

The controllers share one Galera cluster (MariaDB, the service databases and their users) and
a Redis whose VIP each controller's hieradata names; the undercloud has its own MariaDB. The
root and Redis passwords are random per simulator run and live only in the model
(``node.shared["databases"]``, ``node.extra["databases"]``) and in the nodes' files that hold
them on a real cloud (``/etc/puppet/hieradata/service_configs.json``, the undercloud's
``/root/.my.cnf``): never log them.

Commands: ``mysql`` (the queries the runbooks run, in MariaDB's batch output, with MariaDB's
error texts), ``mysqldump``, ``redis-cli`` (ping, bgsave, lastsave), ``mongodump`` (scenarios
with telemetry MongoDB) and ``hiera KEY``. Passwords come from ``--defaults-extra-file=/dev/stdin``
(the channel's stdin), ``/root/.my.cnf``, ``-p``/``--password=``, or ``--askpass`` for redis-cli.
"""

import hashlib
import json
import posixpath
import re
import secrets
import struct
import time
import uuid
from dataclasses import dataclass, field

from .nodes import SimNode, node_command

HIERADATA = "/etc/puppet/hieradata"
MY_CNF = "/root/.my.cnf"
REDIS_DUMP = "/var/lib/redis/dump.rdb"
VERSION = "10.5.22-MariaDB"


@dataclass
class Table:
    #: ``name type`` of each column; the first is the primary key.
    columns: list[str]
    rows: list[tuple] = field(default_factory=list)


@dataclass
class User:
    name: str
    host: str
    password: str = field(repr=False)
    databases: list[str] = field(default_factory=list)
    #: What the user holds on ``*.*``.
    privileges: str = "USAGE"

    @property
    def password_hash(self) -> str:
        """MySQL's native password hash: '*' and SHA1(SHA1(password)) in hex."""
        return "*" + hashlib.sha1(hashlib.sha1(self.password.encode()).digest()).hexdigest().upper()

    def grants(self) -> list[str]:
        who = f"'{self.name}'@'{self.host}'"
        option = " WITH GRANT OPTION" if self.privileges.startswith("ALL") else ""
        lines = [f"GRANT {self.privileges} ON *.* TO {who} IDENTIFIED BY PASSWORD '{self.password_hash}'{option}"]
        if self.name == "root":
            lines.append(f"GRANT PROXY ON ''@'%' TO {who} WITH GRANT OPTION")
        return lines + [f"GRANT ALL PRIVILEGES ON `{db}`.* TO {who}" for db in self.databases]


class SqlError(Exception):
    def __init__(self, code: int, state: str, message: str):
        super().__init__(f"ERROR {code} ({state}) at line 1: {message}")


@dataclass
class MariaDB:
    """One MariaDB server (or Galera cluster): its databases and users."""

    root_password: str = field(repr=False)
    databases: dict[str, dict[str, Table]]
    users: list[User]
    #: Controllers: root over the unix socket needs no password; the cluster's nodes.
    galera: list[SimNode] | None = None

    def login(self, node: SimNode, user: str, password: str | None) -> str | None:
        """None if ``user`` gets in, else MariaDB's reason."""
        if user == "root" and password is None and self.galera is not None:
            return None  # unix_socket
        known = any(u.name == user and u.password == password for u in self.users) or (
            user == "root" and password == self.root_password
        )
        if known:
            return None
        return f"Access denied for user '{user}'@'localhost' (using password: {'NO' if password is None else 'YES'})"

    def query(self, node: SimNode, statement: str) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of the statements the runbooks run."""
        text = " ".join(statement.split())
        if m := re.fullmatch(
            r"show (?:global |session )?status (?:where variable_name in \((.*)\)|like '(.*)')", text, re.I
        ):
            status = self._status(node)
            wanted = (
                {name.strip().strip("'\"").lower() for name in m.group(1).split(",")}
                if m.group(1) is not None
                else None
            )
            like = re.compile(re.escape(m.group(2) or "").replace("%", ".*").replace("_", "."), re.I)
            return ["Variable_name", "Value"], [
                (k, v)
                for k, v in sorted(status.items(), key=lambda kv: kv[0].lower())
                if (k.lower() in wanted if wanted is not None else like.fullmatch(k))
            ]
        if re.fullmatch(
            r"select distinct table_schema from information_schema\.tables where engine ?= ?'innodb' "
            r"and table_schema ?!= ?'mysql'",
            text,
            re.I,
        ):
            return ["table_schema"], [(db,) for db in sorted(self.databases) if db != "mysql"]
        if m := re.fullmatch(r"select (concat\((.*)\)) from mysql\.user(?: where (.*))?", text, re.I):
            parts = _concat_arguments(m.group(2))
            rows = []
            for user in sorted(self.users, key=lambda u: (u.host, u.name)):
                if m.group(3) and not _where(m.group(3), user):
                    continue
                rows.append(("".join(p[1] if p[0] == "literal" else getattr(user, p[1]) for p in parts),))
            return [m.group(1)], rows
        if m := re.fullmatch(r"show grants for ['`\"]?([^'`\"@]*)['`\"]?@['`\"]?([^'`\"]*)['`\"]?", text, re.I):
            name, host = m.groups()
            user = next((u for u in self.users if (u.name, u.host) == (name, host)), None)
            if user is None:
                raise SqlError(1141, "42000", f"There is no such grant defined for user '{name}' on host '{host}'")
            return [f"Grants for {name}@{host}"], [(line,) for line in user.grants()]
        if re.fullmatch(r"show databases", text, re.I):
            return ["Database"], [(db,) for db in sorted([*self.databases, "information_schema", "performance_schema"])]
        if re.fullmatch(r"select (1|version\(\)|@@version)", text, re.I):
            return [text[7:]], [("1" if text[7:] == "1" else VERSION,)]
        raise SqlError(
            1064,
            "42000",
            "You have an error in your SQL syntax; check the manual that corresponds to "
            f"your MariaDB server version for the right syntax to use near "
            f"'{statement.strip()[:80]}' at line 1",
        )

    def _status(self, node: SimNode) -> dict[str, str]:
        status = {"Uptime": "864000", "Threads_connected": "42"}
        if self.galera is not None:
            desynced = any(
                f.target in (node.address, node.hostname, node.hostname.split(".")[0])
                for f in node.faults.active("galera_desynced")
            )
            status.update(
                {
                    "wsrep_cluster_size": str(sum(1 for n in self.galera if n.reachable)),
                    "wsrep_cluster_status": "Primary",
                    "wsrep_connected": "ON",
                    "wsrep_ready": "ON",
                    "wsrep_local_state": "2" if desynced else "4",
                    "wsrep_local_state_comment": "Donor/Desynced" if desynced else "Synced",
                }
            )
        return status


def _concat_arguments(text: str) -> list[tuple[str, str]]:
    """CONCAT's arguments: ("literal", text) for SQL strings ('' and backslash escapes), ("column", name)."""
    parts, i = [], 0
    while i < len(text):
        if text[i] == "'":
            value, i = "", i + 1
            while i < len(text):
                if text[i] == "\\" and i + 1 < len(text):
                    value, i = value + text[i + 1], i + 2
                elif text[i] == "'" and text[i + 1 : i + 2] == "'":
                    value, i = value + "'", i + 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    value, i = value + text[i], i + 1
            parts.append(("literal", value))
        elif m := re.match(r"\s*(user|host)\s*", text[i:], re.I):
            parts.append(("column", m.group(1).lower().replace("user", "name")))
            i += m.end()
        elif text[i] in ", ":
            i += 1
        else:
            raise SqlError(1054, "42S22", f"Unknown column '{text[i:].split(',')[0].strip()}' in 'field list'")
    return parts


def _where(condition: str, user: User) -> bool:
    """The conditions the runbooks put on mysql.user: ``length(user) > 0``, ``user [NOT] LIKE 'x'``."""
    for m in re.finditer(r"user (not )?like '([^']*)'", condition, re.I):
        pattern = re.escape(m.group(2)).replace("%", ".*").replace("_", ".")
        if bool(re.fullmatch(pattern, user.name)) == bool(m.group(1)):
            return False
    return not (re.search(r"length\(user\) ?> ?0", condition, re.I) and not user.name)


# -- the models ----------------------------------------------------------------------------


def _id(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


STAMP = "2024-11-28 09:14:05"


@dataclass
class ControlPlane:
    """What the controllers share: the Galera cluster, Redis's password, whether MongoDB runs."""

    galera: MariaDB
    redis_password: str = field(repr=False)
    mongodb: bool = False


def _control_plane(node: SimNode) -> ControlPlane | None:
    return node.shared.get("databases") if node.kind == "controller" else None


def _overcloud_databases(scenario) -> dict[str, dict[str, Table]]:
    computes = list(scenario.compute_hosts) or [f"{scenario.stack}-novacompute-{i}.localdomain" for i in range(2)]
    servers = [
        (_id("server", host, n), f"server-{host.split('.')[0]}-{n}", host)
        for host, count in scenario.compute_hosts.items()
        for n in range(count)
    ]
    return {
        "cinder": {
            "volumes": Table(
                ["id varchar(36)", "display_name varchar(255)", "size int(11)", "status varchar(255)"],
                [(_id("volume", n), f"volume-{n}", 10, "in-use") for n in range(3)],
            ),
            "services": Table(
                ["id int(11)", "host varchar(255)", "binary varchar(255)", "disabled tinyint(1)"],
                [(1, "hostgroup", "cinder-scheduler", 0), (2, "hostgroup@tripleo_ceph", "cinder-volume", 0)],
            ),
        },
        "glance": {
            "images": Table(
                ["id varchar(36)", "name varchar(255)", "disk_format varchar(20)", "status varchar(30)"],
                [(_id("image", name), name, "qcow2", "active") for name in scenario.images],
            )
        },
        "heat": {
            "stack": Table(
                ["id varchar(36)", "name varchar(255)", "status varchar(255)"],
                [(_id("stack", "tenant"), "tenant-app", "CREATE_COMPLETE")],
            )
        },
        "keystone": {
            "project": Table(
                ["id varchar(64)", "name varchar(64)", "domain_id varchar(64)", "enabled tinyint(1)"],
                [(_id("project", p).replace("-", ""), p, "default", 1) for p in scenario.projects],
            ),
            "service": Table(
                ["id varchar(64)", "type varchar(255)", "enabled tinyint(1)"],
                [
                    (_id("service", t).replace("-", ""), t, 1)
                    for t in ("identity", "compute", "image", "volumev3", "network", "orchestration")
                ],
            ),
        },
        "neutron": {
            "networks": Table(
                ["id varchar(36)", "name varchar(255)", "status varchar(16)"],
                [(_id("network", n), n, "ACTIVE") for n in ("public", "private")],
            )
        },
        "nova": {
            "instances": Table(
                [
                    "id int(11)",
                    "uuid varchar(36)",
                    "hostname varchar(255)",
                    "host varchar(255)",
                    "vm_state varchar(255)",
                ],
                [(n + 1, u, name, host, "active") for n, (u, name, host) in enumerate(servers)],
            ),
            "compute_nodes": Table(
                ["id int(11)", "hypervisor_hostname varchar(255)", "vcpus int(11)", "memory_mb int(11)"],
                [(n + 1, host, 48, 262144) for n, host in enumerate(computes)],
            ),
        },
        "nova_api": {
            "cell_mappings": Table(
                ["id int(11)", "uuid varchar(36)", "name varchar(255)"],
                [(1, "00000000-0000-0000-0000-000000000000", "cell0"), (2, _id("cell", "default"), "default")],
            )
        },
        "nova_cell0": {
            "instances": Table(
                [
                    "id int(11)",
                    "uuid varchar(36)",
                    "hostname varchar(255)",
                    "host varchar(255)",
                    "vm_state varchar(255)",
                ]
            )
        },
        "placement": {
            "resource_providers": Table(
                ["id int(11)", "uuid varchar(36)", "name varchar(200)"],
                [(n + 1, _id("rp", host), host) for n, host in enumerate(computes)],
            )
        },
    }


def _undercloud_databases(scenario) -> dict[str, dict[str, Table]]:
    nodes = [
        f"{scenario.stack}-{r.name.lower().replace('deployedserver', '')}-{i}"
        for r in scenario.roles
        for i in range(r.count)
    ]
    return {
        "glance": {
            "images": Table(
                ["id varchar(36)", "name varchar(255)", "disk_format varchar(20)", "status varchar(30)"],
                [
                    (str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), name, fmt, "active")
                    for name, fmt in (
                        ("overcloud-full.qcow2", "qcow2"),
                        ("overcloud-full.initrd", "ari"),
                        ("overcloud-full.vmlinuz", "aki"),
                    )
                ],
            )
        },
        "heat": {
            "stack": Table(
                ["id varchar(36)", "name varchar(255)", "status varchar(255)"],
                [(_id("stack", scenario.stack), scenario.stack, "CREATE_COMPLETE")],
            )
        },
        "ironic": {
            "nodes": Table(
                [
                    "id int(11)",
                    "uuid varchar(36)",
                    "name varchar(255)",
                    "provision_state varchar(15)",
                    "maintenance tinyint(1)",
                ],
                [(n + 1, _id("ironic", name), name, "active", 0) for n, name in enumerate(nodes)],
            )
        },
        "ironic-inspector": {
            "nodes": Table(
                ["uuid varchar(36)", "state varchar(36)"], [(_id("ironic", name), "finished") for name in nodes]
            )
        },
        "keystone": {
            "project": Table(
                ["id varchar(64)", "name varchar(64)", "domain_id varchar(64)", "enabled tinyint(1)"],
                [(_id("project", p).replace("-", ""), p, "default", 1) for p in ("admin", "service")],
            )
        },
        "mistral": {
            "workflow_definitions_v2": Table(
                ["id varchar(36)", "name varchar(255)", "scope varchar(80)"],
                [
                    (_id("wf", w), w, "public")
                    for w in ("tripleo.deployment.v1.deploy_plan", "tripleo.package_update.v1.update")
                ],
            )
        },
        "nova": {
            "instances": Table(
                ["id int(11)", "uuid varchar(36)", "hostname varchar(255)", "vm_state varchar(255)"],
                [(n + 1, _id("instance", name), name, "active") for n, name in enumerate(nodes)],
            )
        },
        "nova_api": {
            "cell_mappings": Table(
                ["id int(11)", "uuid varchar(36)", "name varchar(255)"],
                [(1, "00000000-0000-0000-0000-000000000000", "cell0")],
            )
        },
        "nova_cell0": {
            "instances": Table(["id int(11)", "uuid varchar(36)", "hostname varchar(255)", "vm_state varchar(255)"])
        },
        "nova_placement": {
            "resource_providers": Table(
                ["id int(11)", "uuid varchar(36)", "name varchar(200)"],
                [(n + 1, _id("rp", name), _id("ironic", name)) for n, name in enumerate(nodes)],
            )
        },
        "zaqar": {
            "Queues": Table(["id int(11)", "name varchar(64)", "project varchar(64)"], [(1, "tripleo", "admin")])
        },
    }


def _users(databases: list[str], hostname: str, root_password: str, galera: bool) -> list[User]:
    owners: dict[str, list[str]] = {}
    for db in databases:
        owners.setdefault(
            {"nova_cell0": "nova", "nova_placement": "placement", "ironic-inspector": "ironic-inspector"}.get(db, db),
            [],
        ).append(db)
    users = [User(name, "%", secrets.token_hex(16), dbs) for name, dbs in owners.items()]
    users += [
        User("root", host, root_password, privileges="ALL PRIVILEGES")
        for host in ("localhost", "127.0.0.1", "::1", hostname)
    ]
    if galera:
        users.append(User("clustercheck", "localhost", secrets.token_hex(16), privileges="PROCESS"))
    return users


def _with_mysql(databases: dict[str, dict[str, Table]], users: list[User]) -> dict[str, dict[str, Table]]:
    """The ``mysql`` database as --all-databases dumps it (MariaDB 10.4+ keeps users in global_priv)."""
    priv = Table(
        ["Host char(60)", "User char(80)", "Priv longtext"],
        [
            (
                u.host,
                u.name,
                json.dumps(
                    {
                        "access": 1073741823 if u.privileges.startswith("ALL") else 0,
                        "plugin": "mysql_native_password",
                        "authentication_string": u.password_hash,
                    }
                ),
            )
            for u in users
        ],
    )
    return {
        **databases,
        "mysql": {
            "global_priv": priv,
            "db": Table(
                ["Host char(60)", "Db char(64)", "User char(80)"],
                [("%", db, u.name) for u in users for db in u.databases],
            ),
        },
    }


def attach(node: SimNode, scenario) -> None:
    """Give a controller its share of the Galera cluster, Redis and the hieradata that names
    them; give the undercloud its MariaDB and /root/.my.cnf."""
    if node.kind == "controller":
        if "databases" not in node.shared:
            databases = _overcloud_databases(scenario)
            root = secrets.token_hex(16)
            users = _users(list(databases), "localhost", root, galera=True)
            node.shared["databases"] = ControlPlane(
                MariaDB(root, _with_mysql(databases, users), users, galera=[]),
                secrets.token_hex(16),
                scenario.telemetry_mongodb,
            )
        plane = node.shared["databases"]
        plane.galera.galera.append(node)
        configs = {
            "mysql::server::root_password": plane.galera.root_password,
            "redis::masterauth": plane.redis_password,
            "tripleo::profile::base::database::mysql::bind_address": node.address,
            "mysql_bind_host": node.address,
            "redis::bind": node.address,
        }
        if scenario.telemetry_mongodb:
            configs["mongodb::server::bind_ip"] = node.address
        _put(node, f"{HIERADATA}/service_configs.json", json.dumps(configs, indent=2, sort_keys=True) + "\n", 0o600)
        _put(
            node,
            f"{HIERADATA}/vip_data.json",
            json.dumps(
                {
                    "redis_vip": node.address,
                    "mysql_vip": node.address,
                    "internal_api_virtual_ip": node.address,
                    "controller_virtual_ip": node.address,
                    "public_virtual_ip": node.address,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
            0o600,
        )
        _put(
            node,
            "/etc/my.cnf.d/galera.cnf",
            f"[mysqld]\nbind-address={node.address}\nwsrep_on=ON\n"
            "wsrep_provider=/usr/lib64/galera/libgalera_smm.so\n"
            "wsrep_cluster_name=galera_cluster\n",
            0o644,
        )
        _put(
            node,
            "/var/lib/mysql/grastate.dat",
            f"# GALERA saved state\nversion: 2.1\nuuid:    {_id('galera')}\nseqno:   -1\nsafe_to_bootstrap: 0\n",
            0o660,
            "mysql",
        )
        node.extra["redis"] = {"lastsave": int(time.time()) - 3600}
        _put(node, REDIS_DUMP, _rdb(node.extra["redis"]["lastsave"]), 0o644, "redis")
    elif node.kind == "undercloud":
        databases = _undercloud_databases(scenario)
        root = secrets.token_hex(16)
        users = _users(list(databases), node.hostname, root, galera=False)
        node.extra["databases"] = MariaDB(root, _with_mysql(databases, users), users)
        _put(node, MY_CNF, f'[client]\nuser=root\npassword="{root}"\n\n[mysql]\nuser=root\npassword="{root}"\n', 0o600)
        _put(
            node,
            "/etc/my.cnf.d/mariadb-server.cnf",
            "[mysqld]\ndatadir=/var/lib/mysql\n"
            "socket=/var/lib/mysql/mysql.sock\nlog-error=/var/log/mariadb/mariadb.log\n",
            0o644,
        )


def _put(node: SimNode, path: str, content: str | bytes, mode: int, owner: str | None = None) -> None:
    node.files[path] = content.encode() if isinstance(content, str) else content
    node.modes[path] = mode
    if owner:
        node.owners[path] = owner


def _path(node: SimNode, path: str) -> str:
    """A path as the command sees it: relative ones from the SSH user's home (sudo keeps it)."""
    return posixpath.normpath(posixpath.join(f"/home/{node.user}", path))


def _server(node: SimNode) -> MariaDB | None:
    if node.kind == "controller":
        return node.shared["databases"].galera if "databases" in node.shared else None
    return node.extra.get("databases") if node.kind == "undercloud" else None


def _not_found(name: str) -> tuple[int, bytes, bytes]:
    return 127, b"", f"bash: {name}: command not found\n".encode()


# -- mysql and mysqldump -------------------------------------------------------------------


def _option_file(text: str, program: str) -> dict[str, str]:
    """The [client] and [PROGRAM] groups of a MySQL option file."""
    values, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif (
            line
            and not line.startswith(("#", ";"))
            and section in ("client", "client-server", "client-mariadb", program)
        ):
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip().replace("_", "-")] = value
    return values


def _client(node: SimNode, program: str, args: list[str], stdin: bytes):
    """Parse a MariaDB client's command line: (options, positional arguments, stdin left for
    SQL), or an (exit status, stdout, stderr) answer when it cannot start."""
    options: dict[str, str | bool] = {}
    files = [MY_CNF]
    if args[:1] == ["--no-defaults"]:
        files, args = [], args[1:]
    first = args[0] if args else ""
    for name in ("--defaults-extra-file=", "--defaults-file="):
        if first.startswith(name):
            files = ([] if name == "--defaults-file=" else files) + [first[len(name) :]]
            args = args[1:]
    for arg in args:
        if arg.startswith(("--defaults-extra-file=", "--defaults-file=")):  # must come first
            return 7, b"", f"{program}: unknown variable '{arg[2:]}'\n".encode()
    for path in files:
        if path == "/dev/stdin":
            text, stdin = stdin.decode(errors="replace"), b""
        elif path in node.files:
            text = node.files[path].decode(errors="replace")
        elif path == MY_CNF:
            continue
        else:
            return (
                1,
                b"",
                (
                    f"Could not open required defaults file: {path}\n"
                    "Fatal error in defaults handling. Program aborted\n"
                ).encode(),
            )
        options.update(_option_file(text, program))
    takes_value = {"u": "user", "p": "password", "h": "host", "P": "port", "e": "execute", "D": "database"}
    if program == "mysqldump":
        takes_value["r"] = "result-file"
    flags = {
        "s": "silent",
        "N": "skip-column-names",
        "B": "batch" if program == "mysql" else "databases",
        "A": "all-databases",
        "r": "raw",
    }
    positional, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            options[name] = (
                value if eq else (rest.pop(0) if name in ("user", "host", "execute", "result-file") and rest else True)
            )
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                if letter in takes_value:
                    if letter == "p":  # -pSECRET only: a bare -p asks a terminal there is none of
                        options["password"] = letters or None
                    else:
                        options[takes_value[letter]] = letters or (rest.pop(0) if rest else "")
                    letters = ""
                elif letter in flags:
                    options[flags[letter]] = True
                else:
                    return 7, b"", f"{program}: unknown option '-{letter}'\n".encode()
        else:
            positional.append(arg)
    return options, positional, stdin


def _split_statements(sql: str) -> list[str]:
    statements, current, quote = [], "", None
    for char in sql:
        if quote:
            quote = None if char == quote and not current.endswith("\\") else quote
        elif char in "'\"`":
            quote = char
        elif char == ";":
            statements.append(current)
            current = ""
            continue
        current += char
    return [s for s in [*statements, current] if s.strip()]


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


@node_command("mysql")
def mysql(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    db = _server(node)
    if db is None:
        return _not_found("mysql")
    parsed = _client(node, "mysql", args, stdin)
    if isinstance(parsed[0], int):
        return parsed
    options, positional, stdin = parsed
    denied = db.login(node, str(options.get("user", "root")), options.get("password"))
    if denied:
        return 1, b"", f"ERROR 1045 (28000): {denied}\n".encode()
    database = options.get("database") or (positional[0] if positional else None)
    if database and database not in db.databases and database not in ("information_schema", "performance_schema"):
        return 1, b"", f"ERROR 1049 (42000): Unknown database '{database}'\n".encode()
    sql = options.get("execute") if isinstance(options.get("execute"), str) else stdin.decode(errors="replace")
    out = []
    for statement in _split_statements(sql):
        try:
            columns, rows = db.query(node, statement)
        except SqlError as exc:
            return 1, "".join(out).encode(), f"{exc}\n".encode()
        if not options.get("skip-column-names") and rows:
            out.append("\t".join(columns) + "\n")
        out += ["\t".join(_escape(v) for v in row) + "\n" for row in rows]
    return 0, "".join(out).encode(), b""


def _sql_value(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _dump_table(name: str, table: Table) -> str:
    columns = []
    for n, column in enumerate(table.columns):
        column_name, kind = column.split(" ", 1)
        auto = " AUTO_INCREMENT" if n == 0 and kind.startswith("int") else ""
        columns.append(f"  `{column_name}` {kind} {'NOT NULL' if n == 0 else 'DEFAULT NULL'}{auto},\n")
    key = table.columns[0].split(" ", 1)[0]
    increment = (
        f" AUTO_INCREMENT={len(table.rows) + 1}"
        if table.columns[0].split(" ", 1)[1].startswith("int") and table.rows
        else ""
    )
    inserts = (
        (
            f"INSERT INTO `{name}` VALUES "
            + ",".join("(" + ",".join(map(_sql_value, row)) + ")" for row in table.rows)
            + ";\n"
        )
        if table.rows
        else ""
    )
    return (
        f"\n--\n-- Table structure for table `{name}`\n--\n\n"
        f"DROP TABLE IF EXISTS `{name}`;\n"
        "/*!40101 SET @saved_cs_client     = @@character_set_client */;\n"
        "/*!40101 SET character_set_client = utf8 */;\n"
        f"CREATE TABLE `{name}` (\n" + "".join(columns) + f"  PRIMARY KEY (`{key}`)\n"
        f") ENGINE=InnoDB{increment} DEFAULT CHARSET=utf8;\n"
        "/*!40101 SET character_set_client = @saved_cs_client */;\n\n"
        f"--\n-- Dumping data for table `{name}`\n--\n\n"
        f"LOCK TABLES `{name}` WRITE;\n/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;\n{inserts}"
        f"/*!40000 ALTER TABLE `{name}` ENABLE KEYS */;\nUNLOCK TABLES;\n"
    )


DUMP_HEAD = """/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;
"""
DUMP_TAIL = """/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;
"""
MYSQLDUMP_USAGE = """Usage: mysqldump [OPTIONS] database [tables]
OR     mysqldump [OPTIONS] --databases DB1 [DB2 DB3...]
OR     mysqldump [OPTIONS] --all-databases
For more options, use mysqldump --help
"""
DUMP_FLAGS = {
    "opt",
    "single-transaction",
    "quick",
    "routines",
    "events",
    "triggers",
    "flush-privileges",
    "lock-tables",
    "skip-lock-tables",
    "add-drop-database",
    "hex-blob",
    "databases",
    "all-databases",
    "master-data",
    "skip-add-locks",
    "add-locks",
    "create-options",
    "extended-insert",
}


@node_command("mysqldump")
def mysqldump(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    db = _server(node)
    if db is None:
        return _not_found("mysqldump")
    parsed = _client(node, "mysqldump", args, stdin)
    if isinstance(parsed[0], int):
        return parsed
    options, positional, _ = parsed
    unknown = [name for name, value in options.items() if value is True and name not in DUMP_FLAGS | {"silent"}]
    if unknown:
        return 7, b"", f"mysqldump: unknown option '--{unknown[0]}'\n".encode()
    if options.get("all-databases"):
        names, tables = sorted(db.databases), None
    elif options.get("databases"):
        names, tables = positional, None
    else:
        names, tables = positional[:1], positional[1:] or None
    if not names:
        return 1, b"", MYSQLDUMP_USAGE.encode()
    denied = db.login(node, str(options.get("user", "root")), options.get("password"))
    if denied:
        return 2, b"", f'mysqldump: Got error: 1045: "{denied}" when trying to connect\n'.encode()
    target = options.get("result-file")
    if isinstance(target, str) and not node._dir_exists(posixpath.dirname(_path(node, target))):
        return (
            2,
            b"",
            f"mysqldump: Can't create/write to file '{target}' (Errcode: 2 \"No such file or directory\")\n".encode(),
        )
    single = not options.get("all-databases") and not options.get("databases")
    parts = [
        f"-- MySQL dump 10.19  Distrib {VERSION}, for Linux (x86_64)\n--\n"
        f"-- Host: localhost    Database: {'' if options.get('all-databases') else names[0]}\n"
        f"-- ------------------------------------------------------\n-- Server version\t{VERSION}\n\n",
        DUMP_HEAD,
    ]
    status, err = 0, b""
    for name in names:
        if name not in db.databases:
            status, err = (
                2,
                f"mysqldump: Got error: 1049: \"Unknown database '{name}'\" when selecting the database\n".encode(),
            )
            break
        if not single:
            parts.append(
                f"\n--\n-- Current Database: `{name}`\n--\n\n"
                f"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `{name}` /*!40100 DEFAULT CHARACTER SET utf8 */;\n\n"
                f"USE `{name}`;\n"
            )
        for table_name, table in sorted(db.databases[name].items()):
            if tables is None or table_name in tables:
                parts.append(_dump_table(table_name, table))
    else:
        parts.append(DUMP_TAIL + f"\n-- Dump completed on {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    dump = "".join(parts).encode()
    if isinstance(target, str):
        path = _path(node, target)
        node.files[path], node.modes[path] = dump, 0o644
        return status, b"", err
    return status, dump, err


# -- redis, mongodb, hiera -----------------------------------------------------------------


def _rdb(saved: int) -> bytes:
    """An RDB file (version 9): a few aux fields, one empty database, EOF, no checksum."""

    def aux(key: bytes, value: bytes) -> bytes:
        return b"\xfa" + bytes([len(key)]) + key + bytes([len(value)]) + value

    return (
        b"REDIS0009"
        + aux(b"redis-ver", b"6.2.7")
        + aux(b"redis-bits", b"64")
        + b"\xfa\x05ctime\xc2"
        + struct.pack("<I", saved)
        + b"\xfe\x00\xfb\x00\x00\xff"
        + b"\x00" * 8
    )


@node_command("redis-cli")
def redis_cli(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``redis-cli [-h HOST] [-p PORT] [-a PASSWORD | --askpass] COMMAND|--rdb FILE``; stdout is no
    terminal over SSH, so replies come in redis-cli's raw form (``PONG``, ``1733220000``)."""
    plane = _control_plane(node)
    if plane is None:
        return _not_found("redis-cli")
    given, password, words, err, rest = {"-h": "127.0.0.1", "-p": "6379"}, None, [], b"", list(args)
    rdb = None
    while rest:
        arg = rest.pop(0)
        if arg == "--rdb" and rest:
            rdb = rest.pop(0)
        elif arg in ("-h", "-p", "-n", "--user") and rest:
            given[arg] = rest.pop(0)
        elif arg == "-a" and rest:
            password = rest.pop(0)
            if "--no-auth-warning" not in args:
                err += b"Warning: Using a password with '-a' or '-u' option on the command line interface may not be safe.\n"
        elif arg == "--askpass":
            password = stdin.decode(errors="replace").split("\n")[0].rstrip("\r")
        elif arg != "--no-auth-warning":
            words = [arg, *rest]
            break
    host, port = given["-h"], given["-p"]
    target = next((n for n in plane.galera.galera if host == n.address and n.reachable), None)
    if target is None or port != "6379":
        return 1, b"", err + f"Could not connect to Redis at {host}:{port}: Connection refused\n".encode()
    if password is not None and password != plane.redis_password:
        return 1, b"", err + b"AUTH failed: WRONGPASS invalid username-password pair or user is disabled.\n"
    if password is None:
        return 1, b"NOAUTH Authentication required.\n", err
    if rdb is not None:  # the server's snapshot, streamed to a file here (as a replica's SYNC gets it)
        data = _rdb(max(int(time.time()), target.extra["redis"]["lastsave"]))
        if not node._dir_exists(rdb.rsplit("/", 1)[0] or "/"):
            return 1, b"", err + f"Error opening '{rdb}': No such file or directory\n".encode()
        node.files[rdb] = data
        return (
            0,
            b"",
            err
            + (
                f"sending REPLCONF capa eof\nSYNC sent to master, writing {len(data)} bytes to "
                f"'{rdb}'\nTransfer finished with success.\n"
            ).encode(),
        )
    command = words[0].lower() if words else ""
    if command == "ping":
        return 0, b"PONG\n", err
    if command == "bgsave":
        saved = target.extra["redis"]["lastsave"] = max(int(time.time()), target.extra["redis"]["lastsave"] + 1)
        _put(target, REDIS_DUMP, _rdb(saved), 0o644, "redis")
        return 0, b"Background saving started\n", err
    if command == "lastsave":
        return 0, f"{target.extra['redis']['lastsave']}\n".encode(), err
    if not command:
        return 1, b"", err + b"redis-cli: interactive mode needs a terminal\n"
    given = " ".join(f"'{w}'" for w in words[1:])
    return 1, f"ERR unknown command `{words[0]}`, with args beginning with: {given}\n".encode(), err


def _bson(document: dict) -> bytes:
    """BSON of a flat document of strings and ints."""
    body = b""
    for key, value in document.items():
        name = key.encode() + b"\x00"
        if isinstance(value, int):
            body += b"\x12" + name + struct.pack("<q", value)
        else:
            data = str(value).encode() + b"\x00"
            body += b"\x02" + name + struct.pack("<i", len(data)) + data
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


@node_command("mongodump")
def mongodump(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``mongodump [--oplog] --host IP --out DIR``: the telemetry database as BSON, as mongodump 3.x/4.x logs it."""
    plane = _control_plane(node)
    if plane is None or not plane.mongodb:
        return _not_found("mongodump")
    options = {a.split("=")[0]: a.split("=", 1)[1] if "=" in a else None for a in args if a.startswith("--")}
    for i, arg in enumerate(args[:-1]):
        if arg in ("--host", "--out", "-h", "-o"):
            options[{"-h": "--host", "-o": "--out"}.get(arg, arg)] = args[i + 1]
    stamp = lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())  # noqa: E731
    host = (options.get("--host") or "localhost").split(":")[0]
    if not any(host == n.address and n.reachable for n in plane.galera.galera):
        return 1, b"", f"{stamp()}\tFailed: error connecting to db server: no reachable servers\n".encode()
    out = _path(node, options.get("--out") or "dump")
    collections = {
        "ceilometer": {
            "meter": [
                {
                    "_id": _id("meter", n),
                    "counter_name": "cpu",
                    "counter_volume": n * 1000,
                    "resource_id": _id("server", n),
                }
                for n in range(5)
            ],
            "resource": [{"_id": _id("server", n), "project_id": "admin"} for n in range(3)],
        },
        "admin": {"system.version": [{"_id": "featureCompatibilityVersion", "version": "3.6"}]},
    }
    log = []
    for db, tables in collections.items():
        for name, documents in tables.items():
            log.append(f"{stamp()}\twriting {db}.{name} to ")
            _put(node, f"{out}/{db}/{name}.bson", b"".join(map(_bson, documents)), 0o644)
            _put(
                node,
                f"{out}/{db}/{name}.metadata.json",
                json.dumps(
                    {
                        "options": {},
                        "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_", "ns": f"{db}.{name}"}],
                        "uuid": uuid.uuid5(uuid.NAMESPACE_URL, f"{db}.{name}").hex,
                        "collectionName": name,
                    }
                ),
                0o644,
            )
            log.append(f"{stamp()}\tdone dumping {db}.{name} ({len(documents)} document{'s' * (len(documents) != 1)})")
    if "--oplog" in options:
        log += [f"{stamp()}\twriting captured oplog to ", f"{stamp()}\t\tdumped 0 oplog entries"]
        _put(node, f"{out}/oplog.bson", b"", 0o644)
    return 0, b"", "".join(line + "\n" for line in log).encode()


@node_command("hiera")
def hiera(node: SimNode, args: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``hiera KEY``: its value from the node's JSON hieradata (``nil`` when none has it)."""
    keys = [a for a in args if not a.startswith("-") and "=" not in a]
    if not keys:
        return 1, b"", b"Please supply a data item to look up\n"
    for path in sorted(p for p in node.files if p.startswith(HIERADATA + "/") and p.endswith(".json")):
        try:
            data = json.loads(node.files[path])
        except ValueError:
            continue
        if keys[0] in data:
            value = data[keys[0]]
            return 0, (value if isinstance(value, str) else json.dumps(value)).encode() + b"\n", b""
    return 0, b"nil\n", b""
