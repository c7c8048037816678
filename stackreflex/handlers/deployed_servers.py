"""Deployed servers: when Heat waits for a pre-provisioned node, point its agent at its
metadata URL, then see it fetch and Heat move on. Reads like the runbook it replaces."""

from ..bus.envelope import Envelope
from ..models.tables import FINAL_STATUSES
from ..tasks.agents import AgentLayout, agent_fetched, configure_agent
from ..tasks.heat import DEPLOYED_SERVER_TYPE, DeployedServer, agent_source, deployed_servers
from ..tasks.inventory import load_inventory
from ..tasks.waiting import wait_until
from .context import RunContext
from .registry import handler


#: Waits: the URL to appear in Heat, the agent to fetch it, Heat to move on (seconds).
URL_DEADLINE, FETCH_DEADLINE, HEAT_DEADLINE = 900.0, 600.0, 1800.0
#: How long to wait in place for something that usually follows at once, before parking the run.
INLINE_WAIT = 5.0
#: The whole-stack command follows its window of node runs in place this long, looking this often (seconds).
INLINE_FOLLOW, FOLLOW_INTERVAL = 20.0, 0.1


def is_deployed_server(event: Envelope) -> bool:
    return (event.data or {}).get("resource_type") == DEPLOYED_SERVER_TYPE


def server_of(event: Envelope) -> DeployedServer:
    return server_of_data(event.data)


def server_data(server: DeployedServer) -> dict:
    """The envelope data naming a deployed server (the watcher's field names)."""
    return {"owner_stack": server.stack_name, "owner_stack_id": server.stack_id,
            "resource_name": server.resource_name, "physical_resource_id": server.physical_id,
            "status": server.status, "role": server.role, "index": server.index}


@handler("heat.resource.CREATE_IN_PROGRESS", when=is_deployed_server, max_retries=4, min_backoff=5,
         max_backoff=60, time_limit=180)
def configure_new_node(event: Envelope, ctx: RunContext) -> None:
    """A deployed server is being created: configure its node's agent (first deployment and scale-up)."""
    configure_node(server_of(event), ctx)


@handler("command.agent.configure", max_retries=4, min_backoff=5, max_backoff=60, time_limit=180)
def configure_node_command(event: Envelope, ctx: RunContext) -> None:
    """`stackreflex agents configure`: the same, for one node named by the command."""
    configure_node(server_of(event), ctx)


