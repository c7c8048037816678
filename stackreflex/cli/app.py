"""The root of the ``stackreflex`` command and its error handling (one line, no traceback)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from sqlalchemy.exc import OperationalError as DatabaseError

from .. import __version__
from ..bus import BROKER_TROUBLE
from ..core.errors import StackreflexError
from ..core.redaction import redact_text
from . import agents, audit, dlq, edge, hosts, nodes, runs, sim, storage
from .common import Invocation, errors
from .demo import demo
from .doctor import doctor
from .publish import publish
from .watch import watch
from .worker import worker

app = typer.Typer(
    name="stackreflex",
    help=("Event-driven runbooks for OpenStack/TripleO clouds: Heat events and operator commands go on "
          "RabbitMQ, handlers react, every step lands in an SQL audit log.\n\n"
          "Without STACKREFLEX_BROKER_URL everything runs embedded in one process (try `stackreflex demo`)."),
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
)
app.command()(demo)
app.command()(worker)
app.command()(publish)
app.command()(watch)
app.command()(doctor)
app.add_typer(audit.app, name="audit")
app.add_typer(runs.app, name="runs")
app.add_typer(dlq.app, name="dlq")
app.add_typer(sim.app, name="sim")
app.add_typer(nodes.app, name="nodes")
app.add_typer(agents.app, name="agents")
app.add_typer(hosts.host_app, name="host")
app.add_typer(hosts.hosts_app, name="hosts")
app.add_typer(storage.volume_app, name="volume")
app.add_typer(storage.server_app, name="server")
app.add_typer(storage.image_app, name="image")
app.add_typer(edge.app, name="edge")


def _version(value: bool) -> None:
    if value:
        print(f"stackreflex {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    context: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="TOML settings file (default ~/.config/stackreflex/config.toml).")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="text (default) or json.")] = None,
    log_level: Annotated[Optional[str], typer.Option(help="DEBUG, INFO (default), WARNING, ERROR.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    context.obj = Invocation(config, {k: v for k, v in {"log_format": log_format, "log_level": log_level}.items() if v})


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
    except BROKER_TROUBLE as exc:
        errors.print(f"[red]error:[/] the message broker is unreachable: {redact_text(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except DatabaseError as exc:
        errors.print(f"[red]error:[/] the audit database is unreachable: {redact_text(str(exc.orig))}", highlight=False, soft_wrap=True)
        sys.exit(2)
