"""``stackreflex demo``: the deployed-server flow, end to end, on the embedded runtime.

A simulated overcloud (3 controllers, 2 computes on pre-provisioned nodes) pauses with its
servers in CREATE_IN_PROGRESS; stackreflex's watcher sees it, its handler configures every
node's os-collect-config over SSH, and the stack completes; then two computes are added and
only they are configured. It ends with the audit timeline.
"""

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import paramiko
import typer
import yaml
from pydantic import SecretStr

from stackreflex_sim.heat import POLL_TRANSPORTS
from stackreflex_sim.overcloud import Overcloud
from stackreflex_sim.scenario import load_scenario

from ..core.errors import StackreflexError
from ..core.settings import default_state_dir
from ..models.queries import RunFilter, list_runs, run_with_steps
from ..runtime import Runtime
from ..sources.heat import HeatWatcher
from ..tasks.cloud import connect_cloud
from ..tasks.ssh import trust_host
from .common import console, emit, invocation, live_display, load_all_handlers
from .output import Column, Listing

if TYPE_CHECKING:
    from openstack.connection import Connection

#: Simulated seconds per real second in the demo, and the longest the demo waits for a phase.
DEMO_SPEED = 5.0
#: The demo's audit log, in the state directory beside the default one.
DEMO_DATABASE = "demo.db"
#: How often the demo's agents poll (simulated seconds; os-collect-config's default is 30): the
#: deployments of a member's stack start only once those of its server's stack are done.
DEMO_POLLING_INTERVAL = 5
PHASE_TIMEOUT = 90.0


def demo(
    transport: Annotated[
        str,
        typer.Option(
            help=(
                "How the nodes' agents poll Heat: POLL_TEMP_URL (a Swift temp URL, TripleO's), POLL_SERVER_HEAT (the heat "
                "collector, a Keystone user per node) or POLL_SERVER_CFN (the cfn collector, an EC2 key pair per node)."
            )
        ),
    ] = "POLL_TEMP_URL",
) -> None:
    """Watch a simulated TripleO deployment on pre-provisioned nodes get configured by stackreflex.

    Nothing to install or configure: the overcloud is simulated (Heat, Swift temp URLs, SSH nodes on 127.0.0.x), the bus and worker run in this process, and the audit log is SQLite in your state directory.

    A node counts as configured once Heat's software deployments for it are complete.
    """
    if transport not in POLL_TRANSPORTS:
        raise typer.BadParameter(f"use one of {', '.join(POLL_TRANSPORTS)}", param_hint="--transport")
    invocation.overrides.setdefault("log_level", "WARNING")  # the tables tell the story
    work = Path(tempfile.mkdtemp(prefix="stackreflex-demo-"))
    client_key = work / "id_ecdsa"
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(client_key))
    scenario = load_scenario()
    scenario.speed, scenario.ssh_port, scenario.transport = DEMO_SPEED, 0, transport
    overcloud = Overcloud.start(scenario, state_dir=work / "hostkeys", authorized_keys=[key])
    try:
        _run(overcloud, work, client_key)
    finally:
        overcloud.stop()


def _run(overcloud: Overcloud, work: Path, client_key: Path) -> None:
    inventory = work / "inventory.yaml"
    roles = {r.name: [f"{h}:{overcloud.nodes[h].port}" for h in r.hosts] for r in overcloud.scenario.roles}
    inventory.write_text(yaml.safe_dump({"roles": roles}))
    os.environ.update(overcloud.environment())
    settings = invocation.settings.model_copy(
        update={
            "broker_url": None,
            "database_url": SecretStr(_fresh_demo_database()),
            "inventory": inventory,
            "ssh_user": overcloud.scenario.ssh_user,
            "ssh_key_file": client_key,
            "ssh_known_hosts": work / "known_hosts",
            "cloud": None,
            "agent_polling_interval": DEMO_POLLING_INTERVAL,
        }
    )

    console.rule("1. trust the pre-provisioned nodes (an explicit act: their host keys go to known_hosts)")
    trusted = []
    for role, hosts in roles.items():
        for host in hosts[: 2 if "Compute" in role else None]:
            address, port = host.split(":")
            kind, fingerprint, _ = trust_host(settings, address, int(port))
            trusted.append({"node": _node_name(overcloud, host), "key": kind, "fingerprint": fingerprint})
    emit(Listing([Column("node"), Column("key", long=True), Column("fingerprint")], trusted))
    registry = load_all_handlers()
    conn = connect_cloud(settings)
    with Runtime(settings, registry) as runtime:
        stop = threading.Event()
        watcher = HeatWatcher(
            ["overcloud"], runtime.audit, runtime.bus.publisher, lambda: connect_cloud(settings), interval=0.5
        )
        threading.Thread(target=watcher.run, args=(stop,), daemon=True).start()
        try:
            console.rule("2. the deployment pauses with every server CREATE_IN_PROGRESS; stackreflex reacts")
            _follow(overcloud, conn, "CREATE_COMPLETE")
            # the spare compute hosts become trusted for the scale-up, explicitly too
            for host in roles["ComputeDeployedServer"][2:4]:
                address, port = host.split(":")
                trust_host(settings, address, int(port))
            console.rule("3. scale up: two more computes (only they are configured)")
            overcloud.heat.scale("ComputeDeployedServer", 2)
            _follow(overcloud, conn, "UPDATE_COMPLETE")
            _settle(runtime)
        finally:
            stop.set()
        _timeline(runtime, overcloud)


