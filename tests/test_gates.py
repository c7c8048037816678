"""The code gates, run with the suite so CI refuses what they refuse: ruff's lint and format, and
mypy strict over stackreflex (pyproject.toml holds their configuration; lint-imports is
tests/test_layers.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ["stackreflex", "sim", "tests", "bench"]


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name(name)), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "argv",
    [("check", "--no-cache", *TREES), ("format", "--check", "--no-cache", *TREES)],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff_finds_nothing(argv):
    done = _tool("ruff", *argv)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_finds_nothing():
    done = _tool("mypy", "--cache-dir=/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout
