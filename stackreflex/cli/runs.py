"""``stackreflex runs``: send on the runs that were left unfinished, or cancel them with their
handler's compensation.

With a broker the workers take them up. Embedded, nothing runs between commands: a run left
by an interrupted command waits until this command (or the next one serving its handler)
takes it up, in this process.
"""

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ..bus import in_process
from ..core.errors import StackreflexError
from ..core.records import RunRecord, RunStatus
from ..models.audit import AuditLog
from ..models.queries import find_run, iso_utc
from ..models.stats import SERVED_WITHIN
from .common import emit, invocation, live_display, load_all_handlers, say
from .options import Timeout
from .output import Column, Listing, lists

if TYPE_CHECKING:
    from ..runtime import Runtime

T = TypeVar("T")

app = typer.Typer(
    help="Runs left unfinished: send them on, or cancel them (their handler's compensation runs).", no_args_is_help=True
)

#: How often a followed run is looked up in the audit log (seconds).
POLL = 0.25
#: Default time `runs cancel` waits for the run to end (seconds).
CANCEL_TIMEOUT = 300.0

Handlers = Annotated[
    list[str] | None,
    typer.Option(
        "--handlers",
        "-H",
        help=(
            "Embedded mode: a handler module or file to load besides the built-in ones (the runs' handlers must be loaded)."
        ),
    ),
]


def _record(audit: AuditLog, given: str) -> RunRecord:
    return _known(audit, find_run(audit, given).id)


def _known(audit: AuditLog, run_id: str) -> RunRecord:
    """A run by its whole id; one gone from the audit log meanwhile (purged) is an error naming it."""
    record = audit.get_run(run_id)
    if record is None:
        raise StackreflexError(f"run {run_id} is no longer in the audit log")
    return record


def describe(run: RunRecord) -> str:
    """Where a run stands, in a few words."""
    if run.status is RunStatus.WAITING:
        return f"waiting for {run.waiting_for} (next look {iso_utc(run.wake_at)})"
    if run.status is RunStatus.RUNNING:
        return f"running (lease until {iso_utc(run.lease_until)})"
    return run.error or run.progress_note or ""


RUN_COLUMNS = [
    Column("id", "id", header="run"),
    Column("handler"),
    Column("subject"),
    Column("status", "status"),
    Column("attempts", "number"),
    Column("wakes", "number"),
    Column("where", "text", header="where it stands"),
]


def _runs_table(title: str, runs: Iterable[RunRecord]) -> Listing:
    return Listing(
        RUN_COLUMNS,
        [
            {
                "id": r.id,
                "handler": r.handler,
                "subject": r.subject,
                "status": r.status.value,
                "attempts": r.attempts,
                "wakes": r.wakes,
                "where": describe(r),
            }
            for r in runs
        ],
        title=title,
    )


def report_left(runs: list[RunRecord], *, stopped: str) -> None:
    """What an embedded command leaves behind when it stops early, and how to go on or end it."""
    say("")
    if not runs:
        say(f"{stopped}; no run was left unfinished")
        return
    emit(_runs_table(f"{stopped}: {len(runs)} run(s) left, and nothing runs them in the background", runs))
    say(f"to go on:  stackreflex runs resume {' '.join(r.id for r in runs)} --wait")
    say(
        f"to end:    stackreflex runs cancel {runs[0].id if len(runs) == 1 else 'RUN'} --reason TEXT"
        "   (the handler's compensation runs)"
    )
    if any(r.status is RunStatus.RUNNING for r in runs):
        say("a run still shown running is taken up once its lease lapses")


def _movable(runs: list[RunRecord], now: datetime, cloud: str | None, embedded: bool) -> list[RunRecord]:
    """The runs this command can send on; says why it leaves each of the others."""
    movable = []
    for run in runs:
        if run.finished:
            say(f"run {run.id} ({run.handler}) already ended {run.status.value}")
        elif run.status is RunStatus.RUNNING and run.lease_until is not None and run.lease_until > now:
            say(
                f"run {run.id} ({run.handler}) is running in another process (lease until "
                f"{iso_utc(run.lease_until)}); it goes on there"
            )
        elif embedded and run.cloud and run.cloud != cloud:
            say(
                f"[red]run {run.id} ({run.handler}) acts on the cloud at {run.cloud}, and this shell is set "
                f"up for {cloud or 'no cloud'}:[/] source that cloud's credentials (or set OS_CLOUD) and try again"
            )
        else:
            movable.append(run)
    return movable


