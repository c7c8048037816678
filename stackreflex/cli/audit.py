"""``stackreflex audit``: what ran, when, and how it ended."""

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from ..core.clock import utcnow
from ..core.errors import StackreflexError
from ..core.records import RUN_STATUSES
from ..models.queries import RunFilter, find_run, list_envelopes, list_runs, parse_age, parse_since, run_with_steps
from ..models.retention import prune
from ..models.stats import handler_stats, slowest_steps, waiting_runs
from ..models.timeline import DEFAULT_LIMIT, Scope, timeline
from .common import console, emit, invocation, say, writing
from .output import Column, Listing, Record, lists
from .report import lanes_of, render_report

if TYPE_CHECKING:
    from ..tasks.inventory import Inventory

app = typer.Typer(
    help="Query the audit log: runs, their steps, their errors; timelines and reports for post-mortems.",
    no_args_is_help=True,
)


#: A run as `audit runs`, `audit show` and `audit waiting` print it (keys as in JSON).
RUN_COLUMNS = [
    Column("id", "id"),
    Column("handler"),
    Column("status", "status"),
    Column("type", spare=True),
    Column("subject"),
    Column("attempts", "number", spare=True),
    Column("wakes", "number", long=True),
    Column("envelope_id", "id", long=True),
    Column("correlation_id", "id", long=True),
    Column("created_at", "time", header="created"),
    Column("started_at", "time", long=True),
    Column("finished_at", "time", long=True),
    Column("duration_s", "number", header="seconds"),
    Column("waiting_for", "text", long=True),
    Column("wake_at", "time", long=True),
    Column("deadline", "time", long=True),
    Column("progress", long=True),
    Column("cancel_reason", "text", long=True),
    Column("error", "text"),
]

STEP_COLUMNS = [
    Column("id", "number", header="#", spare=True),
    Column("attempt", "number", spare=True),
    Column("name", header="step"),
    Column("target"),
    Column("status", "status"),
    Column("started_at", "time", header="started"),
    Column("finished_at", "time", long=True),
    Column("duration_s", "number", header="seconds"),
    Column("detail", "text"),
    Column("error", "text"),
]