def _fresh_demo_database() -> str:
    """The demo's own audit log, new at every demo: the runs of an earlier demo (or of real work,
    were it the default log) must not be taken up against this simulated cloud."""
    path = default_state_dir() / DEMO_DATABASE
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _node_name(overcloud: Overcloud, host: str) -> str:
    """A node's host name, from its ``address:port`` or address."""
    address = host.rsplit(":", 1)[0]
    node = overcloud.nodes.get(address)
    return node.hostname if node is not None else host


NODE_COLUMNS = [
    Column("node"),
    Column("address"),
    Column("member_status", "status", header="Heat member"),
    Column("polled", header="agent polled"),
    Column("deployments", header="software deployments"),
]


def _nodes_table(overcloud: Overcloud, stack_status: str) -> Listing:
    rows = []
    with overcloud.heat.lock:
        for m in overcloud.heat.members:
            done = sum(d.status == "COMPLETE" for d in m.deployments)
            rows.append(
                {
                    "node": _node_name(overcloud, m.host),
                    "address": m.host,
                    "member_status": m.member.status,
                    "polled": "yes" if m.polled_at else "",
                    "deployments": f"{done}/{len(m.deployments)} done" if m.deployments else "",
                }
            )
    return Listing(NODE_COLUMNS, rows, title=f"stack overcloud: {stack_status}")


def _follow(overcloud: Overcloud, conn: "Connection", goal: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    with live_display("node") as update:
        while True:
            status = conn.orchestration.find_stack("overcloud", ignore_missing=False).status
            update(_nodes_table(overcloud, status))
            if status == goal:
                break
            if status.endswith("FAILED") or time.monotonic() > deadline:
                raise StackreflexError(
                    f"the demo stack did not reach {goal} (it is {status}); "
                    "see `stackreflex audit runs --status failed`"
                )
            time.sleep(0.25)
    emit(_nodes_table(overcloud, status))


def _settle(runtime: Runtime) -> None:
    """Embedded mode keeps continuations in memory: let every run finish before stopping."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while list_runs(runtime.audit, RunFilter(status=["pending", "running", "waiting"], limit=1)):
        if time.monotonic() > deadline:
            raise StackreflexError("runs still unfinished; see `stackreflex audit runs --status waiting`")
        time.sleep(0.2)


def _timeline(runtime: Runtime, overcloud: Overcloud) -> None:
    console.rule("4. the audit timeline: one run per node")
    runs = list(reversed(list_runs(runtime.audit, RunFilter(handler="configure_new_node", limit=100))))[-7:]
    rows, example = [], None
    for run in runs:
        steps = run_with_steps(runtime.audit, run["id"])["steps"]
        host = next((s["target"] for s in steps if s["name"] == "configure os-collect-config"), "")
        action = next((s["detail"].get("action") for s in steps if s["name"] == "configure os-collect-config"), "")
        example = example or next(
            (s["detail"].get("metadata_url") for s in steps if "metadata_url" in s["detail"]), None
        )
        rows.append(
            {
                "started": run["created_at"],
                "node": _node_name(overcloud, host),
                "action": action,
                "steps": len(steps),
                "status": run["status"],
                "duration_s": run["duration_s"],
            }
        )
    emit(
        Listing(
            [
                Column("started", "time"),
                Column("node"),
                Column("action", header="agent config"),
                Column("steps", "number"),
                Column("status", "status", header="run"),
                Column("duration_s", "number", header="seconds"),
            ],
            rows,
        )
    )
    if example:
        # soft wrap: a URL or a command cut at the console's width would not paste back whole
        console.print(f"a metadata URL as the audit log holds it: [dim]{example}[/]", soft_wrap=True)
    url = runtime.settings.database()
    console.print(
        f"\nthe demo's audit log (new at every demo): {url}\n"
        f"next: `STACKREFLEX_DATABASE_URL={url} stackreflex audit timeline --stack overcloud`, "
        "then `audit report --stack overcloud --html demo.html` or `audit show RUN` the same way",
        soft_wrap=True,
    )
