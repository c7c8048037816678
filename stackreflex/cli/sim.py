"""``stackreflex sim``: run the simulated overcloud, and drive a running one."""

import base64
import json
import shlex
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import paramiko
import typer
import yaml

from stackreflex_sim.faults import FAULT_KINDS
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import ScenarioError, load_scenario

from ..core.errors import ConfigError, StackreflexError
from ..core.settings import default_state_dir
from .common import console, emit, say
from .output import Column, Listing, lists

NODE_COLUMNS = [
    Column("role"),
    Column("index", "number"),
    Column("host"),
    Column("status"),
    Column("polled_at", "time", header="first poll"),
    Column("deployments", "text"),
]

app = typer.Typer(
    help="The simulated overcloud (Keystone, Heat, Swift temp URLs) for trying stackreflex.", no_args_is_help=True
)

DEFAULT_URL = "http://127.0.0.1:5800"


@app.command()
def serve(
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML (default: the shipped 3+2 overcloud).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it on loopback).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 5800,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Also write the export lines here once serving: the cloud's OS_* variables and every stackreflex "
                "setting that reaches the nodes (inventory, SSH user, key and known_hosts), so `. FILE` is all a "
                "shell needs."
            )
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where node host keys (and a generated client key) are kept. Default: the state directory's sim/."
        ),
    ] = None,
    authorized_key: Annotated[
        list[Path] | None,
        typer.Option(
            help=(
                "Public key file allowed to log in to the nodes; repeatable. Default: a key generated in --state-dir."
            )
        ),
    ] = None,
    ssh_port: Annotated[int, typer.Option(help="SSH port of every node, each on its own 127.0.0.x address.")] = 2222,
) -> None:
    """Serve the simulated overcloud until interrupted; the deployment starts at once.

    Prints `export` lines: the cloud's OS_* variables and the settings that reach the nodes (an
    inventory and a known_hosts file written in --state-dir: the simulator knows its nodes' host
    keys; on a real cloud that trust is `stackreflex nodes trust`), and a clouds.yaml with the cloud as
    `overcloud` (STACKREFLEX_OVERCLOUD_CLOUD, for the validations that read the overcloud's own services).

    Example: stackreflex sim serve --env-file sim.env & sleep 2; . sim.env; stackreflex agents status --stack overcloud
    """
    if authorized_key is None:
        authorized_key = []
    state_dir = state_dir or default_state_dir() / "sim"
    keys, client_key = _authorized_keys(state_dir, authorized_key)
    try:
        chosen = load_scenario(scenario)
    except ScenarioError as exc:
        raise ConfigError(str(exc)) from None
    chosen.ssh_port = ssh_port
    overcloud = Overcloud.start(chosen, host=host, port=port, state_dir=state_dir / "hostkeys", authorized_keys=keys)
    inventory, known_hosts = state_dir / "inventory.yaml", state_dir / "known_hosts"
    inventory.write_text(yaml.safe_dump(overcloud.inventory(), sort_keys=False))
    known_hosts.write_text("".join(line + "\n" for line in overcloud.known_hosts_lines()))
    # the overcloud's own cloud (its overcloudrc), for the validations that read its services
    clouds = state_dir / "clouds.yaml"
    clouds.touch(mode=0o600)
    clouds.write_text(overcloud.clouds_yaml("overcloud"))
    settings = {
        "STACKREFLEX_INVENTORY": str(inventory),
        "STACKREFLEX_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACKREFLEX_SSH_USER": chosen.ssh_user,
        "STACKREFLEX_SSH_PORT": str(ssh_port or 22),
        "OS_CLIENT_CONFIG_FILE": str(clouds),
        "STACKREFLEX_OVERCLOUD_CLOUD": "overcloud",
    }
    if client_key:
        settings["STACKREFLEX_SSH_KEY_FILE"] = str(client_key)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in {**overcloud.environment(), **settings}.items())
    print(exports, flush=True)
    print(
        "# clouds.yaml entry:\n" + "\n".join("# " + line for line in overcloud.clouds_yaml().splitlines()), flush=True
    )
    for node in overcloud.nodes.values():
        print(f"# node {node.hostname}: ssh -p {node.port} {node.user}@{node.address}", flush=True)
    if client_key:
        print(f"# client key for the nodes: {client_key}  (STACKREFLEX_SSH_KEY_FILE)", flush=True)
    print(
        f"# simulator admin API: {overcloud.base_url}/sim  (stackreflex sim scale --url {overcloud.base_url} ...)",
        flush=True,
    )
    if env_file:
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text(exports + "\n")
        partial.replace(env_file)  # whoever waits for the file reads it whole
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    overcloud.stop()


def _authorized_keys(state_dir: Path, files: list[Path]) -> tuple[list[paramiko.PKey], Path | None]:
    """Keys allowed on the nodes; without any, a client key generated once in ``state_dir``."""
    if files:
        keys = []
        for path in files:
            kind, b64 = path.read_text().split()[:2]
            keys.append(paramiko.PKey.from_type_string(kind, base64.b64decode(b64)))
        return keys, None
    path = state_dir / "client_key"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        paramiko.ECDSAKey.generate().write_private_key_file(str(path))
        path.chmod(0o600)
    return [paramiko.ECDSAKey(filename=str(path))], path


def _call(url: str, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        method=method or ("POST" if body is not None else "GET"),
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", exc.reason)
        raise StackreflexError(f"simulator at {url}: {detail}") from None
    except urllib.error.URLError as exc:
        raise StackreflexError(f"no simulator answers at {url}: {exc.reason}") from None


@app.command()
@lists
def scale(
    role: Annotated[str, typer.Argument(help="Role to grow, e.g. ComputeDeployedServer.")],
    count: Annotated[str, typer.Argument(help="How many nodes to add, e.g. +2.")],
    url: Annotated[str, typer.Option(help="The running simulator.")] = DEFAULT_URL,
) -> None:
    """Scale a role up on a running simulator: the new members start in CREATE_IN_PROGRESS."""
    if not count.lstrip("+").isdigit():
        raise typer.BadParameter("give the number of nodes to add, e.g. +2", param_hint="COUNT")
    added = _call(url, "/sim/scale", {"role": role, "count": int(count.lstrip("+"))})["added"]
    emit(Listing(NODE_COLUMNS[:3], added, title="added"))


@app.command()
@lists
def nodes(url: Annotated[str, typer.Option(help="The running simulator.")] = DEFAULT_URL) -> None:
    """Show the simulated nodes: their member's status, whether their agent has polled, and each software deployment's state."""
    state = _call(url, "/sim/nodes")
    say(f"stack: {state['stack_status']}")
    emit(Listing(NODE_COLUMNS, state["nodes"]))


@app.command()
def fault(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(FAULT_KINDS)}.")],
    target: Annotated[
        str,
        typer.Argument(
            help=("What it strikes: a node (address or host name), server, volume, store, resource or path regex.")
        ),
    ] = "",
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "What else the fault names: unit_failed NODE UNIT, package_mismatch NODE PKG VERSION, "
                "ceph_health HEALTH_WARN REASON…"
            )
        ),
    ] = None,
    count: Annotated[int, typer.Option(help="Strike this many times (0: until cleared).")] = 0,
    status: Annotated[int, typer.Option(help="api_error: the HTTP status to answer.")] = 500,
    seconds: Annotated[float, typer.Option(help="api_slow: the delay.")] = 0.0,
    match: Annotated[
        str,
        typer.Option(
            help=(
                "command_failure: only commands containing this text; deployment_failure: only deployments whose name "
                "contains it."
            )
        ),
    ] = "",
    code: Annotated[int, typer.Option(help="deployment_failure: the exit status the deployment ends with.")] = 1,
    url: Annotated[str, typer.Option(help="The running simulator.")] = DEFAULT_URL,
) -> None:
    """Inject a fault into a running simulator (`stackreflex sim fault clear any` removes them all)."""
    if kind == "clear":
        _call(url, "/sim/faults", None, method="DELETE")
        console.print("faults cleared")
        return
    if kind not in FAULT_KINDS:
        raise typer.BadParameter(f"unknown fault {kind}; known: {', '.join(FAULT_KINDS)}", param_hint="KIND")
    added = _call(
        url,
        "/sim/faults",
        {
            "kind": kind,
            "target": target,
            "count": count,
            "status": status,
            "seconds": seconds,
            "match": match,
            "code": code,
            "args": list(args or []),
        },
    )["fault"]
    console.print(
        f"fault injected: {added['kind']} on {added['target']}"
        + (f" {' '.join(added['args'])}" if added.get("args") else "")
        + (f" ({added['count']} times)" if added["count"] else " (until cleared)")
    )
