"""What every command shares: the settings of this invocation, the console, rendering.

Imported by the root command, so it imports what settings, handlers and the audit log need
only when they are asked for."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer
from rich.console import Console

from ..core.errors import StackreflexError
from . import output
from .output import Listing, OutputOptions, Record

if TYPE_CHECKING:
    from ..core.registry import Registry
    from ..core.settings import Settings
    from ..models.audit import AuditLog

#: Handler modules every worker serves, whatever --handlers adds.
BUILTIN_HANDLER_MODULES: list[str] = [
    "stackreflex.handlers.deployed_servers",
    "stackreflex.handlers.host_maintenance",
    "stackreflex.handlers.snapshots",
    "stackreflex.handlers.image_copies",
    "stackreflex.handlers.edge_check",
    "stackreflex.handlers.validations",
    "stackreflex.handlers.backups",
]

#: How long a command's write waits for an unreachable audit database (seconds).
CLI_OUTAGE_LIMIT = 15.0

console = Console()
errors = Console(stderr=True)


@dataclass
class Invocation:
    """Global options, turned into settings on first use."""

    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    output: OutputOptions = field(default_factory=OutputOptions)
    #: a service (worker, watch) logs at its log_level; any other command at WARNING, the
    #: embedded handlers' INFO lines included, unless -v or a log level is asked for
    service: bool = False
    verbose: bool = False
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..core.logs import setup_logging
            from ..core.settings import load_settings

            self._settings = load_settings(self.config, **self.overrides)
            asked = self.service or "log_level" in self.overrides or "STACKREFLEX_LOG_LEVEL" in os.environ
            level = self._settings.log_level if asked else "WARNING"
            if self.verbose and level.upper() != "DEBUG":
                level = "INFO"
            setup_logging(self._settings.log_format, level)
        return self._settings

    def amend(self, **update: Any) -> Settings:
        """This command's settings with ``update`` (e.g. checks loaded from ``--checks``)."""
        self._settings = self.settings.model_copy(update=update)
        return self._settings

    def audit(self) -> AuditLog:
        """The audit log, for a command: a write waits at most :data:`CLI_OUTAGE_LIMIT` for an
        unreachable database (a worker waits much longer)."""
        from ..models.audit import AuditLog

        return AuditLog.open(self.settings.database(), outage_limit=CLI_OUTAGE_LIMIT)


class _ThisInvocation:
    """The :class:`Invocation` of the command being run, kept on typer's context (the root
    callback makes it): nothing of one invocation outlives it or leaks into the next one run in
    the same process."""

    def __getattr__(self, name: str) -> Any:
        return getattr(current_invocation(), name)


def current_invocation() -> Invocation:
    context = typer.main.get_current_context(silent=True)  # type: ignore[attr-defined]  # typer re-exports its click's, implicitly
    if context is None:
        raise RuntimeError("no stackreflex command is being run")
    root = context.find_root()
    if not isinstance(root.obj, Invocation):
        root.obj = Invocation()
    return root.obj


invocation = _ThisInvocation()


def load_all_handlers(extra: Iterable[str] = ()) -> Registry:
    """The built-in handlers and those of ``extra`` (modules or files): what this command serves."""
    from ..core.registry import Registry, load_handlers

    registry = Registry()
    for spec in [*BUILTIN_HANDLER_MODULES, *extra]:
        load_handlers(spec, registry)
    return registry


@contextmanager
def writing(path: Path) -> Iterator[TextIO]:
    """A file a command writes, opened for text; a path that cannot be written is a one-line error."""
    try:
        out = path.open("w", newline="")
    except OSError as exc:
        raise StackreflexError(f"cannot write {path}: {exc.strerror}") from None
    with out:
        yield out


def emit(result: Listing | Record) -> None:
    """Print a command's data as its output options ask (see :mod:`.output`)."""
    options = current_invocation().output
    output.emit(result, options, console, errors if options.machine else console)


def say(text: str) -> None:
    """A line for the operator beside the data: on stdout under a table, on stderr when stdout
    carries JSON, YAML, CSV or values (so that it stays parseable)."""
    (errors if current_invocation().output.machine else console).print(text, highlight=False, soft_wrap=True)


@contextmanager
def live_display(title_key: str) -> Iterator[Callable[[Listing], None]]:
    """Show a listing that changes (a run's progress) until the block ends; yields ``update``.

    On a terminal it is redrawn in place, and log records print above it on the same console
    (a second writer under a live display is what garbles it); it is erased at the end, and
    the command prints its final table once. Not on a terminal, each row prints as a plain
    line when it changes (keyed by ``title_key``): no control codes in a log file. JSON and
    other machine formats keep stdout for data: the display goes to stderr."""
    target = errors if current_invocation().output.machine else console
    if not target.is_terminal:
        said: dict[Any, str] = {}

        def line(listing: Listing) -> None:
            for row in listing.rows:
                text = "  ".join(
                    _short(output.shown(row.get(c.key), c.kind), c.kind) for c in listing.columns if not c.long
                )
                if said.get(row.get(title_key)) != text:
                    said[row.get(title_key)] = text
                    target.print(text, highlight=False, soft_wrap=True, markup=False)

        yield line
        return
    from rich.live import Live

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers[:] = [_OnConsole(handler, target) for handler in kept]
    try:
        with Live(
            console=target, refresh_per_second=8, transient=True, redirect_stdout=False, redirect_stderr=False
        ) as display:
            yield lambda listing: display.update(output.live(listing, target))
    finally:
        root.handlers[:] = kept


def _short(cell: str, kind: str) -> str:
    return cell[: output.SHORT_ID] if kind == "id" else cell


class _OnConsole(logging.Handler):
    """A log handler's records, formatted as it formats them, printed through a console (above
    its live display)."""

    def __init__(self, handler: logging.Handler, target: Console):
        super().__init__(handler.level)
        self.handler, self.target = handler, target

    def emit(self, record: logging.LogRecord) -> None:
        if not self.handler.filter(record):
            return
        try:
            self.target.print(self.handler.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)
