"""``stackreflex publish``: put an envelope on the bus and, with --wait, follow its runs live."""

import getpass
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..bus import in_process
from ..bus.follow import Follower, FollowTimeout, Progress
from ..bus.publisher import Publisher
from ..core.envelope import Envelope
from ..core.errors import StackreflexError
from ..core.settings import Settings
from ..models.queries import RunFilter, list_runs, run_with_steps
from ..runtime import Runtime
from .common import emit, invocation, live_display, load_all_handlers, say
from .output import Column, Listing, lists
from .runs import report_left

if TYPE_CHECKING:
    from openstack.connection import Connection

#: Default time --wait follows runs before giving up (seconds).
DEFAULT_WAIT_TIMEOUT = 3600.0


def parse_data(text: str | None) -> object:
    """``--data`` is JSON, or ``@path`` to a JSON file."""
    if text is None:
        return None
    source = "--data"
    if text.startswith("@"):
        source = text[1:]
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise StackreflexError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StackreflexError(f"{source} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def prepare(
    settings: Settings, type: str, subject: str | None, data: object, actor: str | None, *, wait: bool
) -> Envelope:
    """Build the envelope, asking for its runs' notices when :func:`send` will follow them
    (``wait``, and always when embedded); the publisher signs it when a signing key is configured."""
    return Envelope.new(
        type,
        subject=subject,
        data=data,
        actor=actor or getpass.getuser(),
        notify=True if wait or in_process(settings) else None,
    )


def bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * min(done, total) / total)
    return "█" * filled + "░" * (width - filled)


PROGRESS_COLUMNS = [
    Column("handler"),
    Column("run_id", "id", header="run"),
    Column("status", "status"),
    Column("progress"),
    Column("done", "number", long=True),
    Column("total", "number", long=True),
    Column("note", "text"),
]


def progress_table(progress: Progress) -> Listing:
    rows = []
    for state in progress.runs.values():
        amount = (
            f"{bar(state.done or 0, state.total)} {state.done}/{state.total}"
            if state.total
            else (str(state.done) if state.done is not None else "")
        )
        rows.append(
            {
                "handler": state.handler,
                "run_id": state.run_id,
                "status": state.status,
                "progress": amount,
                "done": state.done,
                "total": state.total,
                "note": state.error or state.note or "",
            }
        )
    title = "runs" + (" (duplicate envelope: earlier runs)" if progress.duplicate else "")
    return Listing(PROGRESS_COLUMNS, rows, title=title)


def send(
    settings: Settings, envelope: Envelope, *, wait: bool, timeout: float, handlers: Iterable[str] = ()
) -> Progress | None:
    """Publish (and follow); in embedded mode the built-in handlers and ``handlers`` run in this
    process, and a Ctrl-C or a timeout says which runs are left, in which state, and how to
    resume or cancel them."""
    if not in_process(settings):
        return _publish_and_follow(settings, envelope, wait=wait, timeout=timeout)
    registry = load_all_handlers(handlers)
    if not any(h.subscribes_to(envelope.type) for h in registry):
        raise StackreflexError(
            f"no handler subscribes to {envelope.type} (embedded mode runs only the handlers "
            "loaded here: pass --handlers, or set STACKREFLEX_BROKER_URL to publish to workers)"
        )
    runtime = Runtime(settings, registry).start()
    try:
        progress = _publish_and_follow(settings, envelope, wait=True, timeout=timeout)
    except (KeyboardInterrupt, FollowTimeout) as stopped:
        runtime.stop()
        left = runtime.audit.unfinished_runs(correlation_id=envelope.correlationid)
        left += runtime.audit.unfinished_runs(ids=runtime.reconciler.taken_up)
        if isinstance(stopped, KeyboardInterrupt):
            report_left(left, stopped="interrupted")
            raise typer.Exit(130) from None
        report_left(left, stopped=f"gave up waiting after {timeout:.0f}s")
        raise StackreflexError(f"gave up waiting after {timeout:.0f}s") from None
    except BaseException:
        runtime.stop()
        raise
    runtime.stop()
    taken_up = runtime.audit.unfinished_runs(ids=runtime.reconciler.taken_up)
    if taken_up:
        report_left(taken_up, stopped="this command also took up runs that earlier commands had left")
    return progress


