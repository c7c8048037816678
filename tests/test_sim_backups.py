"""What the backup runbooks meet on the simulated nodes, over real SSH and SFTP: hieradata
holding the passwords, MariaDB (Galera on the controllers, its own on the undercloud), Redis,
GNU tar over a seeded filesystem, and the file tools around the archives."""

import hashlib
import io
import json
import re
import shlex
import tarfile

import paramiko
import pytest

from stackreflex_sim.faults import Fault
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Role, Scenario

from .test_sim_nodes import run, ssh

CONTROLLER, UNDERCLOUD = "127.0.0.11", "127.0.0.2"
#: The seed runbook's (2.2, step 4) list of controller paths, --exclude put before the paths.
CONTROLLER_PATHS = (
    "/etc /srv/node /var/log /var/lib/nova /var/lib/glance /var/lib/keystone /var/lib/cinder "
    "/var/lib/heat /var/lib/heat-config /var/lib/heat-cfntools /var/lib/rabbitmq /var/lib/neutron "
    "/var/lib/haproxy /var/lib/openvswitch /var/lib/redis /usr/libexec/os-apply-config /home/heat-admin"
)
SCHEMAS = (
    'mysql --defaults-extra-file=/dev/stdin -s -N -e "select distinct table_schema from '
    "information_schema.tables where engine='innodb' and table_schema != 'mysql';\""
)
GRANT_QUERIES = (
    "mysql --defaults-extra-file=/dev/stdin -s -N -e \"SELECT CONCAT('SHOW GRANTS FOR ''',user,"
    "'''@''',host,''';') FROM mysql.user where (length(user) > 0 and user NOT LIKE 'root')\""
)
GALERA = (
    "mysql -s -N -e \"SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment',"
    "'wsrep_cluster_size','wsrep_cluster_status','wsrep_ready')\""
)


@pytest.fixture(scope="module")
def client_key():
    return paramiko.ECDSAKey.generate()


@pytest.fixture(scope="module")
def overcloud(tmp_path_factory, client_key):
    scenario = Scenario(
        deployment_time=0.2,
        roles=[
            Role("ControllerDeployedServer", 3, ["127.0.0.11", "127.0.0.12", "127.0.0.13"]),
            Role("ComputeDeployedServer", 1, ["127.0.0.21"]),
        ],
    )
    oc = Overcloud.start(scenario, state_dir=tmp_path_factory.mktemp("hostkeys"), authorized_keys=[client_key])
    yield oc
    oc.stop()


def option_file(password: str) -> bytes:
    return f'[client]\nuser=root\npassword="{password}"\n'.encode()


def hieradata(client) -> tuple[dict, dict]:
    status, configs, _ = run(client, "sudo -n cat /etc/puppet/hieradata/service_configs.json")
    assert status == 0
    return json.loads(configs), json.loads(run(client, "sudo -n cat /etc/puppet/hieradata/vip_data.json")[1])


