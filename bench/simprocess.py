"""The simulated overcloud in its own process, for benchmarks: its threads must not share the
measured process's CPU time (in real life the cloud and the nodes are other machines)."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


class SimProcess:
    """`stackreflex sim serve` in its own process: the nodes' SSH servers must not share our CPU time
    slice (in real life they are other machines)."""

    def __init__(self, scenario_data: dict, work: Path, public_key: Path):
        scenario = work / "scenario.yaml"
        scenario.write_text(yaml.safe_dump(scenario_data))
        env_file = work / "simrc"
        env_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
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
                "--scenario",
                str(scenario),
                "--state-dir",
                str(work / "sim"),
                "--authorized-key",
                str(public_key),
                "--env-file",
                str(env_file),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.nodes: dict[str, int] = {}
        for line in self.proc.stdout:
            found = re.search(r"ssh -p (\d+) \S+@(\S+)", line)
            if found:
                self.nodes[found.group(2)] = int(found.group(1))
            if line.startswith("# simulator admin API"):
                break
        self.hosts: list[str] = []
        deadline = time.monotonic() + 30
        while not env_file.exists():  # written once the simulator serves
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator did not start")
            time.sleep(0.1)
        self.environment = dict(
            line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines()
        )
        self.environment = {k: v.strip("'") for k, v in self.environment.items()}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: a simulator of hundreds of SSH servers may take long to close
        them all, and what it leaves behind (its state directory) is thrown away anyway."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def print_table(header: tuple, rows: list[tuple]) -> None:
    """A plain aligned table on stdout: the benchmarks' output."""
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
