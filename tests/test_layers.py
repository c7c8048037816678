"""The layering holds: `lint-imports` keeps pyproject.toml's contracts, and only the bus asks
which backend it is on."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_only_the_bus_asks_whether_it_is_embedded():
    askers = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "stackreflex").rglob("*.py")
        if "settings.embedded" in p.read_text() and "bus" not in p.relative_to(ROOT / "stackreflex").parts
    ]
    assert askers == []
