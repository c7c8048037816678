"""Deployed servers: when Heat waits for a pre-provisioned node, point its agent at its
metadata URL, then see it fetch and Heat move on. Reads like the runbook it replaces."""

import json
import re
from typing import Any

from ..core.envelope import Envelope
from ..core.records import FINAL_STATUSES, RunRecord
from ..core.registry import handler
from ..tasks.agents import AgentLayout, AgentSource, UnsafeValue, agent_fetched, configure_agent
from ..tasks.heat import (
    DEPLOYED_SERVER_TYPE,
    DeployedServer,
    Deployments,
    NotADeployedServer,
    NotInHeat,
    agent_source,
    deployed_server,
    deployed_servers,
    deployments_of,
)
from ..tasks.inventory import Host, load_inventory
from ..tasks.waiting import wait_until
from .context import RunContext

#: How long to wait for the metadata URL to appear in Heat (seconds); the waits for the agent and
#: for Heat's deployments are settings (agent_fetch_deadline, deployments_deadline).
URL_DEADLINE = 900.0
#: How long to wait in place for something that usually follows at once, before parking the run.
INLINE_WAIT = 5.0
#: The whole-stack command holds no thread while its node runs work: it is woken when one of
#: them saves progress, waits or ends, and looks again at the latest this often (seconds), in
#: case a wake-up crossed its own parking.
LOOK_AGAIN = 1.0
#: The envelope fields that name a deployed server in Heat (the watcher's field names).
NAMING_FIELDS = ("owner_stack", "owner_stack_id", "resource_name")
#: What an envelope may also say of the server; each is checked against Heat, never used as is.
CLAIMED_FIELDS = ("role", "index", "physical_resource_id", "resource_type")
#: How much of a claimed value a refusal shows (characters).
SHOWN_LENGTH = 200


def is_deployed_server(event: Envelope) -> bool:
    return (event.data or {}).get("resource_type") == DEPLOYED_SERVER_TYPE


def server_data(server: DeployedServer) -> dict[str, Any]:
    """The envelope data naming a deployed server (the watcher's field names)."""
    return {
        "owner_stack": server.stack_name,
        "owner_stack_id": server.stack_id,
        "resource_name": server.resource_name,
        "physical_resource_id": server.physical_id,
        "status": server.status,
        "role": server.role,
        "index": server.index,
    }


@handler(
    "heat.resource.CREATE_IN_PROGRESS",
    when=is_deployed_server,
    max_retries=4,
    min_backoff=5,
    max_backoff=60,
    time_limit=180,
)
def configure_new_node(event: Envelope, ctx: RunContext) -> None:
    """A deployed server is being created: configure its node's agent (first deployment and scale-up)."""
    configure_node(event.data or {}, ctx)


@handler("command.agent.configure", max_retries=4, min_backoff=5, max_backoff=60, time_limit=180)
def configure_node_command(event: Envelope, ctx: RunContext) -> None:
    """`stackreflex agents configure`: the same, for one node named by the command."""
    configure_node(event.data or {}, ctx)


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
    return f"{configured} of {len(nodes)} node(s) configured, {failed} failed, {len(nodes) - len(sent)} not started" + (
        f"; the runs of {', '.join(going)} go on (cancel each with `stackreflex runs cancel`)" if going else ""
    )


@handler(
    "command.agents.configure",
    max_retries=3,
    min_backoff=5,
    max_backoff=60,
    time_limit=120,
    compensate=_where_the_nodes_stand,
)
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
    nodes, sent, done = ctx.state["nodes"], ctx.state["sent"], ctx.state.setdefault("done", {})
    _window_step(ctx, stack, nodes, sent, done, window)
    if len(done) < len(nodes):
        ctx.recheck(
            LOOK_AGAIN, waiting_for=f"{len(nodes) - len(done)} of {len(nodes)} node(s)", key="nodes", deadline=3600
        )
    failed = {label: error for label, (status, error) in done.items() if status != "succeeded"}
    if failed:
        ctx.fail(
            f"{len(failed)} of {len(nodes)} node(s) failed: "
            + "; ".join(f"{label}: {error}" for label, error in sorted(failed.items()))
        )