def _send_on(
    audit: AuditLog,
    dispatch: Callable[[str, dict[str, Any], int, float | None], None],
    runs: list[RunRecord],
    served: Iterable[str],
) -> list[RunRecord]:
    """Wake the waiting ones now and send each its message; returns those sent."""
    served, sent = set(served), []
    for run in runs:
        if run.handler not in served:
            say(
                f"[red]run {run.id}: handler {run.handler} is not loaded here:[/] pass --handlers with the "
                "module or file that defines it"
            )
            continue
        body = audit.kept_envelope(run.envelope_id)
        if body is None:
            say(
                f"[red]run {run.id} cannot be sent on:[/] its envelope {run.envelope_id} carried secrets, "
                "which the audit log does not keep; publish it again, or end the run with "
                f"`stackreflex runs cancel {run.id} --no-compensation`"
            )
            continue
        if run.status is RunStatus.WAITING:
            audit.wake_now(run.id)
        dispatch(run.handler, body, run.wake, None)
        sent.append(run)
    return sent


def follow(audit: AuditLog, runs: list[RunRecord], *, timeout: float, to_the_end: bool) -> list[RunRecord]:
    """Follow ``runs`` in the audit log until each has ended (or, unless ``to_the_end``, waits
    again after an execution); shows them live."""
    started = {r.id: r.wake for r in runs}
    deadline = time.monotonic() + timeout

    def settled(run: RunRecord) -> bool:
        return run.finished or (not to_the_end and run.status is RunStatus.WAITING and run.wake > started[run.id])

    current = runs
    with live_display("id") as update:
        update(_runs_table("runs", current))
        while not all(settled(r) for r in current):
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(POLL)
            current = [_known(audit, r.id) for r in runs]
            update(_runs_table("runs", current))
    return current


def _in_process(handlers: list[str], work: "Callable[[Runtime, set[str]], T]", *, stopped_early: str) -> T:
    """Embedded: run ``work(runtime, sent)`` with the handlers served in this process (``work``
    adds the ids of the runs it sends on to ``sent``); on Ctrl-C or a timeout say which of
    them are left, and how to go on."""
    from ..runtime import Runtime

    runtime: Runtime | None  # None once stopped
    runtime = Runtime(invocation.settings, load_all_handlers(handlers)).start()
    sent: set[str] = set()
    try:
        return work(runtime, sent)
    except (KeyboardInterrupt, TimeoutError) as exc:
        runtime.stop()
        runtime = None
        report_left(
            invocation.audit().unfinished_runs(ids=sent),
            stopped="interrupted" if isinstance(exc, KeyboardInterrupt) else stopped_early,
        )
        raise typer.Exit(130 if isinstance(exc, KeyboardInterrupt) else 2) from None
    finally:
        if runtime is not None:
            runtime.stop()


@app.command()
@lists
def resume(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "Run ids or their first characters (as `stackreflex audit runs` lists them); "
                "none: every unfinished run."
            )
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            "-w",
            help=(
                "Follow them until they end (embedded: this process runs them until then); exit 1 unless all succeed."
            ),
        ),
    ] = False,
    timeout: Timeout = 3600.0,
    handlers: Handlers = None,
) -> None:
    """Send unfinished runs on: a waiting run is woken now, a pending one (or one whose worker died) is sent its message again.

    With a broker, the workers take them up. Embedded, this process runs them until each ends or waits again (with --wait: until each ends), then says where they stand.

    Example: stackreflex runs resume 3f2a9c1e --wait
    """
    if handlers is None:
        handlers = []
    if runs is None:
        runs = []
    settings = invocation.settings
    audit = invocation.audit()
    chosen = [_record(audit, r) for r in runs] if runs else audit.unfinished_runs()
    if not chosen:
        say("no unfinished run")
        emit(_runs_table("runs", []))
        return
    now = audit.clock.now()
    if in_process(settings):

        def work(runtime: "Runtime", touched: set[str]) -> list[RunRecord]:
            movable = _movable(chosen, now, runtime.cloud, True)
            sent = _send_on(runtime.audit, runtime.bus.dispatch, movable, runtime.actors)
            touched.update(r.id for r in sent)
            return follow(runtime.audit, sent, timeout=timeout, to_the_end=wait) if sent else []

        ended = _in_process(handlers, work, stopped_early=f"gave up following after {timeout:.0f}s")
    else:
        ended = _through_broker(audit, _movable(chosen, now, None, False), wait=wait, timeout=timeout)
    _conclude(ended, embedded=in_process(settings), followed=wait or in_process(settings))


