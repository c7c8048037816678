"""``stackreflex validate undercloud|overcloud``: the runbook's pre-upgrade checks, with a verdict table."""

from typing import Annotated, Literal

import typer

from ..core.errors import StackreflexError
from ..handlers.validations import DEFAULT_WINDOW, ValidationOrder, verdict_counts
from ..tasks.heat import find_stack
from ..validations import Check, load_checks
from .common import current_invocation, emit, say
from .options import Timeout, Wait, order_from
from .output import Column, Listing, lists
from .publish import DEFAULT_WAIT_TIMEOUT, check_first, command_steps, send_command

CHECK_COLUMNS = [
    Column("name"),
    Column("target"),
    Column("where"),
    Column("groups"),
    Column("source", long=True),
    Column("description", "text"),
]
VERDICT_COLUMNS = [
    Column("check"),
    Column("target"),
    Column("verdict", "status"),
    Column("seen", "text"),
    Column("threshold", "text", spare=True),
    Column("reason", "text"),
    Column("node", long=True),
    Column("command", "text", long=True),
]


@lists
def validate(
    target: Annotated[
        Literal["undercloud", "overcloud"] | None,
        typer.Argument(help="undercloud or overcloud (omit with --list to list every check)."),
    ] = None,
    stack: Annotated[str, typer.Option(help="The overcloud stack.")] = "overcloud",
    group: Annotated[
        str | None,
        typer.Option(
            help=("Run the checks of this group ('all': every group; default pre-upgrade, with --list every group).")
        ),
    ] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this check (repeatable).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the checks (of TARGET and --group) and exit.")] = False,
    checks: Annotated[
        list[str] | None,
        typer.Option(
            "--checks",
            help=("A module or file of extra checks (repeatable); workers load theirs from the 'validations' setting."),
        ),
    ] = None,
    os_cloud: Annotated[
        str | None,
        typer.Option(
            "--os-cloud",
            help=(
                "The overcloud's cloud in clouds.yaml (its overcloudrc), for the overcloud API checks "
                "(default: the overcloud_cloud setting, else the same cloud)."
            ),
        ),
    ] = None,
    window: Annotated[int, typer.Option(min=1, max=256, help="Nodes checked at once.")] = DEFAULT_WINDOW,
    wait: Wait = False,
    timeout: Timeout = DEFAULT_WAIT_TIMEOUT,
) -> None:
    """Run the pre-upgrade validations of the upgrade guide (§2.10–2.12) and print a verdict per check and node.

    Undercloud: failed units, free disk, clock, Neutron agents, compute services, Ironic nodes. Overcloud, on every node over SSH: failed units, free disk, clock, openvswitch and kernel versions per role, the running Open vSwitch; on the controllers: Pacemaker, Galera, RabbitMQ, HAProxy backends, Ceph health and OSD space; and the overcloud's network agents, compute and volume services. Each verdict is pass, warn, fail or skipped with the value seen and the threshold; the command exits 1 if any check failed.

    Example: stackreflex validate overcloud --stack overcloud --wait

    Example: stackreflex validate --list
    """
    if checks is None:
        checks = []
    if only is None:
        only = []
    invocation = current_invocation()
    settings = (
        invocation.amend(validations=[*invocation.settings.validations, *checks]) if checks else invocation.settings
    )
    known = load_checks(settings.validations)
    chosen_group = None if group == "all" or (group is None and list_) else (group or "pre-upgrade")
    if list_ or target is None:
        if target is None and not list_:
            raise typer.BadParameter("name undercloud or overcloud (or pass --list)", param_hint="TARGET")
        rows = [
            {
                "name": c.name,
                "target": c.target,
                "where": c.where,
                "groups": ",".join(c.groups),
                "source": c.source,
                "description": c.description,
            }
            for c in known
            if (target is None or c.target == target)
            and (chosen_group is None or chosen_group in c.groups or only)
            and (not only or c.name in only)
        ]
        emit(Listing(CHECK_COLUMNS, rows, title="checks", empty="no check matches"))
        return
    order = order_from(
        ValidationOrder,
        target=target,
        stack=stack,
        group=chosen_group,
        only=only,
        window=window,
        overcloud_cloud=os_cloud,
    )
    selected = known.select(order.target, order.group, order.only)
    if not selected:
        raise StackreflexError(f"no {target} check in group {chosen_group!r}: see `stackreflex validate --list`")
    if target == "overcloud":
        check_first(lambda conn: find_stack(conn, stack))
    say(f"{len(selected)} {target} check(s): {', '.join(c.name for c in selected)}")
    send_command(
        "command.validations.run",
        stack if target == "overcloud" else "undercloud",
        order.model_dump(),
        wait=wait,
        timeout=timeout,
        report=lambda correlation: _verdicts(correlation, selected),
    )


def _verdicts(correlation_id: str, selected: list[Check]) -> bool:
    """The verdicts of the run's last attempt, check by check (in the registry's order), node by node."""
    steps = command_steps(correlation_id, "run_validations")
    if not steps:
        return False
    last = max(s["attempt"] for s in steps)
    rows = [
        {
            "check": s["name"],
            "target": s["target"],
            "verdict": s["detail"].get("verdict"),
            "seen": s["detail"].get("seen"),
            "threshold": s["detail"].get("threshold"),
            "reason": s["detail"].get("reason"),
            "node": s["detail"].get("node"),
            "command": s["detail"].get("command"),
        }
        for s in steps
        if s["attempt"] == last and "verdict" in s["detail"]
    ]
    position = {check.name: n for n, check in enumerate(selected)}
    rows.sort(key=lambda r: (position.get(r["check"], len(position)), r["target"] or ""))
    emit(Listing(VERDICT_COLUMNS, rows, title="verdicts"))
    counts = verdict_counts(r["verdict"] for r in rows)
    say(", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no verdicts")
    return True
