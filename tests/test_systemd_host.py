"""README "Running it for real", systemd, followed on a Debian host booted with systemd: a
bookworm tree made by debootstrap, booted by systemd-nspawn (systemd as its PID 1, sharing this
machine's network, so it reaches RabbitMQ, PostgreSQL and the simulated overcloud here). In it,
as root: deploy/install.sh as written, `nodes trust --known-hosts` into the service's file,
`systemctl start`; then an operator's command, run as the README says, is carried out by the
service and the simulated stack's nodes are configured.

The tree is made once and kept (STACKREFLEX_TEST_DEBIAN_ROOT, default
/var/cache/stackreflex-tests/bookworm); each test boots a copy of it.
"""

import os
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import make_settings, shell, wait_for

REPO = Path(__file__).resolve().parents[1]
DEBIAN_ROOT = Path(os.environ.get("STACKREFLEX_TEST_DEBIAN_ROOT", "/var/cache/stackreflex-tests/bookworm"))
#: What a fresh Debian host with systemd has, and what the README's steps use on it.
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,sudo,curl,ca-certificates,procps"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def debian_tree() -> Path:
    """The debootstrapped tree, made the first time (about a minute, from Debian's mirror)."""
    if os.geteuid() != 0:
        pytest.skip("booting a Debian host with systemd-nspawn needs root")
    marker = DEBIAN_ROOT / ".stackreflex-packages"
    if marker.exists() and marker.read_text() == PACKAGES:
        return DEBIAN_ROOT
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed to boot a Debian host; run the tests with scripts/test")
    partial = DEBIAN_ROOT.with_name(DEBIAN_ROOT.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(DEBIAN_ROOT, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    (partial / ".stackreflex-packages").write_text(PACKAGES)
    partial.rename(DEBIAN_ROOT)
    return DEBIAN_ROOT


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory, wheel) -> Path:
    """stackreflex's wheel and every wheel it needs with [postgresql]: the host installs offline
    (`install.sh --pip-arg=--no-index --pip-arg=--find-links=DIR`, as the README offers)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(house), f"{wheel}[postgresql]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return house


class BootedHost:
    """A copy of the Debian tree booted by systemd-nspawn; ``run(script)`` runs bash in it as root."""

    def __init__(self, root: Path, binds: dict[Path, str], log: Path):
        self.root = root
        self.log = log
        self.name = f"srx-{uuid.uuid4().hex[:8]}"
        (root / "etc" / "hostname").write_text(self.name + "\n")
        (root / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        command = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--console=passive"]
        command += ["--directory", str(root), f"--machine={self.name}"]
        command += [f"--bind-ro={source}:{target}" for source, target in binds.items()]
        with log.open("w") as out:
            self.nspawn = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.init = wait_for(self._init_pid, timeout=60, message="the container's PID 1")
        state = wait_for(
            lambda: (s := self.run("systemctl is-system-running").stdout.strip()) in ("running", "degraded") and s,
            timeout=180,
            interval=1,
            message=f"the host booted (its console: {log})",
        )
        self.degraded = state == "degraded"

    def _init_pid(self) -> int | None:
        assert self.nspawn.poll() is None, self.log.read_text()[-3000:]
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:
                continue
            pids = fields.get("NSpid", "").split()
            if len(pids) == 2 and pids[1] == "1" and self._descends_from_nspawn(int(pids[0])):
                return int(pids[0])
        return None

    def _descends_from_nspawn(self, pid: int) -> bool:
        while pid > 1:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
            if pid == self.nspawn.pid:
                return True
        return False

    def run(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        enter = ["nsenter", f"--target={self.init}", "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd"]
        return subprocess.run(
            [*enter, "/usr/bin/env", "-i", PATH, "HOME=/root", "LANG=C.UTF-8", "/bin/bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def must(self, script: str, timeout: float = 300) -> str:
        done = self.run(script, timeout)
        assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        return done.stdout

    def stop(self) -> None:
        if self.nspawn.poll() is None:
            self.run("systemctl poweroff --no-block", timeout=30)
            try:
                self.nspawn.wait(60)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(30)


@pytest.fixture
def debian_host(tmp_path, wheelhouse):
    tree = debian_tree()
    root = tmp_path / "host"
    subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(root)], check=True, timeout=300)
    identity = tmp_path / "identity"
    identity.mkdir()
    binds = {REPO: "/src", wheelhouse: "/wheelhouse", identity: "/identity"}
    host = BootedHost(root, binds, tmp_path / "console.log")
    try:
        yield host, identity
    finally:
        host.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_readme_s_systemd_steps_on_a_booted_debian_host_give_a_worker_that_configures_a_stack(
    debian_host, simulator, wheelhouse, broker_url, postgres_url, namespace
):
    host, identity = debian_host
    state = simulator[0].parent / "sim"
    for name in ("clouds.yaml", "client_key", "inventory.yaml"):
        shutil.copy(state / name, identity / name)
    settings = make_settings(broker_url, postgres_url, namespace)
    (identity / "env").write_text(
        "\n".join(
            [
                f"STACKREFLEX_BROKER_URL={broker_url}",
                f"STACKREFLEX_DATABASE_URL={postgres_url}",
                f"STACKREFLEX_SIGNING_KEY={secrets.token_hex(32)}",
                f"STACKREFLEX_NAMESPACE={settings.namespace}",
                f"STACKREFLEX_QUEUE_TYPE={settings.queue_type}",
                "OS_CLOUD=overcloud",
                "OS_CLIENT_CONFIG_FILE=/etc/stackreflex/clouds.yaml",
                "STACKREFLEX_OVERCLOUD_CLOUD=overcloud",
                "",
            ]
        )
    )
    wheel_name = next(p.name for p in wheelhouse.glob("stackreflex-*.whl"))

    # The install, as the README gives it (the wheels from the wheelhouse: the host is offline).
    said = host.must(
        "cd /src && deploy/install.sh --clouds-yaml /identity/clouds.yaml --ssh-key /identity/client_key"
        " --inventory /identity/inventory.yaml --env-file /identity/env --watch overcloud"
        f" --pip-arg=--no-index --pip-arg=--find-links=/wheelhouse /wheelhouse/{wheel_name}"
    )
    assert "units stackreflex-worker.service stackreflex-watcher@overcloud.service" in said, said
    assert host.must("id -u stackreflex && getent passwd stackreflex | cut -d: -f6,7").split()[1] == (
        "/var/lib/stackreflex:/usr/sbin/nologin"
    )
    modes = host.must("stat -c '%n %a %U:%G' /etc/stackreflex /etc/stackreflex/*").splitlines()
    assert (
        "/etc/stackreflex 750 root:stackreflex" in modes
        and "/etc/stackreflex/ssh_key 600 stackreflex:stackreflex" in modes
    )
    assert host.must("systemctl is-enabled stackreflex-worker stackreflex-watcher@overcloud").split() == [
        "enabled",
        "enabled",
    ]

    # Step 3: the nodes' host keys into the service's file.
    nodes = [
        a
        for addresses in yaml.safe_load((identity / "inventory.yaml").read_text())["roles"].values()
        for a in addresses
    ]
    trusted = host.must(
        "/opt/stackreflex/bin/stackreflex nodes trust --known-hosts /etc/stackreflex/known_hosts -f value "
        + " ".join(nodes)
    )
    assert len(trusted.splitlines()) == len(nodes), trusted
    assert host.must("stat -c '%a %U' /etc/stackreflex/known_hosts").split() == ["640", "stackreflex"]

    # Step 4: start; READY=1 makes the worker active; /readyz answers 200.
    host.must("systemctl start stackreflex-worker stackreflex-watcher@overcloud", timeout=120)
    assert host.must("systemctl is-active stackreflex-worker stackreflex-watcher@overcloud").split() == [
        "active",
        "active",
    ]
    assert host.must("curl -fsS http://127.0.0.1:9810/readyz") == "ready\n"
    journal = host.must("journalctl -u stackreflex-worker -o cat --no-pager")
    assert "worker ready:" in journal, journal

    # Step 5: an operator's command, as the service user: the service's worker carries it out.
    configured = host.must(
        "sudo -u stackreflex sh -c 'set -a; . /etc/stackreflex/env; exec /opt/stackreflex/bin/stackreflex"
        " --config /etc/stackreflex/config.toml agents configure --stack overcloud --wait -f json'",
        timeout=300,
    )
    assert "succeeded" in configured, configured
    status = host.must(
        "sudo -u stackreflex sh -c 'set -a; . /etc/stackreflex/env; exec /opt/stackreflex/bin/stackreflex"
        " --config /etc/stackreflex/config.toml agents status --stack overcloud -f value -c agent'"
    )
    assert status.split() == ["polling"] * 5, status
    journal = host.must("journalctl -u stackreflex-worker -o cat --no-pager")
    assert "run succeeded: configure_stack_agents" in journal, journal[-4000:]
    assert "CHANGE_ME" not in host.must("cat /etc/stackreflex/env")

    # And the cloud says so: with every node's agent running its deployments, the stack completes.
    wait_for(
        lambda: (
            shell(*simulator, "openstack stack show overcloud -f value -c stack_status").stdout.strip()
            == "CREATE_COMPLETE"
        ),
        timeout=120,
        interval=1,
        message="the overcloud stack CREATE_COMPLETE",
    )
