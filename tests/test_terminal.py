"""What an operator sees in a real terminal: the CLI driven in an 80×24 pseudo-terminal, its
bytes played into a terminal emulator (pyte) with scrollback, and the screen read back."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pyte
import pytest

from stackreflex.core.settings import Settings
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import Scenario

from .conftest import env_for, run_cli

COLUMNS, LINES = 80, 24


def in_terminal(settings: Settings, tmp_path, *args: str, env: dict, timeout: float = 120) -> tuple[int, list[str]]:
    """Run ``stackreflex ARGS`` on an 80×24 terminal; its exit status and every line it left,
    scrollback first."""
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "stackreflex", *args],
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env=env_for(settings, tmp_path, {**env, "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm"}),
    )
    os.close(replica)
    screen = pyte.HistoryScreen(COLUMNS, LINES, history=10_000, ratio=0.5)
    stream = pyte.ByteStream(screen)
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        stream.feed(chunk)
    os.close(primary)
    status = process.wait(timeout=timeout)
    rows = [*screen.history.top, *(screen.buffer[y] for y in range(screen.lines))]
    lines = ["".join(row[x].data for x in range(COLUMNS)).rstrip() for row in rows]
    while lines and not lines[-1]:
        lines.pop()
    return status, lines


@pytest.fixture
def cloud(tmp_path):
    made = []

    def start(**options) -> tuple[Overcloud, Settings]:
        oc = Overcloud.start(Scenario(**options))
        made.append(oc)
        return oc, Settings(database_url=f"sqlite:///{tmp_path}/audit.db")  # embedded: no broker

    yield start
    for oc in made:
        oc.stop()


def assert_one_clean_table(lines: list[str], header: str, rows: list[str]) -> None:
    """One final table (its header once), its rows whole, no leftover of the live display, no log line."""
    shown = "\n".join(lines)
    assert sum(header in line for line in lines) == 1, shown
    assert not any(line.startswith("runs") for line in lines), shown  # the live display's title is gone
    assert not any(" INFO " in line or "Traceback" in line for line in lines), shown
    assert all(any(row in line for line in lines) for row in rows), shown
    assert max(len(line) for line in lines) <= COLUMNS


def test_a_snapshot_followed_live_leaves_one_clean_table(cloud, tmp_path):
    oc, settings = cloud(
        compute_hosts={"compute-a.localdomain": 2},
        volume_every=2,
        volumes_per_server=2,
        power_time=0.3,
        snapshot_time=1.5,
    )
    status, lines = in_terminal(
        settings, tmp_path, "volume", "snapshot", "--server", "vm-compute-a-0", "--wait", env=oc.environment()
    )
    assert status == 0, "\n".join(lines)
    assert_one_clean_table(lines, "| volume", ["vm-compute-a-0-data ", "vm-compute-a-0-data-1"])
    assert any(line.startswith("published command.volume.snapshot id=") for line in lines)


def test_an_evacuation_followed_live_leaves_one_clean_table(cloud, tmp_path):
    oc, settings = cloud(
        compute_hosts={"compute-a.localdomain": 6, "compute-b.localdomain": 0},
        live_migration_time=0.5,
        max_concurrent_live_migrations=1,
    )
    status, lines = in_terminal(
        settings,
        tmp_path,
        "host",
        "evacuate",
        "compute-a.localdomain",
        "--max-parallel",
        "3",
        "--wait",
        env=oc.environment(),
    )
    assert status == 0, "\n".join(lines)
    assert_one_clean_table(lines, "| server", [f"vm-compute-a-{i} " for i in range(6)])
    # the same result for a script: JSON with stable keys, and values for a shell loop
    as_json = run_cli(
        settings, tmp_path, "audit", "runs", "--handler", "evacuate_host", "-f", "json", env=oc.environment()
    )
    [run] = json.loads(as_json.stdout)
    assert run["status"] == "succeeded" and run["subject"] == "compute-a.localdomain"