def _window_step(
    ctx: RunContext,
    stack: str,
    nodes: list[dict[str, Any]],
    sent: dict[str, str],
    done: dict[str, list[str | None]],
    window: int,
) -> None:
    """Note the node runs that ended (in ``done``: label → [status, error]) and refill the
    window; only the runs not known to have ended are read, so a look costs the window, not N."""
    going = [label for label in sent if label not in done]
    runs = ctx.outcomes([sent[label] for label in going])
    # The window bounds the nodes being worked on over SSH: a node whose agent has fetched its
    # metadata only waits for Heat's deployments (minutes of puppet on a real node), holding nothing.
    busy = 0
    for label in going:
        rows = runs[sent[label]]
        if rows and rows[0].status in FINAL_STATUSES:
            done[label] = [rows[0].status, rows[0].error]
        elif not _fetched(rows):
            busy += 1
    # Nodes are sent in their listed order: the first len(sent) of them are out.
    unsent = nodes[len(sent) : len(sent) + max(window - busy, 0)]
    for data in unsent:
        label = server_of_data(data).label
        sent[label] = ctx.publish("command.agent.configure", subject=stack, data=data, key=label).id
    if unsent:
        ctx.checkpoint()
    failed = sum(1 for status, _ in done.values() if status != "succeeded")
    note = f"{len(done) - failed} configured, {failed} failed"
    if note != ctx.state.get("reported"):
        ctx.progress(len(done), len(nodes), note)
        ctx.state["reported"] = note


def _fetched(rows: list[RunRecord]) -> bool:
    """Whether a node run has seen its agent fetch (its saved state says so)."""
    return bool(rows) and json.loads(rows[0].state or "{}").get("fetched", False)


def server_of_data(data: dict[str, Any]) -> DeployedServer:
    return DeployedServer(
        data["owner_stack"],
        data["owner_stack_id"],
        data["resource_name"],
        data["physical_resource_id"],
        data.get("status", ""),
        data.get("role"),
        data.get("index"),
    )


def server_heat_has(data: dict[str, Any], ctx: RunContext) -> DeployedServer:
    """The deployed server ``data`` names (its owner stack and resource name) as Heat has it: its
    real id and type, its role and index from Heat's own nesting of its stack. The rest of the
    envelope is a claim, not an authority: one that disagrees with Heat, or names what Heat does
    not have, is refused, so a forged event cannot point one node's credentials at another node."""
    if "server" in ctx.state:  # checked by an earlier execution of this run: Heat's answer, kept
        return server_of_data(ctx.state["server"])
    target = "/".join(_shown(data.get(k)) for k in ("owner_stack", "resource_name"))
    with ctx.step("check the server against Heat", target=target) as detail:
        detail["envelope"] = {k: data.get(k) for k in (*NAMING_FIELDS, *CLAIMED_FIELDS) if k in data}
        missing = [k for k in NAMING_FIELDS if not isinstance(data.get(k), str) or not data[k]]
        if missing:
            ctx.fail(f"refused: the envelope does not name the server in Heat (no {', '.join(missing)})")
        try:
            server = deployed_server(ctx.cloud, *(data[k] for k in NAMING_FIELDS))
        except NotInHeat as exc:
            detail["heat"] = exc.explanation
            ctx.fail(
                f"refused: Heat has no resource {_shown(data['resource_name'])} in stack "
                f"{_shown(data['owner_stack'])} (id {_shown(data['owner_stack_id'])}): {exc.explanation}"
            )
        except NotADeployedServer as exc:
            detail["heat"] = {"resource_type": exc.resource_type}
            ctx.fail(
                f"refused: the envelope disagrees with Heat about {target}: resource_type "
                f"{_shown(data.get('resource_type'))} (Heat: {exc.resource_type})"
            )
        detail["heat"] = {**server_data(server), "resource_type": DEPLOYED_SERVER_TYPE}
        disagreements = _disagreements(data, server)
        if disagreements:
            detail["disagreements"] = disagreements
            ctx.fail(f"refused: the envelope disagrees with Heat about {server.path}: " + "; ".join(disagreements))
    ctx.state["server"] = server_data(server)
    return server


def _disagreements(data: dict[str, Any], server: DeployedServer) -> list[str]:
    """What ``data`` says of the server that Heat does not, each as ``field claimed (Heat: value)``;
    a field the envelope leaves out (or null) claims nothing."""
    found = []
    role, index = data.get("role"), data.get("index")
    if role is not None and role != server.role:
        found.append(f"role {_shown(role)} (Heat: {server.role or 'none, not a TripleO role member'})")
    if index is not None and (isinstance(index, bool) or str(index) != str(server.index)):
        found.append(f"index {_shown(index)} (Heat: {'none' if server.index is None else server.index})")
    physical_id = data.get("physical_resource_id")
    if physical_id and physical_id != server.physical_id and not _placeholder_of(server, physical_id):
        found.append(f"physical_resource_id {_shown(physical_id)} (Heat: {server.physical_id})")
    claimed_type = data.get("resource_type")
    if claimed_type is not None and claimed_type != DEPLOYED_SERVER_TYPE:
        found.append(f"resource_type {_shown(claimed_type)} (Heat: {DEPLOYED_SERVER_TYPE})")
    return found