def test_hieradata_names_the_secrets_and_the_databases_dump_with_the_password_on_stdin(overcloud, client_key):
    with ssh(overcloud, CONTROLLER, client_key) as client:
        configs, vips = hieradata(client)
        password = configs["mysql::server::root_password"]
        assert re.fullmatch(r"[0-9a-f]{32}", password) and re.fullmatch(r"[0-9a-f]{32}", configs["redis::masterauth"])
        assert "mongodb::server::bind_ip" not in configs and vips["redis_vip"] == CONTROLLER
        assert run(client, f"sudo -n {SCHEMAS}", option_file("wrong")) == (
            1,
            "",
            "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)\n",
        )
        status, schemas, _ = run(client, f"sudo -n {SCHEMAS}", option_file(password))
        assert status == 0 and {"nova", "keystone", "nova_api", "placement"} <= set(schemas.split())
        assert "mysql" not in schemas.split()
        dump = "/var/tmp/mysql_backup/openstack_databases.sql"
        status, _, err = run(
            client,
            "sudo -n install -d -m 700 -o mysql /var/tmp/mysql_backup && sudo -n mysqldump "
            "--defaults-extra-file=/dev/stdin --single-transaction --databases "
            f"{' '.join(schemas.split())} --result-file={dump}",
            option_file(password),
        )
        assert (status, err) == (0, "")
        assert re.fullmatch(
            r"-- Dump completed on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", run(client, f"tail -n 1 {dump}")[1]
        )
        text = run(client, f"cat {dump}")[1]
        assert (
            text.startswith("-- MySQL dump 10.19  Distrib 10.5")
            and "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `nova`" in text
        )
        assert "INSERT INTO `cell_mappings` VALUES (1,'00000000-0000-0000-0000-000000000000','cell0')" in text
        assert run(
            client,
            f"sudo -n mysqldump --defaults-extra-file=/dev/stdin --databases nova nowhere --result-file={dump}",
            option_file(password),
        )[::2] == (2, "mysqldump: Got error: 1049: \"Unknown database 'nowhere'\" when selecting the database\n")
        # the grants: one query writes the SHOW GRANTS statements, a pipeline saves their answers
        status, queries, _ = run(client, f"sudo -n {GRANT_QUERIES}", option_file(password))
        assert status == 0 and "SHOW GRANTS FOR 'nova'@'%';" in queries.splitlines() and "'root'" not in queries
        grants = "/var/tmp/mysql_backup/openstack_databases_grants.sql"
        script = (
            f"mysql --defaults-extra-file=/dev/stdin -s -N -e {shlex.quote(' '.join(queries.split(chr(10))))}"
            f" | sed 's/$/;/' > {grants}"
        )
        assert run(client, f"sudo -n sh -c {shlex.quote(script)}", option_file(password)) == (0, "", "")
        saved = run(client, f"cat {grants}")[1].splitlines()
        assert all(line.endswith(";") for line in saved) and "GRANT ALL PRIVILEGES ON `nova`.* TO 'nova'@'%';" in saved
        assert any(
            re.fullmatch(r"GRANT USAGE ON \*\.\* TO 'nova'@'%' IDENTIFIED BY PASSWORD '\*[0-9A-F]{40}';", line)
            for line in saved
        )
    assert password not in "\n".join(overcloud.nodes[CONTROLLER].commands), "the password went by stdin only"


def test_galera_reports_each_node_and_a_desynced_one(overcloud, client_key):
    overcloud.faults.add(Fault("galera_desynced", "overcloud-controller-1"))
    try:
        with ssh(overcloud, CONTROLLER, client_key) as client:
            assert run(client, f"sudo -n {GALERA}") == (
                0,
                "wsrep_cluster_size\t3\nwsrep_cluster_status\tPrimary\n"
                "wsrep_local_state_comment\tSynced\nwsrep_ready\tON\n",
                "",
            )
        with ssh(overcloud, "127.0.0.12", client_key) as client:
            assert "wsrep_local_state_comment\tDonor/Desynced\n" in run(client, f"sudo -n {GALERA}")[1]
        with ssh(overcloud, "127.0.0.21", client_key) as client:
            assert run(client, f"sudo -n {GALERA}") == (127, "", "bash: mysql: command not found\n")
    finally:
        overcloud.faults.clear()


def test_redis_answers_with_the_password_from_stdin_and_bgsave_writes_a_dump(overcloud, client_key):
    with ssh(overcloud, CONTROLLER, client_key) as client:
        configs, vips = hieradata(client)
        secret = (configs["redis::masterauth"] + "\n").encode()
        redis = f"sudo -n redis-cli --askpass -h {vips['redis_vip']}"
        assert run(client, f"{redis} ping", secret) == (0, "PONG\n", "")
        assert run(client, f"{redis} ping", b"wrong\n") == (
            1,
            "",
            "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.\n",
        )
        before = int(run(client, f"{redis} lastsave", secret)[1])
        assert run(client, f"{redis} bgsave", secret) == (0, "Background saving started\n", "")
        assert int(run(client, f"{redis} lastsave", secret)[1]) > before
        with client.open_sftp() as sftp:
            assert sftp.open("/var/lib/redis/dump.rdb").read(9) == b"REDIS0009"
    with ssh(overcloud, UNDERCLOUD, client_key) as client:
        assert run(client, "mongodump --oplog --host 127.0.0.11 --out /var/tmp/mongo_backup/")[0] == 127


