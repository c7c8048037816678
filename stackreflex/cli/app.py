"""The root of the ``stackreflex`` command and its error handling (one line, no traceback).

Each command's module is imported only when that command runs: ``stackreflex --help``, and
``--version``, import none of them (the SDKs they need cost a second of start-up).
"""

import importlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..core.errors import StackreflexError
from ..core.redaction import redact_text
from .common import Invocation, errors

#: name → (module in stackreflex.cli, its command or Typer app, the first paragraph of its help:
#: what ``stackreflex --help`` lists without importing it; a test checks each against the command).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "demo",
             "Watch a simulated TripleO deployment on pre-provisioned nodes get configured by stackreflex."),
    "worker": ("worker", "worker", "Serve handlers: route envelopes from RabbitMQ into dramatiq and run them."),
    "publish": ("publish", "publish", "Publish an envelope (an event or a command) on the bus."),
    "watch": ("watch", "watch",
              "Poll Heat's events for the stacks and publish them (heat.resource.<STATUS>, heat.stack.<STATUS>)."),
    "doctor": ("doctor", "doctor", "Check connectivity before a deployment. Exits 1 if any check fails."),
    "audit": ("audit", "app",
              "Query the audit log: runs, their steps, their errors; timelines and reports for post-mortems."),
    "runs": ("runs", "app", "Runs left unfinished: send them on, or cancel them (their handler's compensation runs)."),
    "dlq": ("dlq", "app", "Dead-letter queues: rejected envelopes and runs that ran out of retries."),
    "sim": ("sim", "app", "The simulated overcloud (Keystone, Heat, Swift temp URLs) for trying stackreflex."),
    "nodes": ("nodes", "app", "Pre-provisioned nodes: record their SSH host keys."),
    "agents": ("agents", "app", "os-collect-config on the deployed servers of a stack."),
    "host": ("hosts", "host_app", "Maintenance of one compute host."),
    "hosts": ("hosts", "hosts_app", "Rolling maintenance of several compute hosts."),
    "volume": ("storage", "volume_app", "Snapshots of Cinder volumes, with their server quiesced."),
    "server": ("storage", "server_app", "Images of Nova servers, with the server quiesced."),
    "image": ("storage", "image_app", "Copies of Glance images to other stores (edge sites)."),
    "edge": ("edge", "app", "Edge (DCN) site validations."),
}


#: The commands that run as services: they log at the log_level setting (INFO by default).
SERVICES = frozenset({"worker", "watch"})


def load_command(name: str) -> TyperCommand | TyperGroup:
    """The click command ``name`` runs, its module imported now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer()
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The root group: it lists its commands from :data:`COMMANDS` and imports one only to run
    it (or to complete its arguments)."""

    _listing = False

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | TyperGroup | None:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name][2])
        return load_command(cmd_name)

    def format_help(self, ctx: typer.Context, formatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="stackreflex", cls=LazyGroup,
    help=("Event-driven runbooks for OpenStack/TripleO clouds: Heat events and operator commands go on "
          "RabbitMQ, handlers react, every step lands in an SQL audit log.\n\n"
          "Without STACKREFLEX_BROKER_URL everything runs embedded in one process (try `stackreflex demo`)."),
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"stackreflex {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    context: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="TOML settings file (default ~/.config/stackreflex/config.toml).")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="text (default) or json.")] = None,
    log_level: Annotated[Optional[str], typer.Option(help=(
        "DEBUG, INFO, WARNING, ERROR. Default: INFO for `worker` and `watch` (the log_level setting), "
        "WARNING for the other commands (the handlers they run embedded included)."))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO: every envelope, run and step.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    context.obj = Invocation(config, {k: v for k, v in {"log_format": log_format, "log_level": log_level}.items() if v},
                             service=context.invoked_subcommand in SERVICES, verbose=verbose)


def _unreachable(exc: Exception) -> str | None:
    """What a broker or database error says, as one line; None for any other error. (Neither
    library is imported to ask: an error of one that was never imported cannot be one.)"""
    if "kombu" in sys.modules:
        from ..bus import BROKER_TROUBLE
        if isinstance(exc, BROKER_TROUBLE):
            return f"the message broker is unreachable: {redact_text(str(exc))}"
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import OperationalError
        if isinstance(exc, OperationalError):
            return f"the audit database is unreachable: {redact_text(str(exc.orig))}"
    return None


def main() -> None:
    """Entry point: operator-facing errors become one redacted line and their exit status (2 for
    bad input or environment, 1 when nothing ran)."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
    except StackreflexError as exc:
        errors.print(f"[red]error:[/] {redact_text(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        line = _unreachable(exc)
        if line is None:
            raise
        errors.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
