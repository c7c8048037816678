"""Work on a server's disks with the server stopped — and the server always started again.

The restart is compensation: it happens whether the work succeeded, failed or timed out,
and is recorded as its own step. A server that was already SHUTOFF is left SHUTOFF.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.clock import utcnow
from ..core.errors import HandlerFailed
from ..tasks.servers import power_state, start_server, stop_server
from .context import RunContext

#: Give-up time for a stop or a start (seconds).
POWER_DEADLINE = 900.0


def with_server_stopped(ctx: RunContext, server: dict[str, Any] | None, stop: bool, work: Callable[[], None]) -> None:
    """Run ``work`` with ``server`` ({id, name}) stopped when ``stop``, then start it again; a
    failure of the stop or of the work ends the run failed, after the restart."""
    state = ctx.state
    if "failure" not in state and not state.get("work_done"):
        try:
            if stop and server:
                _stop(ctx, server)
            work()
            state["work_done"] = True
        except Exception as exc:
            state["failure"] = str(exc) if isinstance(exc, HandlerFailed) else f"{type(exc).__name__}: {exc}"
            ctx.checkpoint()
    if stop and server:
        _start_again(ctx, server)
    if "failure" in state:
        ctx.fail(state["failure"])


def start_again_after_cancel(ctx: RunContext) -> str:
    """A cancelled run that stopped its server starts it again (and waits for ACTIVE); says so."""
    server, power = ctx.state.get("server"), ctx.state.get("power", {})
    if not server or "stop_sent" not in power:
        return "no server had been stopped by this run"
    if "started" in power:
        return f"{server['name']} had been started again already"
    _start_again(ctx, server)
    return f"{server['name']} started again"


def _stop(ctx: RunContext, server: dict[str, Any]) -> None:
    power = ctx.state.setdefault("power", {})
    if "stopped" in power:
        return
    if "stop_sent" not in power:
        now = power_state(ctx.cloud, server["id"])
        if now.status == "SHUTOFF" and not now.task_state:
            power["stopped"] = utcnow().isoformat()
            ctx.record(
                "stop server",
                target=server["name"],
                started_at=utcnow(),
                detail={"server_id": server["id"], "note": "already SHUTOFF: it stays stopped"},
            )
            ctx.checkpoint()
            return
        if now.status != "ACTIVE" or now.task_state:
            ctx.fail(
                f"{server['name']} is {now.status}"
                + (f" ({now.task_state})" if now.task_state else "")
                + ": only an ACTIVE server is stopped for a consistent snapshot"
            )
        power["stop_sent"] = utcnow().isoformat()
        ctx.checkpoint()  # a resumed run waits for this stop and starts the server afterwards
        stop_server(ctx.cloud, server["id"])
    ctx.wait(lambda: _is(ctx, server, "SHUTOFF"), waiting_for=f"{server['name']} to stop", deadline=POWER_DEADLINE)
    power["stopped"] = utcnow().isoformat()
    ctx.record(
        "stop server",
        target=server["name"],
        started_at=datetime.fromisoformat(power["stop_sent"]),
        detail={"server_id": server["id"], "status": "SHUTOFF"},
    )
    ctx.checkpoint()


def _start_again(ctx: RunContext, server: dict[str, Any]) -> None:
    power = ctx.state.get("power", {})
    if "stop_sent" not in power or "started" in power:
        return  # never stopped by this run, or already back

    def started() -> bool:
        now = power_state(ctx.cloud, server["id"])
        if now.status == "SHUTOFF" and not now.task_state and "start_sent" not in power:
            power["start_sent"] = utcnow().isoformat()
            ctx.checkpoint()
            start_server(ctx.cloud, server["id"])
            return False
        if now.status == "ERROR":
            raise HandlerFailed(
                f"{server['name']} went to ERROR; it could not be started again"
                + (f" (after: {ctx.state['failure']})" if "failure" in ctx.state else "")
            )
        return now.status == "ACTIVE" and not now.task_state

    ctx.wait(started, waiting_for=f"{server['name']} to start again", deadline=POWER_DEADLINE)
    power["started"] = utcnow().isoformat()
    compensating = "failure" in ctx.state
    ctx.record(
        "start server",
        target=server["name"],
        started_at=datetime.fromisoformat(power.get("start_sent", power["started"])),
        detail={
            "server_id": server["id"],
            "status": "ACTIVE",
            "compensation": compensating,
            **({"after_failure": ctx.state["failure"]} if compensating else {}),
        },
    )
    ctx.checkpoint()


def _is(ctx: RunContext, server: dict[str, Any], status: str) -> bool:
    now = power_state(ctx.cloud, server["id"])
    return now.status == status and not now.task_state