def send_command(
    type: str,
    subject: str,
    data: dict[str, Any],
    *,
    wait: bool,
    timeout: float,
    report: Callable[[str], bool] | None = None,
) -> Envelope:
    """Publish a CLI command (signed when a key is set). With --wait (always when embedded),
    follow it, call ``report`` with its correlation id, and exit 1 unless every run succeeded."""
    settings = invocation.settings
    envelope = prepare(settings, type, subject, data, None, wait=wait)
    progress = send(settings, envelope, wait=wait, timeout=timeout)
    say(f"published {type} id={envelope.id}")
    if progress is not None:
        if report is None or not report(envelope.correlationid):
            emit(progress_table(progress))
        for state in progress.runs.values():
            if state.status not in ("succeeded", "skipped"):
                say(
                    f"[red]run {state.run_id} ({state.handler}) {state.status}:[/] {state.error or state.note or ''}"
                    f"  (stackreflex audit show {(state.run_id or '')[:8]})"
                )
        if not progress.succeeded:
            raise typer.Exit(1)
    return envelope


def check_first(check: "Callable[[Connection], object]") -> None:
    """Check a command's input against the cloud before publishing it (``check`` gets a
    connection and raises a one-line error), so a server, store or host that does not exist is
    a clear ``error:`` (exit 2), not a failed run. Embedded, always; with a broker, when this
    shell has a cloud configured (otherwise the workers' run checks it)."""
    from ..tasks.cloud import cloud_identity, connect_cloud

    settings = invocation.settings
    if in_process(settings) or cloud_identity(settings) is not None:
        check(connect_cloud(settings))


def command_steps(correlation_id: str, handler: str, names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The steps (those called ``names``, or all) of ``handler``'s runs for one command, from the audit log."""
    audit = invocation.audit()
    return [
        step
        for run in list_runs(audit, RunFilter(correlation_id=correlation_id, handler=handler, limit=1000))
        for step in run_with_steps(audit, run["id"])["steps"]
        if names is None or step["name"] in names
    ]


def _publish_and_follow(settings: Settings, envelope: Envelope, *, wait: bool, timeout: float) -> Progress | None:
    publisher = Publisher(settings)
    try:
        if not wait:
            publisher.publish(envelope)
            return None
        with Follower(settings) as follower:
            publisher.publish(envelope)
            with live_display("handler") as update:
                return follower.follow(envelope, timeout=timeout, on_update=lambda p: update(progress_table(p)))
    finally:
        publisher.close()


@lists
def publish(
    type: Annotated[str, typer.Argument(help="Envelope type, the routing key: e.g. command.host.evacuate")],
    subject: Annotated[
        str | None, typer.Option("--subject", "-s", help="What it is about: a stack, host, server…")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="JSON payload, or @file.json")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow the runs live; exit 1 if any did not succeed.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            help=(
                "Seconds --wait follows before giving up (with a broker the runs go on in the workers; embedded, "
                "those left are listed with the command that resumes them)."
            )
        ),
    ] = DEFAULT_WAIT_TIMEOUT,
    handlers: Annotated[
        list[str] | None,
        typer.Option("--handlers", "-H", help=("Embedded mode only: handler module or file to run in this process.")),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Operator identity recorded with commands (default: your user).")
    ] = None,
) -> None:
    """Publish an envelope (an event or a command) on the bus.

    With a broker configured the envelope goes to the workers; without one
    (embedded mode) the handlers run here and the command waits for them.
    Commands are signed when STACKREFLEX_SIGNING_KEY is set.

    Example: stackreflex publish command.agents.configure -s overcloud -d '{"stack": "overcloud"}' --wait
    """
    if handlers is None:
        handlers = []
    settings = invocation.settings
    envelope = prepare(settings, type, subject, parse_data(data), actor, wait=wait)
    progress = send(settings, envelope, wait=wait, timeout=timeout, handlers=handlers)
    say(f"published {envelope.type} id={envelope.id} correlation={envelope.correlationid}")
    if progress is None:
        return
    if not progress.runs:
        say(
            f"[red]nothing ran:[/] no handler that a live worker serves matched this {envelope.type} "
            "envelope; start a worker that serves one (`stackreflex worker --handlers FILE`)"
        )
        raise typer.Exit(1)
    emit(progress_table(progress))
    if not progress.succeeded:
        raise typer.Exit(1)
