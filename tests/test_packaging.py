"""What ships: the core wheel carries stackreflex, its licence and type marker, and no simulator
(an SSH server has no place on a production worker); the simulator is its own wheel, and the
commands that need it say how to install it."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_core_wheel_ships_no_simulator_and_the_simulator_wheel_ships_it(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT), str(ROOT / "sim")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    core = zipfile.ZipFile(next(tmp_path.glob("stackreflex-*.whl"))).namelist()
    sim = zipfile.ZipFile(next(tmp_path.glob("stackreflex_sim-*.whl"))).namelist()
    assert "stackreflex/py.typed" in core
    assert any(name.endswith("licenses/LICENSE") for name in core)
    assert "stackreflex/models/migrations/versions" in " ".join(core)
    assert not [name for name in core if "stackreflex_sim" in name or name.startswith("stackreflex/sim/")]
    assert {"stackreflex_sim/overcloud.py", "stackreflex_sim/nodes.py", "stackreflex_sim/default.yaml"} <= set(sim)
    assert not [name for name in sim if name.startswith("stackreflex/")]
    metadata = next(n for n in core if n.endswith("METADATA"))
    text = zipfile.ZipFile(next(tmp_path.glob("stackreflex-*.whl"))).read(metadata).decode()
    assert "Provides-Extra: postgresql" in text and "Provides-Extra: sim" in text
    assert 'Requires-Dist: psycopg[binary]>=3.1; extra == "postgresql"' in text


def test_without_the_simulator_the_demo_says_which_extra_to_install(tmp_path):
    # sys.modules[name] = None is how Python marks a module absent: importing it raises
    # ModuleNotFoundError, as on a worker where only the core wheel is installed.
    absent = "import sys; sys.modules['stackreflex_sim'] = None; from stackreflex.cli.app import main; main()"
    for command in (["demo"], ["sim", "serve"]):
        done = subprocess.run(
            [sys.executable, "-c", absent, *command],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_python_path(), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "pip install 'stackreflex[sim]'" in done.stderr
        assert "Traceback" not in done.stderr
    worker = subprocess.run(
        [sys.executable, "-c", absent, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_python_path(), "HOME": str(tmp_path)},
    )
    assert worker.returncode == 0 and "demo" in worker.stdout


def _python_path() -> dict[str, str]:
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
