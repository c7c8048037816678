"""A three-node RabbitMQ cluster on loopback (``scripts/rabbitmq-cluster``), beside the system
broker, for the tests of what survives a node's loss."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rabbitmq-cluster"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
NODES = ("srx-a@localhost", "srx-b@localhost", "srx-c@localhost")
PORTS = (5681, 5682, 5683)


class Cluster:
    """The cluster whose data, logs and cookie live in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _script(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), action, str(self.directory)], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0 and action != "status":
            raise AssertionError(f"rabbitmq-cluster {action} failed:\n{done.stdout}{done.stderr}")
        return done

    def start(self) -> "Cluster":
        self._script("start", timeout=240)
        return self

    def stop(self) -> None:
        self._script("stop", timeout=120)

    def status(self) -> str:
        return str(self._script("status", timeout=60).stdout)

    def url(self, node: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{PORTS[node]}/"

    def urls(self, *order: int) -> str:
        """The nodes' URLs, in this order, as STACKREFLEX_BROKER_URL takes them."""
        return ",".join(self.url(n) for n in order)

    def ctl(self, node: int, *args: str, timeout: float = 120) -> str:
        """rabbitmqctl against one node, with the cluster's cookie."""
        cookie = (self.directory / ".erlang.cookie").read_text().strip()
        done = subprocess.run(
            [RABBITMQCTL, "--erlang-cookie", cookie, "-n", NODES[node], *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"HOME": str(self.directory), "PATH": "/usr/bin:/bin"},
        )
        if done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} on {NODES[node]} failed:\n{done.stdout}{done.stderr}")
        return str(done.stdout)

    def stop_node(self, node: int) -> None:
        """The node's RabbitMQ application stops (its clients are disconnected); its VM stays."""
        self.ctl(node, "stop_app")

    def start_node(self, node: int) -> None:
        self.ctl(node, "start_app")
        self.ctl(node, "await_startup")
