"""``stackreflex host evacuate`` and ``stackreflex hosts drain-reboot``: compute host maintenance."""

from typing import Annotated

import typer

from ..core.errors import StackreflexError
from ..handlers.host_maintenance import DEFAULT_REASON, DrainRebootOrder, EvacuateOrder
from ..tasks.cloud import connect_cloud
from ..tasks.compute import action_for, compute_service, servers_on
from .common import emit, invocation, say
from .options import DryRun, Timeout, Wait, order_from
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, check_first, command_steps, send_command

host_app = typer.Typer(help="Maintenance of one compute host.", no_args_is_help=True)
hosts_app = typer.Typer(help="Rolling maintenance of several compute hosts.", no_args_is_help=True)

EVACUATE_HANDLER = "evacuate_host"

Target = Annotated[str | None, typer.Option(help="Move servers to this host (default: the scheduler chooses).")]
MaxParallel = Annotated[
    int,
    typer.Option(
        min=1,
        max=50,
        help=(
            "Migrations in flight at once from the host. Nova runs max_concurrent_live_migrations per host "
            "(default 1) and queues the rest."
        ),
    ),
]
Reason = Annotated[str, typer.Option(help="Recorded as nova-compute's disabled reason.")]
KeepDisabled = Annotated[bool, typer.Option("--keep-disabled", help="Leave nova-compute disabled after the reboot.")]
ColdMigrate = Annotated[
    bool,
    typer.Option(
        "--cold-migrate-stopped",
        help=("Move SHUTOFF servers by cold migration (and confirm it); without it they block the host."),
    ),
]
MaxAttempts = Annotated[int, typer.Option(min=1, max=10, help="Migration attempts per server before it is reported.")]


