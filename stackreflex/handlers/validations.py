"""Pre-upgrade validations (seed 001 §2.10–2.12): every check of a group, on every node it applies to.

Checks are data (:mod:`stackreflex.validations`). Node checks run over one SSH session per node,
several nodes at once; each check on each node is a step whose detail holds the verdict, the value
seen and the threshold, so `audit show` is the validation report. A run with any ``fail`` verdict
fails, naming them; warnings and skipped checks do not fail it. The run only reads: a retried or
re-run validation asks the nodes again.
"""

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import paramiko
from pydantic import BaseModel, ConfigDict, Field

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.errors import StackreflexError
from ..core.registry import handler
from ..tasks import ssh as remote
from ..tasks.heat import deployed_servers
from ..tasks.inventory import Host, InventoryError, load_inventory
from ..validations import Check, Limits, Seen, Verdict, load_checks
from .context import RunContext
from .orders import read_order

if TYPE_CHECKING:
    from openstack.connection import Connection

#: Nodes checked at once.
DEFAULT_WINDOW = 16


class ValidationOrder(BaseModel):
    """The data of ``command.validations.run``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["undercloud", "overcloud"]
    stack: str = Field(default="overcloud", min_length=1)
    #: Run the checks of this group (None: every group) …
    group: str | None = "pre-upgrade"
    #: … or only these checks.
    only: list[str] = Field(default_factory=list)
    window: int = Field(default=DEFAULT_WINDOW, ge=1, le=256)
    #: The overcloud's cloud in clouds.yaml (default: the overcloud_cloud setting).
    overcloud_cloud: str | None = None


@dataclass(frozen=True)
class Node:
    host: Host
    #: The TripleO role (``undercloud`` for the undercloud) and the node's place in it.
    role: str
    label: str

    @property
    def controller(self) -> bool:
        return "Controller" in self.role


@dataclass
class Result:
    check: Check
    target: str
    verdict: Verdict
    started: datetime
    detail: dict[str, Any]


#: What a node answered one check: (check, target, Seen or None when unreachable, started, detail).
Answer = tuple[Check, str, Seen | None, datetime, dict[str, Any]]


def verdict_counts(verdicts: Iterable[str]) -> dict[str, int]:
    counts = {"pass": 0, "warn": 0, "fail": 0, "skipped": 0}
    for verdict in verdicts:
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


@handler("command.validations.run", max_retries=1, min_backoff=5, max_backoff=30, time_limit=1800)
def run_validations(event: Envelope, ctx: RunContext) -> None:
    """Run the group's checks; record one step per check and node; fail if any check failed."""
    order = read_order(ValidationOrder, event, ctx)
    settings = ctx.settings
    try:
        checks = load_checks(settings.validations).select(order.target, order.group, order.only)
    except StackreflexError as exc:
        ctx.fail(str(exc))
    if not checks:
        ctx.fail(f"no {order.target} check in group {order.group!r}: see `stackreflex validate --list`")
    nodes = _nodes(ctx, order) if any(c.on_nodes for c in checks) else []
    limits = Limits(
        settings.validation_min_free_percent,
        settings.validation_osd_max_used_percent,
        controllers=sum(n.controller for n in nodes),
    )
    plan = {node: [c for c in checks if _applies(c, node, nodes)] for node in nodes}
    nowhere = [c for c in checks if c.on_nodes and not any(c in todo for todo in plan.values())]
    total = sum(len(p) for p in plan.values()) + sum(not c.on_nodes for c in checks) + len(nowhere)
    results: list[Result] = []

    def recorded(result: Result) -> None:
        results.append(result)
        _record(ctx, result)
        ctx.progress(len(results), total, f"{result.check.name} on {result.target}: {result.verdict.verdict}")

    for check in (c for c in checks if not c.on_nodes):
        recorded(_ask_api(ctx, order, check, limits))
    for check in nowhere:  # e.g. no role named *Controller*: the control plane went unchecked
        recorded(
            Result(
                check,
                order.stack,
                Verdict.failed(
                    "no node",
                    f"where: {check.where}",
                    (
                        f"no node of stack {order.stack} is one this check runs on ({check.where}; controllers are the "
                        "nodes of a role named *Controller*): it could not run"
                    ),
                ),
                utcnow(),
                {},
            )
        )
    across: dict[Check, dict[str, tuple[Seen, datetime, dict[str, Any]]]] = {}
    with ThreadPoolExecutor(max(1, min(order.window, len(plan) or 1)), thread_name_prefix="validate") as pool:
        asked = [pool.submit(_ask_node, ctx, node, todo) for node, todo in plan.items() if todo]
        for future in as_completed(asked):
            for check, target, seen, started, detail in future.result():
                if check.across and seen is not None:
                    across.setdefault(check, {})[target] = (seen, started, detail)
                    continue
                verdict = (
                    _judged(check, seen, limits)
                    if seen is not None
                    else Verdict.failed("unreachable", "", detail.pop("unreachable"))
                )
                recorded(Result(check, target, verdict, started, detail))
    for check, answers in across.items():
        verdicts = _judged_across(check, {t: a[0] for t, a in answers.items()}, limits)
        for target, (_seen, started, detail) in answers.items():
            recorded(Result(check, target, verdicts[target], started, detail))
    counts = verdict_counts(r.verdict.verdict for r in results)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    failed = [r for r in results if r.verdict.verdict == "fail"]
    if failed:
        named = "; ".join(f"{r.check.name} on {r.target}: {r.verdict.reason}" for r in failed[:5])
        ctx.fail(
            f"{len(failed)} of {len(results)} checks failed ({summary}): {named}" + (" …" if len(failed) > 5 else "")
        )
    ctx.progress(len(results), total, f"{order.target} ready for the upgrade: {summary}")


