"""``stackreflex dlq``: what the system refused or gave up on, and sending it back."""

from typing import Annotated

import typer

from ..bus import require_broker
from ..bus.deadletters import DeadLetter, visit
from ..core.errors import StackreflexError
from ..models.queries import known_handlers
from .common import emit, invocation, say
from .output import Column, Listing, lists

app = typer.Typer(help="Dead-letter queues: rejected envelopes and runs that ran out of retries.", no_args_is_help=True)


def _handlers(extra: list[str]) -> list[str]:
    require_broker(
        invocation.settings,
        "dead-letter queues live on the broker",
        "in embedded mode dead runs are in `stackreflex audit runs --status dead`",
    )
    return sorted(set(known_handlers(invocation.audit())) | set(extra))


COLUMNS = [
    Column("key", "id"),
    Column("run_id", "id", header="run"),
    Column("kind"),
    Column("type"),
    Column("handler"),
    Column("envelope_id", "id", long=True),
    Column("message_id", "id", long=True),
    Column("reason", "text"),
]


def _render(items: list[DeadLetter], title: str, empty: str | None = None) -> None:
    audit = invocation.audit()

    def run_of(item: DeadLetter) -> str | None:
        run = audit.find_run(item.envelope_id, item.handler) if item.envelope_id and item.handler else None
        return run.id if run is not None else None

    emit(Listing(COLUMNS, [{**i.__dict__, "run_id": run_of(i)} for i in items], title=title, empty=empty))


def _resolve(given: list[str], items: list[DeadLetter]) -> tuple[set[str], list[str]]:
    """The keys meant by ``given`` (keys, or first characters of a key or of its run's id, as
    `dlq list` shows them), and those that match nothing; a prefix of two messages is refused."""
    audit = invocation.audit()
    runs = {i.key: (audit.find_run(i.envelope_id, i.handler) if i.envelope_id and i.handler else None) for i in items}
    keys, missing = set(), []
    for text in given:
        matches = {i.key for i in items if i.key == text} or {
            i.key
            for i in items
            if i.key.startswith(text) or ((run := runs[i.key]) is not None and run.id.startswith(text))
        }
        if len(matches) > 1:
            raise StackreflexError(
                f"{text!r} is the start of {len(matches)} parked messages' keys or runs "
                f"({', '.join(sorted(matches))}): give more of it"
            )
        keys |= matches
        if not matches:
            missing.append(text)
    return keys, missing


@app.command("list")
@lists
def list_(
    handler: Annotated[
        list[str] | None,
        typer.Option(help="Also look at this handler's queue (handlers in the audit log are always looked at)."),
    ] = None,
) -> None:
    """List parked messages without removing them."""
    if handler is None:
        handler = []
    items = visit(invocation.settings, _handlers(handler), choose=lambda item: False, before_send=lambda item: None)
    _render(items, "dead letters", empty="no dead letters")


@app.command("replay")
@lists
def replay(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            help=("Keys from `dlq list` to replay, or their first characters, or those of the dead run's id.")
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay everything parked.")] = False,
    handler: Annotated[list[str] | None, typer.Option(help="Also look at this handler's queue.")] = None,
) -> None:
    """Send parked messages back: a dead run runs again with fresh retries; a rejected
    envelope goes back through the router (and is refused again if still invalid)."""
    if handler is None:
        handler = []
    if keys is None:
        keys = []
    if not keys and not all_:
        raise typer.BadParameter("name the keys to replay (see `stackreflex dlq list`) or pass --all")
    audit = invocation.audit()
    queues = _handlers(handler)
    wanted, missing = (
        (set(), [])
        if all_
        else _resolve(
            keys, visit(invocation.settings, queues, choose=lambda item: False, before_send=lambda item: None)
        )
    )
    if missing and not wanted:
        raise StackreflexError(
            f"no parked message has the key {', '.join(missing)}; `stackreflex dlq list` shows the keys"
        )

    def reopen_run(item: DeadLetter) -> None:
        if item.kind == "rejected" and item.message_id:
            audit.unpark(item.message_id)  # refused again, it is parked again
        if item.kind == "dead" and item.envelope_id and item.handler:
            run = audit.find_run(item.envelope_id, item.handler)
            if run is not None:
                audit.requeue(run.id)

    seen = visit(invocation.settings, queues, choose=lambda i: all_ or i.key in wanted, before_send=reopen_run)
    done = [i for i in seen if all_ or i.key in wanted]
    missing += sorted(wanted - {i.key for i in done})  # replayed by someone else meanwhile
    if done:
        _render(done, "replayed")
    if missing:
        say(f"[red]not found:[/] {', '.join(missing)}")
        raise typer.Exit(1)
    if not done:
        say("nothing to replay")
