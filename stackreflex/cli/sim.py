"""``stackreflex sim``: run the simulated overcloud, and drive a running one."""

import json
import shlex
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from ..errors import StackreflexError
from ..sim.overcloud import Overcloud
from .common import console, table

app = typer.Typer(help="The simulated overcloud (Keystone, Heat, Swift temp URLs) for trying stackreflex.",
                  no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:5800"


@app.command()
def serve(
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML (default: the shipped 3+2 overcloud).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it on loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 5800,
    env_file: Annotated[Path | None, typer.Option(help="Also write the export lines here once serving.")] = None,
) -> None:
    """Serve the simulated overcloud until interrupted; the deployment starts at once.

    Prints `export OS_...` lines (so `eval "$(stackreflex sim serve ...)"`-style use works)
    and a clouds.yaml entry.
    """
    overcloud = Overcloud.start(host=host, port=port, scenario_file=scenario)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in overcloud.environment().items())
    print(exports, flush=True)
    print("# clouds.yaml entry:\n" + "\n".join("# " + line for line in overcloud.clouds_yaml().splitlines()),
          flush=True)
    print(f"# simulator admin API: {overcloud.base_url}/sim  (stackreflex sim scale --url {overcloud.base_url} ...)",
          flush=True)
    if env_file:
        env_file.write_text(exports + "\n")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    overcloud.stop()


def _call(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url.rstrip("/") + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", exc.reason)
        raise StackreflexError(f"simulator at {url}: {detail}") from None
    except urllib.error.URLError as exc:
        raise StackreflexError(f"no simulator answers at {url}: {exc.reason}") from None


@app.command()
def scale(
    role: Annotated[str, typer.Argument(help="Role to grow, e.g. ComputeDeployedServer.")],
    count: Annotated[str, typer.Argument(help="How many nodes to add, e.g. +2.")],
    url: Annotated[str, typer.Option(help="The running simulator.")] = DEFAULT_URL,
) -> None:
    """Scale a role up on a running simulator: the new members start in CREATE_IN_PROGRESS."""
    if not count.lstrip("+").isdigit():
        raise typer.BadParameter("give the number of nodes to add, e.g. +2", param_hint="COUNT")
    added = _call(url, "/sim/scale", {"role": role, "count": int(count.lstrip("+"))})["added"]
    console.print(table("added", ["role", "index", "host"], [(a["role"], a["index"], a["host"]) for a in added]))


@app.command()
def nodes(url: Annotated[str, typer.Option(help="The running simulator.")] = DEFAULT_URL) -> None:
    """Show the simulated nodes: resource status and whether their agent has polled."""
    state = _call(url, "/sim/nodes")
    console.print(f"stack: {state['stack_status']}")
    console.print(table(None, ["role", "index", "host", "status", "first poll"],
                        [(n["role"], n["index"], n["host"], n["status"], n["polled_at"]) for n in state["nodes"]]))