@app.command("runs")
@lists
def runs(
    status: Annotated[
        list[str] | None, typer.Option("--status", help=f"One of {', '.join(RUN_STATUSES)}; repeatable.")
    ] = None,
    handler: Annotated[str | None, typer.Option(help="Only this handler's runs.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Created since: 30m, 2h, 7d or an ISO time (UTC unless zoned).")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Only runs about this subject (stack, host, server…).")] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Everything caused by one root envelope.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
) -> None:
    """List runs, newest first. Times are UTC.

    Example: stackreflex audit runs --status failed --since 2h -f value -c id -c error
    """
    if status is None:
        status = []
    bad = [s for s in status if s not in RUN_STATUSES]
    if bad:
        raise typer.BadParameter(
            f"unknown status {', '.join(bad)}; use {', '.join(RUN_STATUSES)}", param_hint="--status"
        )
    found = list_runs(
        invocation.audit(),
        RunFilter(
            status=status or None,
            handler=handler,
            since=parse_since(since) if since else None,
            subject=subject,
            correlation_id=correlation_id,
            limit=limit,
        ),
    )
    emit(Listing(RUN_COLUMNS, [{**r, "error": r["error"] or _waiting(r)} for r in found], empty="no runs match"))


def _waiting(run: dict[str, Any]) -> str | None:
    return f"waiting for {run['waiting_for']}" if run.get("waiting_for") else None


@app.command("show")
@lists
def show(
    run: Annotated[str, typer.Argument(help="Run id, or the first characters of it as listed by `audit runs`.")],
) -> None:
    """Show one run and each of its steps (in JSON and YAML, the run's object with its `steps`).

    Example: stackreflex audit show 3f2a9c1e
    """
    found = run_with_steps(invocation.audit(), run)
    fields = [Column(c.key, c.kind, header=c.key) for c in RUN_COLUMNS]
    emit(Record(fields, found, title=f"run {found['id']}", nested={"steps": found["steps"]}))
    if not invocation.output.machine:
        emit(Listing(STEP_COLUMNS, found["steps"], title="steps"))


ENVELOPE_COLUMNS = [
    Column("received_at", "time", header="received"),
    Column("status", "status"),
    Column("type"),
    Column("subject"),
    Column("envelope_id", "id", header="envelope"),
    Column("actor", long=True),
    Column("correlation_id", "id", long=True),
    Column("reason", "text"),
    Column("payload", "text", long=True),
]


@app.command("envelopes")
@lists
def envelopes(
    status: Annotated[str | None, typer.Option(help="accepted, duplicate or rejected")] = None,
    since: Annotated[str | None, typer.Option(help="Received since: 30m, 2h, 7d or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
) -> None:
    """List envelopes as the router received them; rejections carry their reason."""
    found = list_envelopes(invocation.audit(), status=status, since=parse_since(since) if since else None, limit=limit)
    emit(Listing(ENVELOPE_COLUMNS, found, empty="no envelopes match"))


# -- post-mortems ---------------------------------------------------------------------------

CSV_COLUMNS = [
    "time",
    "end",
    "duration_s",
    "kind",
    "what",
    "target",
    "status",
    "error",
    "run_id",
    "handler",
    "correlation_id",
]

CorrelationOpt = Annotated[str | None, typer.Option("--correlation-id", help="One command or event and all it caused.")]
StackOpt = Annotated[str | None, typer.Option(help="A Heat stack: runs about it and everything in their correlations.")]
HostOpt = Annotated[str | None, typer.Option(help="A node or compute host: steps aimed at it and runs about it.")]
ServerOpt = Annotated[
    str | None, typer.Option(help="A server (as steps name it): steps aimed at it and runs about it.")
]
SinceOpt = Annotated[str | None, typer.Option(help="From: 30m, 2h, 7d ago or an ISO time (UTC unless zoned).")]
UntilOpt = Annotated[str | None, typer.Option(help="Until (exclusive): same forms as --since.")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many entries (the newest).")]
TzOpt = Annotated[
    str,
    typer.Option(
        "--tz", help="Show times in this zone: UTC (default), local, or e.g. Europe/Paris. Stored times are UTC."
    ),
]


def _scope(
    correlation_id: str | None,
    stack: str | None,
    host: str | None,
    server: str | None,
    since: str | None,
    until: str | None,
    status: Iterable[str] = (),
    limit: int = DEFAULT_LIMIT,
) -> Scope:
    return Scope(
        correlation_id=correlation_id,
        stack=stack,
        host=host,
        server=server,
        since=parse_since(since) if since else None,
        until=parse_since(until) if until else None,
        status=tuple(status),
        limit=limit,
    )


def _zone(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return UTC
    if name == "local":
        return datetime.now().astimezone().tzinfo
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(
            f"unknown time zone {name!r}: use UTC, local or a name like Europe/Paris", param_hint="--tz"
        ) from None


def _in_zone(text: str | None, zone: tzinfo | None) -> str | None:
    """An ISO UTC time shown in ``zone``, with its offset: nothing is ambiguous."""
    if not text or zone is UTC:
        return text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(zone).isoformat(timespec="milliseconds")


def _shown(entries: list[dict[str, Any]], zone: tzinfo | None) -> list[dict[str, Any]]:
    return [{**e, "time": _in_zone(e["time"], zone), "end": _in_zone(e["end"], zone)} for e in entries]


TIMELINE_COLUMNS = [
    Column("time", "time"),
    Column("end", "time", long=True),
    Column("duration_s", "number", header="seconds", spare=True),
    Column("kind", spare=True),
    Column("what", "text"),
    Column("target"),
    Column("status", "status"),
    Column("error", "text"),
    Column("run_id", "id", header="run", spare=True),
    Column("handler", long=True),
    Column("correlation_id", "id", long=True),
]


@app.command("timeline")
@lists
def timeline_command(
    correlation_id: CorrelationOpt = None,
    stack: StackOpt = None,
    host: HostOpt = None,
    server: ServerOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="Only entries with this status (failed, rejected…); repeatable."),
    ] = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    tz: TzOpt = "UTC",
    as_csv: Annotated[bool, typer.Option("--csv", hidden=True, help="The same as -f csv.")] = False,
) -> None:
    """Every envelope, run and step of a scope in time order, with durations, targets, outcomes and errors.

    Scopes given together intersect, and --since/--until/--status narrow any of them.

    Examples: stackreflex audit timeline --host compute-10.localdomain --since 12h
              stackreflex audit timeline --stack overcloud --status failed -f csv > failures.csv
    """
    if status is None:
        status = []
    zone = _zone(tz)
    if as_csv:
        invocation.output.format = "csv"
    found = timeline(invocation.audit(), _scope(correlation_id, stack, host, server, since, until, status, limit))
    entries = _shown(found.entries, zone)
    columns = [Column("time", "time", header=f"time ({tz})"), *TIMELINE_COLUMNS[1:]]
    emit(Listing(columns, entries, title=f"timeline: {found.scope.describe()}", empty="nothing in this scope"))
    if found.truncated:
        say(f"only the newest {len(entries)} entries are shown: narrow with --since/--until or raise --limit")


STATS_COLUMNS = [
    Column("handler"),
    *(Column(k, "number") for k in ("runs", "succeeded", "failed")),
    *(Column(k, "number", spare=True) for k in ("cancelled", "unfinished")),
    Column("success_rate", "percent"),
    Column("p50_s", "number", header="p50 s"),
    Column("p95_s", "number", header="p95 s"),
]


@app.command("stats")
@lists
def stats(since: SinceOpt = "7d", until: UntilOpt = None) -> None:
    """Runs per handler: how many, how they ended, success rate (of the finished ones, 0 to 1), p50/p95 duration."""
    rows = handler_stats(
        invocation.audit(), parse_since(since) if since else None, parse_since(until) if until else None
    )
    emit(Listing(STATS_COLUMNS, rows, title=f"runs per handler since {since}", empty="no runs in this window"))


WAITING_COLUMNS = [
    Column("id", "id"),
    Column("handler"),
    Column("status", "status"),
    Column("subject"),
    Column("waiting_for", "text"),
    Column("since", "time", long=True),
    Column("wake_at", "time", header="next look"),
    Column("deadline", "time"),
    Column("attempts", "number", long=True),
    Column("wakes", "number", long=True),
    Column("progress", "text", long=True),
    Column("cancel_requested", "text", long=True),
    Column("served_by", "number", long=True),
    Column("served", "text", header="served by"),
]


@app.command("waiting")
@lists
def waiting() -> None:
    """Runs parked in a continuation: what each waits for, its next look, when it gives up, and
    whether a live process serves its handler. Unfinished runs whose handler no live process
    serves are listed too: nothing moves them on until one does."""
    rows = waiting_runs(invocation.audit())
    emit(
        Listing(
            WAITING_COLUMNS,
            [{**r, "served": _served(r)} for r in rows],
            title="waiting runs",
            empty="no run is waiting",
        )
    )


def _served(row: dict[str, Any]) -> str:
    if row["served_by"]:
        return f"{row['served_by']} process(es)"
    return "no live process: start a worker serving it, or `stackreflex runs resume`"


SLOWEST_COLUMNS = [
    Column("duration_s", "number", header="seconds"),
    Column("step"),
    Column("target"),
    Column("status", "status"),
    Column("handler", spare=True),
    Column("run_id", "id", header="run"),
    Column("started_at", "time", header="started", spare=True),
    Column("error", "text", long=True),
]


@app.command("slowest")
@lists
def slowest(
    run: Annotated[str | None, typer.Argument(help="A run (id or prefix); without it, every run --since.")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 10,
) -> None:
    """The slowest steps, of one run or of every run since a time."""
    audit = invocation.audit()
    run_id = find_run(audit, run).id if run else None
    rows = slowest_steps(audit, run_id, parse_since(since) if since else None, limit)
    emit(Listing(SLOWEST_COLUMNS, rows, title="slowest steps", empty="no finished step"))


@app.command("report")
def report(
    html_file: Annotated[Path, typer.Option("--html", help="Write the report here (one self-contained file).")],
    correlation_id: CorrelationOpt = None,
    stack: StackOpt = None,
    host: HostOpt = None,
    server: ServerOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    title: Annotated[str | None, typer.Option(help="The report's title.")] = None,
) -> None:
    """A post-mortem report as one HTML file that opens anywhere, offline: failures first with their reasons, the counts, and a Gantt chart of every step (one lane per node or host, bars coloured by outcome).

    Example: stackreflex audit report --correlation-id 6f1c… --html incident-4711.html
    """
    found = timeline(invocation.audit(), _scope(correlation_id, stack, host, server, since, until, (), limit))
    inventory = _inventory()
    with writing(html_file) as out:
        out.write(render_report(found, title or f"stackreflex post-mortem: {found.scope.describe()}", inventory))
    console.print(f"wrote {html_file} ({len(found.entries)} entries, {len(lanes_of(found, inventory))} lanes)")


def _inventory() -> "Inventory | None":
    """The node inventory, if one is configured: it names the report's lanes (none: addresses)."""
    from ..tasks.inventory import InventoryError, load_inventory

    try:
        return load_inventory(invocation.settings.inventory)
    except InventoryError:
        return None


#: What ``audit export`` writes, by the output file's extension (none: JSON).
EXPORT_FORMATS = {"": "json", ".json": "json", ".csv": "csv"}


@app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write: .json (default) or .csv.")],
    correlation_id: CorrelationOpt = None,
    stack: StackOpt = None,
    host: HostOpt = None,
    server: ServerOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = 100_000,
) -> None:
    """Export a scope's timeline (redacted) to attach to a ticket: JSON with the scope and every entry, or CSV."""
    if output.suffix not in EXPORT_FORMATS:
        raise StackreflexError(
            f"cannot export to {output}: the file's extension picks the format, "
            f"one of {', '.join(sorted(f for f in EXPORT_FORMATS if f))}"
        )
    found = timeline(invocation.audit(), _scope(correlation_id, stack, host, server, since, until, (), limit))
    with writing(output) as out:
        if output.suffix == ".csv":
            writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(found.entries)
        else:
            out.write(
                json.dumps(
                    {
                        "format": "stackreflex-timeline/1",
                        "exported_at": utcnow().isoformat(),
                        "scope": found.scope.describe(),
                        "truncated": found.truncated,
                        "entries": found.entries,
                    },
                    indent=2,
                    default=str,
                )
                + "\n"
            )
    console.print(f"wrote {output} ({len(found.entries)} entries)")


@app.command("prune")
def prune_command(
    older_than: Annotated[str, typer.Option("--older-than", help="Age: e.g. 90d, 12w, 48h, 1y.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
) -> None:
    """Delete finished runs (with their steps) and envelopes older than the given age. Runs still pending, running or waiting are kept, whatever their age, and so is the last signature window (signature_max_age + signature_max_skew): a replay inside it is known by what is kept."""
    settings = invocation.settings
    window = timedelta(seconds=settings.signature_max_age + settings.signature_max_skew)
    before = min(parse_age(older_than), utcnow() - window)
    done = prune(invocation.audit(), before, dry_run=dry_run, replay_window=window)
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {done.runs} run(s), {done.steps} step(s), {done.envelopes} envelope(s) "
        f"from before {before:%Y-%m-%dT%H:%M:%SZ}"
    )