def test_tar_archives_the_controller_paths_and_the_archive_checks_out_over_sftp(overcloud, client_key):
    archive = "/var/tmp/filesystem_backup/overcloud-controller-0-filesystem.tar"
    with ssh(overcloud, CONTROLLER, client_key) as client:
        status, out, err = run(
            client,
            "sudo -n install -d -m 700 /var/tmp/filesystem_backup && sudo -n tar --xattrs "
            f"--ignore-failed-read -z -c -f {archive} --exclude /var/lib/nova/instances "
            f"{CONTROLLER_PATHS}",
        )
        assert (status, out) == (0, "")
        assert "tar: /srv/node: Warning: Cannot stat: No such file or directory\n" in err
        assert "tar: Removing leading `/' from member names\n" in err and "/var/lib/keystone" not in err
        fetched = io.BytesIO()
        with client.open_sftp() as sftp:
            sftp.getfo(archive, fetched)
            assert sftp.stat(archive).st_size == len(fetched.getvalue())
        with tarfile.open(fileobj=io.BytesIO(fetched.getvalue()), mode="r:gz") as tar:
            names = tar.getnames()
            assert (
                tar.extractfile("etc/puppet/hieradata/vip_data.json").read()
                == overcloud.nodes[CONTROLLER].files["/etc/puppet/hieradata/vip_data.json"]
            )
        assert {
            "etc/hosts",
            "var/lib/nova/.ssh/config",
            "var/lib/rabbitmq/.erlang.cookie",
            "var/lib/haproxy",
            "var/lib/redis/dump.rdb",
            "home/heat-admin/.ssh/authorized_keys",
        } <= set(names)
        assert not [n for n in names if n.startswith("var/lib/nova/instances")]
        assert "var/lib/nova/instances/_base" in "\n".join(overcloud.nodes[CONTROLLER].directories())
        listed = run(client, f"tar -t -f {archive}")[1].splitlines()
        assert "etc/" in listed and "etc/hosts" in listed
        digest = hashlib.sha256(fetched.getvalue()).hexdigest()
        assert run(client, f"sha256sum {archive}") == (0, f"{digest}  {archive}\n", "")
        size = len(fetched.getvalue())
        assert run(client, f"du -sbc {archive} /nowhere") == (
            1,
            f"{size}\t{archive}\n{size}\ttotal\n",
            "du: cannot access '/nowhere': No such file or directory\n",
        )
        assert run(client, "sudo -n rm -rf /var/tmp/filesystem_backup") == (0, "", "")
        assert run(client, f"test -e {archive}")[0] == 1 and run(client, "test -d /var/tmp/filesystem_backup")[0] == 1
        with client.open_sftp() as sftp, pytest.raises(FileNotFoundError):
            sftp.stat("/var/tmp/filesystem_backup")
        # without --ignore-failed-read a missing path fails the run, as GNU tar does
        status, _, err = run(client, "sudo -n tar -cf /var/tmp/partial.tar /etc/hosts /srv/node")
        assert status == 2 and err.endswith(
            "tar: /srv/node: Cannot stat: No such file or directory\n"
            "tar: Exiting with failure status due to previous errors\n"
        )