@host_app.command()
@lists
def evacuate(
    host: Annotated[str, typer.Argument(help="The compute host, as Nova names it (openstack compute service list).")],
    target: Target = None,
    max_parallel: MaxParallel = 1,
    reason: Reason = DEFAULT_REASON,
    reboot: Annotated[
        bool,
        typer.Option(
            "--reboot",
            help=(
                "Once empty, reboot the host over SSH, wait for its new boot and for nova-compute to report up, "
                "then re-enable the service."
            ),
        ),
    ] = False,
    keep_disabled: KeepDisabled = False,
    cold_migrate_stopped: ColdMigrate = False,
    max_attempts: MaxAttempts = 2,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Empty a compute host: disable nova-compute, live-migrate every server away (all projects) in a window of --max-parallel, and verify the host is empty; optionally reboot it.

    Servers Nova is already migrating are followed, not migrated again. ERROR servers (and SHUTOFF ones, unless --cold-migrate-stopped) are reported and make the run fail, as does a server whose migration failed --max-attempts times; the host is then not rebooted and stays disabled. Without --reboot the service stays disabled: the host is yours for maintenance. A second evacuation of a host with one running is refused.

    Example: stackreflex host evacuate compute-10.localdomain --max-parallel 3 --reboot --wait
    """
    order = order_from(
        EvacuateOrder,
        host=host,
        target=target,
        max_parallel=max_parallel,
        reason=reason,
        reboot=reboot,
        keep_disabled=keep_disabled,
        cold_migrate_stopped=cold_migrate_stopped,
        max_attempts=max_attempts,
    )
    if dry_run:
        _show_plan(order)
        return
    _refuse_if_running(host)
    check_first(lambda conn: compute_service(conn, host))
    send_command("command.host.evacuate", host, order.model_dump(), wait=wait, timeout=timeout, report=_show_migrations)


@hosts_app.command("drain-reboot")
@lists
def drain_reboot(
    hosts: Annotated[list[str], typer.Argument(help="Compute hosts, in the order to take them.")],
    target: Target = None,
    max_parallel: MaxParallel = 1,
    reason: Reason = DEFAULT_REASON,
    keep_disabled: KeepDisabled = False,
    cold_migrate_stopped: ColdMigrate = False,
    max_attempts: MaxAttempts = 2,
    dry_run: DryRun = False,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Rolling maintenance: evacuate, reboot and re-enable each host in turn, never two at once, stopping at the first host that cannot be emptied or does not come back.

    Example: stackreflex hosts drain-reboot compute-11.localdomain compute-12.localdomain --max-parallel 2 --wait
    """
    order = order_from(
        DrainRebootOrder,
        hosts=hosts,
        target=target,
        max_parallel=max_parallel,
        reason=reason,
        keep_disabled=keep_disabled,
        cold_migrate_stopped=cold_migrate_stopped,
        max_attempts=max_attempts,
    )
    if len(set(hosts)) != len(hosts):
        raise typer.BadParameter("a host is listed twice", param_hint="HOSTS")
    if dry_run:
        for host in hosts:
            _show_plan(EvacuateOrder(host=host, reboot=True, **order.model_dump(exclude={"hosts"})))
        return
    for host in hosts:
        _refuse_if_running(host)
    check_first(lambda conn: [compute_service(conn, host) for host in hosts])
    send_command(
        "command.hosts.drain_reboot",
        ",".join(hosts),
        order.model_dump(),
        wait=wait,
        timeout=timeout,
        report=_show_migrations,
    )


def _refuse_if_running(host: str) -> None:
    running = invocation.audit().active_runs(EVACUATE_HANDLER, host)
    if running:
        run = running[0]
        raise StackreflexError(
            f"{host} is already being evacuated by run {run.id} ({run.status.value}); see "
            f"`stackreflex audit show {run.id}`; go on with it with `stackreflex runs resume {run.id} "
            f"--wait`, or end it with `stackreflex runs cancel {run.id} --reason TEXT`"
        )


def _show_plan(order: EvacuateOrder) -> None:
    conn = connect_cloud(invocation.settings)
    service = compute_service(conn, order.host)
    servers = sorted(servers_on(conn, order.host).values(), key=lambda s: s.name)
    rows = []
    for server in servers:
        action, why = action_for(server, cold_migrate_stopped=order.cold_migrate_stopped)
        rows.append(
            {
                "host": order.host,
                "server": server.name,
                "id": server.id,
                "project_id": server.project_id,
                "status": server.status,
                "task_state": server.task_state,
                "action": action,
                "why": why,
            }
        )
    emit(
        Listing(
            PLAN_COLUMNS,
            rows,
            title=f"plan for {order.host} (nothing will be changed)",
            empty=f"{order.host}: no server to move",
        )
    )
    blocking = sum(1 for row in rows if row["action"] == "leave")
    disable = (
        "disable nova-compute"
        if service.status == "enabled"
        else f"nova-compute already disabled ({service.disabled_reason or 'no reason given'})"
    )
    after = (
        "reboot over SSH, wait for the new boot and nova-compute up, "
        + ("leave the service disabled" if order.keep_disabled else "re-enable the service")
        if order.reboot
        else "leave the service disabled"
    )
    say(
        f"{order.host}: {disable}; move {len(rows) - blocking} server(s), {order.max_parallel} at a time"
        + (f"; {blocking} server(s) would block the host: no reboot" if blocking else f"; then {after}")
    )


PLAN_COLUMNS = [
    Column("host", long=True),
    Column("server"),
    Column("id", "id"),
    Column("project_id", "id", long=True),
    Column("status"),
    Column("task_state", header="task"),
    Column("action"),
    Column("why", "text"),
]

MIGRATION_COLUMNS = [
    Column("server"),
    Column("status", "status", header="result"),
    Column("kind", long=True),
    Column("attempt", "number", long=True),
    Column("source", header="from", spare=True),
    Column("destination", header="to"),
    Column("queued_s", "number", header="queued s"),
    Column("moving_s", "number", header="moving s"),
    Column("duration_s", "number", header="total s", spare=True),
    Column("migration_id", "number", header="migration", long=True),
    Column("note", "text"),
]


def _show_migrations(correlation_id: str) -> bool:
    """Which server moved where, how long Nova queued it and how long it moved: from the audit
    log of this command's runs."""
    rows = []
    for step in command_steps(correlation_id, EVACUATE_HANDLER, ("live-migrate", "cold-migrate")):
        d = step["detail"]
        rows.append(
            {
                "server": step["target"],
                "status": step["status"],
                "kind": step["name"],
                "attempt": d.get("attempt"),
                "source": d.get("source"),
                "destination": d.get("destination"),
                "queued_s": d.get("queued_s"),
                "moving_s": d.get("moving_s"),
                "duration_s": d.get("duration_s"),
                "migration_id": d.get("migration_id"),
                "note": step["error"] or d.get("note"),
            }
        )
    if rows:
        emit(Listing(MIGRATION_COLUMNS, rows, title="migrations"))
    return bool(rows)
