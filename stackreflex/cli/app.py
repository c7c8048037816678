"""The root of the ``stackreflex`` command and its error handling (one line, no traceback).

Each command's module is imported only when that command runs: ``stackreflex --help``, and
``--version``, import none of them (the SDKs they need cost a second of start-up).
"""

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..core.errors import StackreflexError
from ..core.redaction import redact_text
from .common import Invocation, errors

#: name → (module in stackreflex.cli, its command or Typer app, the first paragraph of its help:
#: what ``stackreflex --help`` lists without importing it; a test checks each against the command).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": (
        "demo",
        "demo",
        "Watch a simulated TripleO deployment on pre-provisioned nodes get configured by stackreflex.",
    ),
    "worker": ("worker", "worker", "Serve handlers: route envelopes from RabbitMQ into dramatiq and run them."),
    "publish": ("publish", "publish", "Publish an envelope (an event or a command) on the bus."),
    "watch": (
        "watch",
        "watch",
        "Poll Heat's events for the stacks and publish them (heat.resource.<STATUS>, heat.stack.<STATUS>).",
    ),
    "doctor": ("doctor", "doctor", "Check connectivity before a deployment. Exits 1 if any check fails."),
    "audit": (
        "audit",
        "app",
        "Query the audit log: runs, their steps, their errors; timelines and reports for post-mortems.",
    ),
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
    "backup": ("backup", "app", "Backups before an upgrade: the undercloud, the overcloud's control plane."),
    "validate": (
        "validate",
        "validate",
        "Run the pre-upgrade validations of the upgrade guide (§2.10–2.12) and print a verdict per check and node.",
    ),
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
        single = typer.Typer(add_completion=False)
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    _plain_metavars(command)
    return command


def _plain_metavars(command) -> None:
    """Help as operators read it elsewhere: ``HOST`` for an argument, ``--timeout FLOAT``,
    nothing after a flag (typer would print ``{host}``, ``<float>`` and ``<bool>``), and each
    paragraph of the docstring one paragraph (its line breaks would print as they are)."""
    command.help = _unwrapped(command.help)
    helper = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([helper] if helper is not None else [])]:
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument":
            param.metavar = param.name.upper()
        else:
            kind = param.bare_type().removeprefix("list[").removesuffix("]")
            param.metavar = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH"}.get(kind, kind.upper())
    for sub in getattr(command, "commands", {}).values():
        _plain_metavars(sub)


def _unwrapped(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line; a line that starts a command (an example) keeps its own."""
    if not text:
        return text
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.strip().splitlines():
            line = line.strip()
            if lines and not line.startswith("stackreflex "):
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


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
    name="stackreflex",
    cls=LazyGroup,
    help=(
        "Event-driven runbooks for OpenStack/TripleO clouds: Heat events and operator commands go on "
        "RabbitMQ, handlers react, every step lands in an SQL audit log.\n\n"
        "Without STACKREFLEX_BROKER_URL everything runs embedded in one process (try `stackreflex demo`)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"stackreflex {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    context: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="TOML settings file (default ~/.config/stackreflex/config.toml).")
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="text (default) or json.")] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help=(
                "DEBUG, INFO, WARNING, ERROR. Default: INFO for `worker` and `watch` (the log_level setting), "
                "WARNING for the other commands (the handlers they run embedded included)."
            )
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            help=("The node inventory (YAML: roles, hostnames, servers); the inventory setting, STACKREFLEX_INVENTORY.")
        ),
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(help=("The known_hosts file nodes' host keys are checked against (the ssh_known_hosts setting).")),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at INFO: every envelope, run and step.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    chosen = {"log_format": log_format, "log_level": log_level, "inventory": inventory, "ssh_known_hosts": known_hosts}
    context.obj = Invocation(
        config, {k: v for k, v in chosen.items() if v}, service=context.invoked_subcommand in SERVICES, verbose=verbose
    )


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


#: Exit statuses, as the README documents them.
OK, RUN_FAILED, BAD_INPUT, USAGE, INTERRUPTED = 0, 1, 2, 3, 130
#: click's UsageError (and its base), as typer carries them: a wrong option or argument.
_USAGE_ERROR = typer.BadParameter.__mro__[1]
_CLICK_ERROR = typer.BadParameter.__mro__[2]


def main() -> None:
    """Entry point: operator-facing errors become one redacted line and their exit status: 1 a
    run failed, 2 bad input or environment, 3 a usage error (an unknown option, a bad value),
    130 interrupted. Scripts can tell them apart."""
    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        errors.print("interrupted")
        sys.exit(INTERRUPTED)
    except _USAGE_ERROR as exc:
        exc.show()
        sys.exit(USAGE)
    except _CLICK_ERROR as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StackreflexError as exc:
        errors.print(f"[red]error:[/] {escape(redact_text(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        line = _unreachable(exc)
        if line is None:
            raise
        errors.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(BAD_INPUT)
    sys.exit(code if isinstance(code, int) else OK)