def _placeholder_of(server: DeployedServer, value: object) -> bool:
    """Whether ``value`` is what Heat's events show for the resource before it has its id: its
    physical resource name, ``<stack>-<resource>-<12 characters>``."""
    prefix = re.escape(f"{server.stack_name}-{server.resource_name}-")
    return isinstance(value, str) and re.fullmatch(prefix + r"[a-z0-9]{12}", value) is not None


def _shown(value: object) -> str:
    """A value from an envelope, fit for a one-line reason: escaped if it holds anything unprintable."""
    text = "none" if value is None else str(value)
    text = text if text.isprintable() else json.dumps(text)
    return text if len(text) <= SHOWN_LENGTH else text[:SHOWN_LENGTH] + "…"


def _agent_source(ctx: RunContext, server: DeployedServer) -> AgentSource | None:
    """Where the node's agent must poll, as Heat's metadata says; a value that could not be
    written safely to the node fails the run (Heat will not say otherwise on a retry)."""
    try:
        return agent_source(ctx.cloud, server)
    except UnsafeValue as exc:
        ctx.fail(f"refused: the metadata of {server.label} in Heat: {exc}")


def configure_node(data: dict[str, Any], ctx: RunContext) -> None:
    """Point the node's agent at its metadata, see it fetch, then see Heat's software deployments
    for the server complete: that, not the agent polling, is the node configured."""
    server = server_heat_has(data, ctx)
    source = None
    if "url_read" not in ctx.state:
        with ctx.step("read metadata URL", target=server.label) as detail:
            source = _agent_source(ctx, server)
            detail["found"] = source is not None
            if source is not None:
                detail["collector"] = source.collector
        if source is None:
            ctx.recheck(
                10, waiting_for=f"the metadata URL of {server.label}", key="metadata URL", deadline=URL_DEADLINE
            )
        ctx.state["url_read"] = True
    # after a continuation, read it again: it carries a credential and is not kept in state
    source = source or _agent_source(ctx, server)
    if source is None:  # found by an earlier execution, gone from Heat since
        ctx.fail(f"the metadata of {server.label} in Heat no longer says where its agent polls")
    host = load_inventory(ctx.settings.inventory).host_for(server.role, server.index, path=server.path)
    layout = AgentLayout.from_settings(ctx.settings)
    with ctx.ssh(host.address, port=host.port) as ssh:
        if "configured" not in ctx.state:
            with ctx.step("configure os-collect-config", target=str(host)) as detail:
                try:
                    done = configure_agent(ssh, source, layout, host=str(host))
                except UnsafeValue as exc:
                    ctx.fail(f"refused: the agent configuration of {server.label}: {exc}")
                detail.update(
                    done,
                    node=server.label,
                    **(
                        {"metadata_url": source.settings["metadata_url"]}
                        if source.collector == "request"
                        else {source.collector: source.describe()}
                    ),
                )
            ctx.state["configured"] = True
        if "fetched" not in ctx.state:
            if not wait_until(lambda: agent_fetched(ssh, layout, source, host=str(host)), INLINE_WAIT, clock=ctx.clock):
                ctx.recheck(
                    2,
                    waiting_for=f"{host} to fetch its metadata",
                    key="fetch",
                    deadline=ctx.settings.agent_fetch_deadline,
                )
            with ctx.step("agent fetched its metadata", target=str(host)) as detail:
                detail["cache"] = layout.cache_path(source.collector)
            ctx.state["fetched"] = True
            ctx.checkpoint()  # saved: the whole-stack command's window moves on past this node
    deployments_complete(ctx, server, host)


def deployments_complete(ctx: RunContext, server: DeployedServer, host: Host) -> None:
    """Wait for Heat's software deployments of ``server`` to settle; fail naming the first that failed."""
    looked: list[Deployments] = []

    def settled() -> Deployments | None:
        looked[:] = [deployments_of(ctx.cloud, server)]
        return looked[0] if looked[0].settled else None

    deployments = wait_until(settled, INLINE_WAIT, clock=ctx.clock)
    if deployments is None:
        waiting = ", ".join(d.name for d in looked[0].pending)
        ctx.recheck(
            2,
            waiting_for=f"Heat to complete the deployments of {server.label}: {waiting}",
            key="heat",
            deadline=ctx.settings.deployments_deadline,
        )
    with ctx.step("Heat deployments", target=server.label) as detail:
        detail.update(
            summary=deployments.summary(), deployments={d.name: d.resource_status for d in deployments.states}
        )
        if deployments.failed:
            failed = deployments.failed[0]
            detail.update(failed=failed.name, reason=failed.reason, deploy_stderr=failed.stderr)
            ctx.fail(f"{server.label} on {host}: {failed.name} failed: {failed.reason}")
