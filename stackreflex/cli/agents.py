"""``stackreflex agents``: configure every node's os-collect-config for a stack, and see where each stands."""

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated

import typer

from ..core.errors import StackreflexError
from ..core.redaction import redact_text
from ..models.queries import RunFilter, list_runs, run_with_steps
from ..tasks.agents import AgentLayout, AgentSource, agent_fetched, agent_state
from ..tasks.cloud import connect_cloud
from ..tasks.heat import DeployedServer, agent_source, deployed_servers, deployments_of
from ..tasks.inventory import Host, load_inventory
from ..tasks.ssh import open_ssh
from .common import emit, invocation, say
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, prepare, send

if TYPE_CHECKING:
    from openstack.connection import Connection

app = typer.Typer(help="os-collect-config on the deployed servers of a stack.", no_args_is_help=True)


def _plan(stack: str, role: str | None) -> "tuple[Connection, list[tuple[DeployedServer, Host]]]":
    settings = invocation.settings
    conn = connect_cloud(settings)
    inventory = load_inventory(settings.inventory)
    servers = [s for s in deployed_servers(conn, stack) if role in (None, s.role)]
    if not servers:
        raise StackreflexError(f"stack {stack} has no deployed servers" + (f" in role {role}" if role else ""))
    return conn, [(s, inventory.host_for(s.role, s.index, path=s.path)) for s in servers]


PLAN_COLUMNS = [
    Column("role"),
    Column("index", "number"),
    Column("host"),
    Column("resource_status", header="resource"),
    Column("metadata_url", "text", header="metadata URL"),
]
RESULT_COLUMNS = [
    Column("node"),
    Column("host"),
    Column("status", "status", header="result"),
    Column("run_id", "id", long=True),
    Column("detail", "text"),
]
STATUS_COLUMNS = [
    Column("role"),
    Column("index", "number"),
    Column("host"),
    Column("deployments", "text", header="software deployments"),
    Column("agent", "text"),
]


@app.command()
@lists
def configure(
    stack: Annotated[str, typer.Option(help="The Heat stack, e.g. overcloud.")],
    role: Annotated[str | None, typer.Option(help="Only this role's nodes.")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Nodes configured over SSH at once; a node whose agent has fetched waits for Heat's "
            "deployments outside this window (default: setting).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan (URLs redacted); touch nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow progress; exit 1 if any node failed.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait follows before giving up.")] = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Point every deployed server's agent at its metadata URL: the whole-stack runbook, in parallel.

    Nodes already configured with the same URL and a running agent are left alone. A node is configured once Heat's software deployments for it are complete.
    """
    settings = invocation.settings
    if dry_run:
        conn, plan = _plan(stack, role)
        emit(
            Listing(
                PLAN_COLUMNS,
                [
                    {
                        "role": s.role,
                        "index": s.index,
                        "host": str(h),
                        "resource_status": s.status,
                        "metadata_url": _source_text(agent_source(conn, s)),
                    }
                    for s, h in plan
                ],
                title=f"plan for {stack} (nothing will be changed)",
            )
        )
        return
    envelope = prepare(
        settings,
        "command.agents.configure",
        stack,
        {"stack": stack, "role": role, "concurrency": concurrency},
        None,
        wait=wait,
    )
    progress = send(settings, envelope, wait=wait, timeout=timeout)
    say(f"published command.agents.configure id={envelope.id}")
    if progress is None:
        return
    audit = invocation.audit()
    rows = []
    for run in reversed(
        list_runs(
            audit, RunFilter(correlation_id=envelope.correlationid, handler="configure_node_command", limit=10000)
        )
    ):
        steps = run_with_steps(audit, run["id"])["steps"]
        host = next((s["target"] for s in steps if s["name"] == "configure os-collect-config"), "")
        action = next((s["detail"].get("action") for s in steps if s["name"] == "configure os-collect-config"), "")
        node = steps[0]["target"] if steps else ""
        rows.append(
            {"node": node, "host": host, "status": run["status"], "run_id": run["id"], "detail": action or run["error"]}
        )
    emit(Listing(RESULT_COLUMNS, sorted(rows, key=lambda r: r["node"]), title="nodes"))
    if not progress.succeeded:
        raise typer.Exit(1)


@app.command()
@lists
def status(
    stack: Annotated[str, typer.Option(help="The Heat stack, e.g. overcloud.")],
    role: Annotated[str | None, typer.Option(help="Only this role's nodes.")] = None,
) -> None:
    """Each node: role, index, host, where Heat's software deployments for it stand (what "configured" is judged by), and whether its agent is configured and polling."""
    settings = invocation.settings
    conn, plan = _plan(stack, role)
    layout = AgentLayout.from_settings(settings)

    def check(item: tuple[DeployedServer, Host]) -> tuple[DeployedServer, Host, str, str]:
        server, host = item
        deployments = deployments_of(conn, server).summary()
        source = agent_source(conn, server)
        try:
            with open_ssh(settings, host.address, port=host.port) as ssh:
                current, active = agent_state(ssh, layout, host=str(host))
                configured = bool(source and source.configured_in(current))
                polling = bool(source and active and agent_fetched(ssh, layout, source, host=str(host)))
                agent = "polling" if polling else ("configured" if configured else "not configured")
                agent += "" if active else " (agent inactive)"
        except StackreflexError as exc:
            agent = f"unreachable: {exc}"
        return server, host, deployments, agent

    with ThreadPoolExecutor(max_workers=settings.agent_concurrency) as pool:
        results = list(pool.map(check, plan))
    emit(
        Listing(
            STATUS_COLUMNS,
            [
                {"role": s.role, "index": s.index, "host": str(h), "deployments": deployments, "agent": agent}
                for s, h, deployments, agent in results
            ],
            title=f"{stack}: deployed servers",
        )
    )


def _source_text(source: AgentSource | None) -> str:
    """The metadata URL (signature masked), the heat or cfn collector's resource; never a secret."""
    if source is None:
        return "(not yet)"
    settings = source.settings
    if source.collector == "request":
        return redact_text(settings["metadata_url"])
    if source.collector == "cfn":
        return f"cfn: {settings['stack_name']} {settings['path']} with key {settings['access_key_id']}"
    return f"heat: {settings['stack_id']}/{settings['resource_name']} as {settings['user_id']}"