def test_the_undercloud_is_in_the_inventory_and_dumps_as_root_with_its_my_cnf(overcloud, client_key):
    node = overcloud.nodes[UNDERCLOUD]
    assert overcloud.inventory()["undercloud"] == f"{UNDERCLOUD}:{node.port}"
    assert node.kind == "undercloud" and any(
        line.startswith(f"[{UNDERCLOUD}]:{node.port} ") for line in overcloud.known_hosts_lines()
    )
    with ssh(overcloud, UNDERCLOUD, client_key) as client:
        assert run(client, "hostname") == (0, "undercloud\n", "")
        dump = "/root/undercloud-all-databases.sql"
        assert run(client, f"sudo -n mysqldump --opt --all-databases --result-file={dump}") == (0, "", "")
        text = run(client, f"sudo -n cat {dump}")[1]
        assert all(f"-- Current Database: `{db}`" in text for db in ("ironic", "mistral", "zaqar", "mysql"))
        assert run(client, f"tail -n 1 {dump}")[1].startswith("-- Dump completed on ")
        status, _out, err = run(
            client,
            f"sudo -n tar --xattrs --ignore-failed-read -cf /var/tmp/undercloud-backup.tar "
            f"{dump} /etc /var/log /var/lib/glance /var/lib/docker /srv/node /home/stack",
        )
        assert status == 0 and "tar: /var/lib/docker: Warning: Cannot stat: No such file or directory\n" in err
        assert "home/stack/stackrc" in run(client, "tar -tf /var/tmp/undercloud-backup.tar")[1].splitlines()
        assert (
            run(client, "cp -p /var/tmp/undercloud-backup.tar /var/tmp/copy.tar && sha256sum /var/tmp/copy.tar")[
                1
            ].split()[0]
            == hashlib.sha256(node.files["/var/tmp/undercloud-backup.tar"]).hexdigest()
        )


def test_sftp_streams_a_large_file_and_writes_lists_and_removes(overcloud, client_key):
    node = overcloud.nodes["127.0.0.21"]
    node.files["/var/tmp/big.bin"] = big = bytes(range(256)) * (40 * 4096)  # 40 MiB
    with ssh(overcloud, "127.0.0.21", client_key) as client, client.open_sftp() as sftp:
        fetched = io.BytesIO()
        sftp.getfo("/var/tmp/big.bin", fetched)
        assert hashlib.sha256(fetched.getvalue()).digest() == hashlib.sha256(big).digest()
        sftp.putfo(io.BytesIO(b"written over sftp\n"), "/var/tmp/note.txt")
        assert node.files["/var/tmp/note.txt"] == b"written over sftp\n"
        assert {"big.bin", "note.txt"} <= set(sftp.listdir("/var/tmp"))
        sftp.remove("/var/tmp/note.txt")
        assert "/var/tmp/note.txt" not in node.files
        with pytest.raises(FileNotFoundError):
            sftp.open("/var/tmp/note.txt")
    del node.files["/var/tmp/big.bin"]


def test_telemetry_mongodb_is_named_in_hieradata_and_dumps(tmp_path, client_key):
    scenario = Scenario(
        deployment_time=0.2,
        undercloud="",
        telemetry_mongodb=True,
        roles=[Role("ControllerDeployedServer", 1, ["127.0.0.14"])],
    )
    oc = Overcloud.start(scenario, state_dir=tmp_path / "hostkeys", authorized_keys=[client_key])
    try:
        assert "undercloud" not in oc.inventory()
        with ssh(oc, "127.0.0.14", client_key) as client:
            ip = run(client, "sudo -n hiera mongodb::server::bind_ip")[1].strip()
            assert ip == "127.0.0.14" == hieradata(client)[0]["mongodb::server::bind_ip"]
            status, _, err = run(client, f"sudo -n mongodump --oplog --host {ip} --out /var/tmp/mongo_backup/")
            assert status == 0 and "\twriting ceilometer.meter to \n" in err
        files = oc.nodes["127.0.0.14"].files
        assert {
            "/var/tmp/mongo_backup/ceilometer/meter.bson",
            "/var/tmp/mongo_backup/ceilometer/meter.metadata.json",
            "/var/tmp/mongo_backup/oplog.bson",
        } <= set(files)
    finally:
        oc.stop()
