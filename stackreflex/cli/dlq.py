"""``stackreflex dlq``: what the system refused or gave up on, and sending it back."""

from typing import Annotated

import typer

from ..bus import require_broker
from ..bus.deadletters import DeadLetter, visit
from ..core.errors import StackreflexError
from ..models.queries import known_handlers
from .common import console, invocation, print_json, table

app = typer.Typer(help="Dead-letter queues: rejected envelopes and runs that ran out of retries.",
                  no_args_is_help=True)


def _handlers(extra: list[str]) -> list[str]:
    require_broker(invocation.settings, "dead-letter queues live on the broker",
                   "in embedded mode dead runs are in `stackreflex audit runs --status dead`")
    return sorted(set(known_handlers(invocation.audit())) | set(extra))


def _render(items: list[DeadLetter], title: str) -> None:
    console.print(table(title, ["key", "kind", "type", "handler", "reason"],
                        [(i.key, i.kind, i.type, i.handler, i.reason) for i in items]))


@app.command("list")
def list_(
    handler: Annotated[list[str], typer.Option(help="Also look at this handler's queue (handlers in the audit log are always looked at).")] = [],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List parked messages without removing them."""
    items = visit(invocation.settings, _handlers(handler), choose=lambda item: False, before_send=lambda item: None)
    if as_json:
        print_json([i.__dict__ for i in items])
    elif items:
        _render(items, "dead letters")
    else:
        console.print("no dead letters")


@app.command("replay")
def replay(
    keys: Annotated[list[str], typer.Argument(help="Keys from `dlq list` to replay.")] = [],
    all_: Annotated[bool, typer.Option("--all", help="Replay everything parked.")] = False,
    handler: Annotated[list[str], typer.Option(help="Also look at this handler's queue.")] = [],
) -> None:
    """Send parked messages back: a dead run runs again with fresh retries; a rejected
    envelope goes back through the router (and is refused again if still invalid)."""
    if not keys and not all_:
        raise typer.BadParameter("name the keys to replay (see `stackreflex dlq list`) or pass --all")
    audit = invocation.audit()
    wanted = set(keys)

    def reopen_run(item: DeadLetter) -> None:
        if item.kind == "rejected" and item.message_id:
            audit.unpark(item.message_id)  # refused again, it is parked again
        if item.kind == "dead" and item.envelope_id and item.handler:
            run = audit.find_run(item.envelope_id, item.handler)
            if run is not None:
                audit.requeue(run.id)

    seen = visit(invocation.settings, _handlers(handler), choose=lambda i: all_ or i.key in wanted,
                 before_send=reopen_run)
    done = [i for i in seen if all_ or i.key in wanted]
    missing = wanted - {i.key for i in done}
    if missing and not done:
        raise StackreflexError(f"no parked message has the key {', '.join(sorted(missing))}; "
                               "`stackreflex dlq list` shows the keys")
    if done:
        _render(done, "replayed")
    if missing:
        console.print(f"[red]not found:[/] {', '.join(sorted(missing))}")
        raise typer.Exit(1)
    if not done:
        console.print("nothing to replay")