def _applies(check: Check, node: Node, nodes: list[Node]) -> bool:
    if check.where in ("undercloud-node", "each-node"):
        return True
    if check.where == "each-controller":
        return node.controller
    if check.where == "one-controller":
        return node is next((n for n in nodes if n.controller), None)
    return False


def _nodes(ctx: RunContext, order: ValidationOrder) -> list[Node]:
    """The nodes to check: the undercloud from the inventory; for the overcloud, every deployed
    server Heat has in the stack, found through the inventory as its agent configuration is."""
    try:
        inventory = load_inventory(ctx.settings.inventory)
    except InventoryError as exc:
        ctx.fail(str(exc))
    nodes = []
    try:
        if order.target == "undercloud":
            return [Node(inventory.undercloud_host(), "undercloud", "undercloud")]
        for server in deployed_servers(ctx.cloud, order.stack):
            nodes.append(
                Node(inventory.host_for(server.role, server.index, path=server.path), server.role or "", server.label)
            )
    except StackreflexError as exc:
        ctx.fail(str(exc))
    if not nodes:
        ctx.fail(f"stack {order.stack} has no deployed servers to check")
    return nodes


def _ask_node(ctx: RunContext, node: Node, checks: list[Check]) -> list[Answer]:
    """Run every check of one node over one SSH session: (check, target, Seen or None, started, detail)."""
    settings, started = ctx.settings, utcnow()
    answers: list[Answer] = []
    try:
        ssh = ctx.ssh(node.host.address, port=node.host.port)
    except StackreflexError as exc:
        return [(c, node.label, None, started, {"node": str(node.host), "unreachable": str(exc)}) for c in checks]
    try:
        try:
            _, out, _ = remote.run(ssh, "hostname", check=False)
        except (OSError, paramiko.SSHException) as exc:
            return [
                (c, node.label, None, started, {"node": str(node.host), "unreachable": f"node {node.host}: {exc}"})
                for c in checks
            ]
        name = out.strip() or node.label
        for check in checks:
            started = utcnow()
            detail: dict[str, Any] = {"node": str(node.host), "role": node.role}
            try:
                for command in check.commands:
                    status, out, err = remote.run(ssh, command, sudo=settings.ssh_sudo, check=False, host=name)
                    if status == 0:
                        break
            except (OSError, paramiko.SSHException) as exc:
                answers.append((check, name, None, started, {**detail, "unreachable": f"node {name}: {exc}"}))
                continue
            detail.update(command=command, exit=status)
            answers.append((check, name, Seen(name, node.role, command, status, out, err), started, detail))
    finally:
        ssh.close()
    return answers


def _ask_api(ctx: RunContext, order: ValidationOrder, check: Check, limits: Limits) -> Result:
    started = utcnow()
    cloud = order.overcloud_cloud or ctx.settings.overcloud_cloud
    target = order.stack if check.target == "overcloud" else "undercloud"
    detail = {"api": check.api, **({"cloud": cloud} if check.api == "overcloud" and cloud else {})}
    if check.api == "overcloud" and not cloud:
        return Result(
            check,
            target,
            Verdict.failed(
                "no overcloud cloud",
                "the overcloud's own API",
                (
                    "the overcloud's services are read from its own API: pass --os-cloud NAME (its overcloudrc as a "
                    "clouds.yaml entry) or set overcloud_cloud"
                ),
            ),
            started,
            detail,
        )
    assert check.query is not None  # an api check has a query (Check.__post_init__)
    try:
        conn = _overcloud(ctx, cloud) if check.api == "overcloud" and cloud else ctx.cloud  # no cloud: returned above
        answer = check.query(conn, order.stack)
    except Exception as exc:
        return Result(check, target, Verdict.failed("no answer", "", f"{check.api} API: {_said(exc)}"), started, detail)
    return Result(check, target, _judged(check, Seen(target, check.api, "", 0, answer=answer), limits), started, detail)


def _overcloud(ctx: RunContext, cloud: str) -> "Connection":
    from ..tasks.cloud import connect_cloud

    return connect_cloud(ctx.settings.model_copy(update={"cloud": cloud}))


def _said(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _judged(check: Check, seen: Seen, limits: Limits) -> Verdict:
    """The check's verdict; a judge that breaks on an answer it did not expect is the check failing
    with that said, not the whole validation."""
    try:
        verdict: Verdict = check.judge(seen, limits)
    except Exception as exc:
        return Verdict.failed("unreadable", "", f"could not judge the answer: {_said(exc)}")
    return verdict


def _judged_across(check: Check, seen: dict[str, Seen], limits: Limits) -> dict[str, Verdict]:
    try:
        verdicts: dict[str, Verdict] = check.judge(seen, limits)
    except Exception as exc:
        reason = f"could not judge the answers: {_said(exc)}"
        return {target: Verdict.failed("unreadable", "", reason) for target in seen}
    return {
        target: verdicts.get(target, Verdict.failed("no verdict", "", "the check judged no verdict here"))
        for target in seen
    }


def _record(ctx: RunContext, result: Result) -> None:
    verdict = result.verdict
    detail = {
        **result.detail,
        "verdict": verdict.verdict,
        "seen": verdict.seen,
        "threshold": verdict.threshold,
        "reason": verdict.reason,
        "description": result.check.description,
    }
    ctx.record(
        result.check.name,
        target=result.target,
        started_at=result.started,
        status="failed" if verdict.verdict == "fail" else "succeeded",
        detail=detail,
        error=verdict.reason if verdict.verdict == "fail" else None,
    )
