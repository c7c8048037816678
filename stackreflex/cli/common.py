"""What every command shares: the settings of this invocation, the console, rendering.

Imported by the root command, so it imports what settings, handlers and the audit log need
only when they are asked for."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator, TextIO

import typer
from rich.console import Console
from rich.markup import render
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table

from ..core.errors import StackreflexError
from ..core.redaction import redact

if TYPE_CHECKING:
    from ..core.registry import Registry
    from ..core.settings import Settings
    from ..models.audit import AuditLog

#: Handler modules every worker serves, whatever --handlers adds.
BUILTIN_HANDLER_MODULES: list[str] = ["stackreflex.handlers.deployed_servers",
                                       "stackreflex.handlers.host_maintenance",
                                       "stackreflex.handlers.snapshots",
                                       "stackreflex.handlers.image_copies",
                                       "stackreflex.handlers.edge_check"]

#: How long a command's write waits for an unreachable audit database (seconds).
CLI_OUTAGE_LIMIT = 15.0

console = Console()
errors = Console(stderr=True)


@dataclass
class Invocation:
    """Global options, turned into settings on first use."""

    config: Path | None = None
    overrides: dict = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..core.logs import setup_logging
            from ..core.settings import load_settings

            self._settings = load_settings(self.config, **self.overrides)
            setup_logging(self._settings.log_format, self._settings.log_level)
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
    context = typer.main.get_current_context(silent=True)
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


def print_json(value: Any) -> None:
    """JSON on stdout, redacted once more on the way out."""
    sys.stdout.write(json.dumps(redact(value), indent=2, default=str) + "\n")


STATUS_STYLE = {"succeeded": "green", "failed": "red", "dead": "bold red", "running": "cyan",
                "waiting": "yellow", "pending": "white", "skipped": "dim", "interrupted": "magenta",
                "cancelled": "dark_orange"}


def styled(status: str | None) -> str:
    return f"[{STATUS_STYLE.get(status or '', 'white')}]{status}[/]" if status else ""


#: Above this many rows a table is printed as aligned columns without a box: rich's boxed
#: table measures and wraps every cell, a millisecond a row (1,000 timeline entries took 1.1 s).
LARGE_TABLE = 200


def table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> Table | _Columns:
    """Rows under a header; cells may carry rich markup (see :func:`styled`)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if len(cells) > LARGE_TABLE:
        return _Columns(title, columns, cells)
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in cells:
        t.add_row(*row)
    return t


@lru_cache(maxsize=256)
def _cell(markup: str) -> tuple[str, Style | None]:
    """A cell's plain text and its style (cells repeat: statuses, kinds, targets)."""
    if "[" not in markup:
        return markup, None
    text = render(markup)
    style = text.spans[0].style if text.spans else None
    return text.plain, Style.parse(style) if isinstance(style, str) else style


class _Columns:
    """A long table as aligned columns of plain lines, each cell one segment. On a terminal
    the widest columns are cut (ending in …) to fit its width; piped, nothing is cut."""

    def __init__(self, title: str | None, columns: list[str], rows: list[list[str]]):
        self.title, self.columns = title, columns
        self.rows = [[_cell(cell) for cell in row] for row in rows]

    def __rich_console__(self, console: Console, options):
        widths = [max([len(name), *(len(row[i][0]) for row in self.rows)]) for i, name in enumerate(self.columns)]
        if console.is_terminal:  # cut free text (cells with spaces) first, then the rest
            room = options.max_width - 2 * (len(widths) - 1)
            prose = [any(" " in row[i][0] for row in self.rows) for i in range(len(widths))]
            for cuttable in ([i for i, p in enumerate(prose) if p], range(len(widths))):
                while sum(widths) > room and (over := [i for i in cuttable if widths[i] > 8]):
                    widest = max(over, key=lambda i: widths[i])
                    widths[widest] = max(8, widths[widest] - (sum(widths) - room))
        if self.title:
            yield Segment(self.title, Style(italic=True))
            yield Segment.line()
        yield Segment("  ".join(name[:w].ljust(w) for name, w in zip(self.columns, widths)).rstrip(), Style(bold=True))
        yield Segment.line()
        last = len(widths) - 1
        for row in self.rows:
            for i, ((plain, style), width) in enumerate(zip(row, widths)):
                if len(plain) > width:
                    plain = plain[:width - 1] + "…"
                yield Segment(plain, style)
                if i < last:
                    yield Segment(" " * (width - len(plain) + 2))
            yield Segment.line()

    def __rich_measure__(self, console: Console, options) -> Measurement:
        return Measurement(options.max_width, options.max_width)
