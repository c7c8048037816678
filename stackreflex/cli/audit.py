"""``stackreflex audit``: what ran, when, and how it ended."""

from typing import Annotated

import typer

from ..models.queries import RunFilter, list_envelopes, list_runs, parse_since, run_with_steps
from ..models.tables import RUN_STATUSES
from .common import console, invocation, print_json, styled, table

app = typer.Typer(help="Query the audit log: runs, their steps, their errors.", no_args_is_help=True)


def _short(run_id: str) -> str:
    return run_id[:8]


@app.command("runs")
def runs(
    status: Annotated[list[str], typer.Option("--status", help=f"One of {', '.join(RUN_STATUSES)}; repeatable.")] = [],
    handler: Annotated[str | None, typer.Option(help="Only this handler's runs.")] = None,
    since: Annotated[str | None, typer.Option(help="Created since: 30m, 2h, 7d or an ISO time (UTC unless zoned).")] = None,
    subject: Annotated[str | None, typer.Option(help="Only runs about this subject (stack, host, server…).")] = None,
    correlation_id: Annotated[str | None, typer.Option("--correlation-id", help="Everything caused by one root envelope.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List runs, newest first. Times are UTC."""
    bad = [s for s in status if s not in RUN_STATUSES]
    if bad:
        raise typer.BadParameter(f"unknown status {', '.join(bad)}; use {', '.join(RUN_STATUSES)}", param_hint="--status")
    found = list_runs(invocation.audit(), RunFilter(status=status or None, handler=handler,
                                                    since=parse_since(since) if since else None,
                                                    subject=subject, correlation_id=correlation_id, limit=limit))
    if as_json:
        print_json(found)
        return
    console.print(table(None, ["run", "handler", "status", "type", "subject", "attempts", "created (UTC)",
                               "duration s", "error / waiting for"],
                        [(_short(r["id"]), r["handler"], styled(r["status"]), r["type"], r["subject"], r["attempts"],
                          r["created_at"], r["duration_s"], r["error"] or r["waiting_for"]) for r in found]))
    if not found:
        console.print("no runs match")


@app.command("show")
def show(
    run: Annotated[str, typer.Argument(help="Run id, or the first characters of it as listed by `audit runs`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show one run and each of its steps."""
    found = run_with_steps(invocation.audit(), run)
    if as_json:
        print_json(found)
        return
    fields = [(k, found[k]) for k in ("id", "handler", "status", "type", "subject", "envelope_id",
                                      "correlation_id", "attempts", "created_at", "started_at",
                                      "finished_at", "duration_s", "waiting_for", "wake_at", "deadline", "error")
              if found[k] is not None]
    console.print(table(f"run {found['id']}", ["field", "value"],
                        [(k, styled(v) if k == "status" else v) for k, v in fields]))
    console.print(table("steps", ["#", "attempt", "step", "target", "status", "started (UTC)", "duration s",
                                  "detail / error"],
                        [(s["id"], s["attempt"], s["name"], s["target"], styled(s["status"]), s["started_at"],
                          s["duration_s"], s["error"] or (s["detail"] or "")) for s in found["steps"]]))


@app.command("envelopes")
def envelopes(
    status: Annotated[str | None, typer.Option(help="accepted, duplicate or rejected")] = None,
    since: Annotated[str | None, typer.Option(help="Received since: 30m, 2h, 7d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List envelopes as the router received them; rejections carry their reason."""
    found = list_envelopes(invocation.audit(), status=status, since=parse_since(since) if since else None, limit=limit)
    if as_json:
        print_json(found)
        return
    console.print(table(None, ["received (UTC)", "status", "type", "subject", "envelope", "reason"],
                        [(e["received_at"], styled("failed" if e["status"] == "rejected" else "succeeded")
                          .replace("failed", e["status"]).replace("succeeded", e["status"]),
                          e["type"], e["subject"], (e["envelope_id"] or "")[:8], e["reason"]) for e in found]))
