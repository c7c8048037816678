"""The README's simulator walkthrough, typed as written in a shell: `sim serve --env-file F`,
`. F`, then stackreflex and the operators' own `openstack` CLI with nothing else set."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(sys.executable).parent


@pytest.fixture
def simulator(tmp_path):
    """``stackreflex sim serve`` as a process of its own, on free ports; its env file."""
    env_file = tmp_path / "simrc"
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACKREFLEX_", "OS_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(tmp_path / "state"), PATH=f"{HERE}:{env['PATH']}")
    served = subprocess.Popen([sys.executable, "-m", "stackreflex", "sim", "serve", "--port", "0", "--ssh-port", "0",
                               "--state-dir", str(tmp_path / "sim"), "--env-file", str(env_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not env_file.exists():
        assert served.poll() is None, served.stderr.read()
        assert time.monotonic() < deadline, "the simulator never wrote its env file"
        time.sleep(0.1)
    yield env_file, env
    served.send_signal(signal.SIGTERM)
    served.wait(timeout=30)


def shell(env_file: Path, env: dict, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f". {env_file} && {script}"], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env["HOME"] if os.path.isdir(env["HOME"]) else None)


def test_the_simulator_walkthrough_works_as_written(simulator):
    env_file, env = simulator
    listed = shell(env_file, env, "openstack stack resource list -n5 --filter name=deployed-server overcloud -f value "
                                  "-c resource_status")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["CREATE_COMPLETE"] * 5
    status = shell(env_file, env, "stackreflex agents status --stack overcloud -f value -c host -c agent")
    assert status.returncode == 0, status.stdout + status.stderr
    hosts = [line.split()[0] for line in status.stdout.splitlines()]
    assert len(hosts) == 5 and all(h.startswith("127.0.0.") for h in hosts)
    assert all("not configured" in line for line in status.stdout.splitlines()), status.stdout
    configured = shell(env_file, env, "stackreflex agents configure --stack overcloud --wait -f json")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    after = shell(env_file, env, "stackreflex agents status --stack overcloud -f value -c agent")
    assert after.stdout.split() == ["polling"] * 5, after.stdout + after.stderr