def _through_broker(audit: AuditLog, runs: list[RunRecord], *, wait: bool, timeout: float) -> list[RunRecord]:
    from ..bus.backend import open_bus

    bus = open_bus(invocation.settings, dispatch_key=audit.dispatch_key(invocation.settings.dispatch_key))
    try:
        sent = _send_on(audit, bus.dispatch, runs, {r.handler for r in runs})
    finally:
        bus.close()
    _say_unserved(audit, sent)
    if not wait or not sent:
        for run in sent:
            say(f"sent run {run.id} ({run.handler}) on: follow it with `stackreflex audit show {run.id}`")
        return []
    try:
        return follow(audit, sent, timeout=timeout, to_the_end=True)
    except TimeoutError:
        raise StackreflexError(
            f"gave up following after {timeout:.0f}s; the workers go on with the runs: "
            f"stackreflex audit show {sent[0].id}"
        ) from None


def _say_unserved(audit: AuditLog, runs: list[RunRecord]) -> None:
    served = audit.served_handlers(audit.clock.now() - timedelta(seconds=SERVED_WITHIN))
    for handler in sorted({r.handler for r in runs} - set(served)):
        say(f"[yellow]no live worker serves {handler}:[/] its runs wait in its queue until one does")


def _conclude(runs: list[RunRecord], *, embedded: bool, followed: bool) -> None:
    if not runs:
        return
    emit(_runs_table("runs", runs))
    waiting = [r for r in runs if not r.finished]
    if waiting and followed:
        say(
            f"{len(waiting)} run(s) wait again"
            + (
                ": nothing runs them in the background in embedded mode; "
                f"`stackreflex runs resume {' '.join(r.id for r in waiting)} --wait` follows them to the end"
                if embedded
                else ""
            )
        )
    if any(r.finished and r.status is not RunStatus.SUCCEEDED for r in runs):
        raise typer.Exit(1)


@app.command()
def cancel(
    run: Annotated[str, typer.Argument(help="The run's id, or its first characters.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why: recorded with the run.")],
    no_compensation: Annotated[
        bool,
        typer.Option(
            "--no-compensation",
            help=(
                "End it at once without running its handler's compensation (for a run whose handler is gone). "
                "What it had done stays as it is."
            ),
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run to end.")] = CANCEL_TIMEOUT,
    handlers: Handlers = None,
) -> None:
    """End an unfinished run `cancelled`. Its handler's compensation runs first: an evacuation cancelled before any migration re-enables nova-compute; otherwise it says exactly what was left and how to bring it back.

    A waiting or pending run is cancelled at once; a running one stops at its next safe point (a step, a checkpoint, a wait).

    Example: stackreflex runs cancel 3f2a9c1e --reason "maintenance window closed"
    """
    if handlers is None:
        handlers = []
    settings = invocation.settings
    audit = invocation.audit()
    found = _record(audit, run)
    if found.finished:
        say(f"run {found.id} ({found.handler}) already ended {found.status.value}; nothing to cancel")
        raise typer.Exit(1)
    if no_compensation:
        if not audit.end_unserved(
            found.id,
            RunStatus.CANCELLED,
            f"cancelled: {reason}; no compensation ran (--no-compensation): what it had done stays as it is",
        ):
            raise StackreflexError(
                f"run {found.id} is running in another process: cancel it without "
                "--no-compensation, and it stops at its next safe point"
            )
        say(f"run {found.id} cancelled; no compensation ran: what it had done stays as it is")
        return
    requested = audit.request_cancel(found.id, reason)
    if requested is None:
        raise StackreflexError(f"run {found.id} ended meanwhile; nothing to cancel")
    now = audit.clock.now()
    running = requested.status is RunStatus.RUNNING and requested.lease_until and requested.lease_until > now
    if running:
        say(f"run {found.id} is running: it stops at its next safe point")
    if in_process(settings):

        def work(runtime: "Runtime", touched: set[str]) -> list[RunRecord]:
            todo = [] if running else _movable([requested], now, runtime.cloud, True)
            sent = _send_on(runtime.audit, runtime.bus.dispatch, todo, runtime.actors)
            touched.update(r.id for r in sent)
            if not running and not sent:
                raise typer.Exit(2)  # why was said above
            return follow(runtime.audit, [requested], timeout=timeout, to_the_end=True)

        [ended] = _in_process(handlers, work, stopped_early=f"gave up waiting for the cancel after {timeout:.0f}s")
    else:
        if not running:
            _through_broker(audit, [requested], wait=False, timeout=timeout)
        try:
            [ended] = follow(audit, [requested], timeout=timeout, to_the_end=True)
        except TimeoutError:
            raise StackreflexError(
                f"the cancel is asked for and takes effect when a worker serving {found.handler} "
                f"takes the run up; see `stackreflex audit show {found.id}`"
            ) from None
    if ended.status is RunStatus.CANCELLED:
        say(f"run {ended.id} ({ended.handler}) {ended.error}")
        return
    say(
        f"run {ended.id} ({ended.handler}) ended {ended.status.value} before the cancel took effect"
        + (f": {ended.error}" if ended.error else "")
    )
    raise typer.Exit(1)