def _where_the_nodes_stand(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled `agents configure`: nothing to undo (a configured agent is what was asked
    for); what was configured, what failed, and which node runs go on."""
    nodes, sent = ctx.state.get("nodes", []), ctx.state.get("sent", {})
    if not nodes:
        return "no node had been configured"
    runs = ctx.outcomes(list(sent.values()))
    status = {label: rows[0].status for label, envelope_id in sent.items() for rows in [runs[envelope_id]] if rows}
    configured = sum(s == "succeeded" for s in status.values())
    going = sorted(label for label, s in status.items() if s not in FINAL_STATUSES)
    failed = len(status) - configured - len(going)
    return (f"{configured} of {len(nodes)} node(s) configured, {failed} failed, {len(nodes) - len(sent)} not started"
            + (f"; the runs of {', '.join(going)} go on (cancel each with `stackreflex runs cancel`)" if going else ""))


@handler("command.agents.configure", max_retries=3, min_backoff=5, max_backoff=60, time_limit=120,
         compensate=_where_the_nodes_stand)
def configure_stack_agents(event: Envelope, ctx: RunContext) -> None:
    """`stackreflex agents configure`: every node of a stack (or role), a window of N at a time."""
    stack, role = event.data["stack"], event.data.get("role")
    window = int(event.data.get("concurrency") or ctx.settings.agent_concurrency)
    if "nodes" not in ctx.state:
        with ctx.step("list deployed servers", target=stack) as detail:
            servers = [s for s in deployed_servers(ctx.cloud, stack) if role in (None, s.role)]
            detail["count"] = len(servers)
        if not servers:
            ctx.fail(f"stack {stack} has no deployed servers" + (f" in role {role}" if role else ""))
        ctx.state["nodes"], ctx.state["sent"] = [server_data(s) for s in servers], {}
    nodes, sent = ctx.state["nodes"], ctx.state["sent"]
    follow_until = ctx.clock.monotonic() + INLINE_FOLLOW
    while True:
        finished = _window_step(ctx, stack, nodes, sent, window)
        if len(finished) == len(nodes):
            break
        if ctx.stopping or ctx.clock.monotonic() > follow_until:  # hold no thread for long: look again later
            ctx.recheck(1, waiting_for=f"{len(nodes) - len(finished)} of {len(nodes)} node(s)", key="nodes",
                        deadline=3600)
        ctx.sleep(FOLLOW_INTERVAL)
    failed = {label: run for label, run in finished.items() if run.status != "succeeded"}
    if failed:
        ctx.fail(f"{len(failed)} of {len(nodes)} node(s) failed: " +
                 "; ".join(f"{label}: {run.error}" for label, run in sorted(failed.items())))


def _window_step(ctx: RunContext, stack: str, nodes: list[dict], sent: dict, window: int) -> dict:
    """Refill the window of node runs; returns the finished ones, by node."""
    runs = ctx.outcomes(list(sent.values()))
    finished = {label: rows[0] for label, eid in sent.items() for rows in [runs[eid]]
                if rows and rows[0].status in FINAL_STATUSES}
    published = False
    for data in nodes:
        label = server_of_data(data).label
        if label not in sent and len(sent) - len(finished) < window:
            sent[label] = ctx.publish("command.agent.configure", subject=stack, data=data, key=label).id
            published = True
    if published:
        ctx.checkpoint()
    failed = sum(1 for run in finished.values() if run.status != "succeeded")
    note = f"{len(finished) - failed} configured, {failed} failed"
    if note != ctx.state.get("reported"):
        ctx.progress(len(finished), len(nodes), note)
        ctx.state["reported"] = note
    return finished


def server_of_data(data: dict) -> DeployedServer:
    return DeployedServer(data["owner_stack"], data["owner_stack_id"], data["resource_name"],
                          data["physical_resource_id"], data.get("status", ""), data.get("role"), data.get("index"))


def configure_node(server: DeployedServer, ctx: RunContext) -> None:
    source = None
    if "url_read" not in ctx.state:
        with ctx.step("read metadata URL", target=server.label) as detail:
            source = agent_source(ctx.cloud, server)
            detail["found"] = source is not None
            if source is not None:
                detail["collector"] = source.collector
        if source is None:
            ctx.recheck(10, waiting_for=f"the metadata URL of {server.label}", key="metadata URL",
                        deadline=URL_DEADLINE)
        ctx.state["url_read"] = True
    # after a continuation, read it again: it carries a credential and is not kept in state
    source = source or agent_source(ctx.cloud, server)
    host = load_inventory(ctx.settings.inventory).host_for(server.role, server.index, path=server.path)
    layout = AgentLayout.from_settings(ctx.settings)
    with ctx.ssh(host.address, port=host.port) as ssh:
        if "configured" not in ctx.state:
            with ctx.step("configure os-collect-config", target=str(host)) as detail:
                detail.update(configure_agent(ssh, source, layout, host=str(host)), node=server.label,
                              **({"metadata_url": source.settings["metadata_url"]} if source.collector == "request"
                                 else {"heat": source.describe()}))
            ctx.state["configured"] = True
        if "fetched" not in ctx.state:
            if not wait_until(lambda: agent_fetched(ssh, layout, source, host=str(host)), INLINE_WAIT,
                              clock=ctx.clock):
                ctx.recheck(2, waiting_for=f"{host} to fetch its metadata", key="fetch", deadline=FETCH_DEADLINE)
            with ctx.step("agent fetched its metadata", target=str(host)) as detail:
                detail["cache"] = layout.cache_path(source.collector)
            ctx.state["fetched"] = True
    status = wait_until(lambda: _heat_settled(ctx, server), INLINE_WAIT, clock=ctx.clock)
    if status is None:
        ctx.recheck(2, waiting_for=f"Heat to complete {server.label}", key="heat", deadline=HEAT_DEADLINE)
    with ctx.step("Heat moved on", target=server.label) as detail:
        detail["resource_status"] = status
    if status.endswith("FAILED"):
        ctx.fail(f"{server.label} on {host}: Heat reports {status}")


def _heat_settled(ctx: RunContext, server: DeployedServer) -> str | None:
    """The server resource's status once it is no longer in progress, else None."""
    response = ctx.cloud.orchestration.get(
        f"/stacks/{server.stack_name}/{server.stack_id}/resources/{server.resource_name}")
    status = response.json()["resource"]["resource_status"]
    return None if status.endswith("IN_PROGRESS") else status
