"""What a command prints as data, in the ``openstack`` CLI's formats: ``-f table|json|yaml|csv|value``,
``-c COLUMN``, ``--sort-column``, ``--max-width``/``--fit-width``, with cliff's semantics.

One :class:`Listing` (rows under columns) or :class:`Record` (one object's fields) per result;
:func:`emit` renders it as the invocation asked. Keys are the columns' ``key``: snake_case,
stable, the same in JSON, YAML, CSV and for ``-c`` (which also takes the header, as cliff
normalises it). Machine formats carry every column, whole ids and ISO times; a table shows
the short set (``--long``: all) with ids cut to a unique prefix and times compact.

Tables are drawn here, not by rich: a cell is wrapped only at spaces and only in a free-text
column, so a word, a host name or an id is never split; a table too wide even so is left
wider than the terminal (cliff does the same) rather than cut.
"""

from __future__ import annotations

import csv
import functools
import inspect
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.text import Text

from ..core.redaction import redact

FORMATS = ("table", "json", "yaml", "csv", "value")

#: Column kinds: ``word`` is never wrapped, ``text`` wraps at spaces, ``id`` is cut to a unique
#: prefix in tables, ``time`` shown compactly, ``status`` coloured, ``number`` right-aligned,
#: ``percent`` a fraction (0..1) shown as a percentage.
Kind = Literal["word", "text", "id", "time", "status", "number", "percent"]

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "dead": "bold red",
    "running": "cyan",
    "waiting": "yellow",
    "pending": "white",
    "skipped": "dim",
    "interrupted": "magenta",
    "cancelled": "dark_orange",
    "rejected": "red",
    "duplicate": "yellow",
    "accepted": "green",
    "ok": "green",
    "FAIL": "red",
    "warn": "yellow",
    "pass": "green",
    "fail": "red",
}

#: An id shown in a table is at least this long (git's short ids are 7).
SHORT_ID = 8


@dataclass(frozen=True)
class Column:
    key: str
    kind: Kind = "word"
    #: shown in a table only with --long (machine formats always carry it)
    long: bool = False
    header: str | None = None
    #: left out of a table that cannot fit the terminal otherwise (and said so under it)
    spare: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key.replace("_", " ")


@dataclass
class Listing:
    """Rows (dicts by column key) under columns; ``title`` and ``empty`` are said only in a table."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    title: str | None = None
    empty: str | None = None


@dataclass
class Record:
    """One object: its fields as a two-column table, or one JSON/YAML object; ``nested`` is
    added to the object in JSON and YAML (e.g. a run's steps), and shown by the caller as its
    own listing in a table."""

    fields: list[Column]
    values: dict[str, Any]
    title: str | None = None
    nested: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputOptions:
    format: str = "table"
    columns: list[str] = field(default_factory=list)
    sort_columns: list[str] = field(default_factory=list)
    sort_descending: bool = False
    max_width: int = 0
    fit_width: bool = False
    long: bool = False

    @property
    def machine(self) -> bool:
        return self.format != "table"


# -- the options, added to a command by @lists ---------------------------------------------

_OPTIONS = {
    "format_": (
        Annotated[
            str,
            typer.Option(
                "--format",
                "-f",
                help=("Output format: table, json, yaml, csv or value (values only, space-separated: for scripts)."),
                rich_help_panel="Output",
            ),
        ],
        "table",
    ),
    "column": (
        Annotated[
            list[str],
            typer.Option(
                "--column",
                "-c",
                metavar="COLUMN",
                help=("A column to include (repeatable), by its key as in JSON or its header."),
                rich_help_panel="Output",
            ),
        ],
        [],
    ),
    "sort_column": (
        Annotated[
            list[str],
            typer.Option(
                "--sort-column",
                metavar="COLUMN",
                help=("Sort by this column (repeatable, the first counts most)."),
                rich_help_panel="Output",
            ),
        ],
        [],
    ),
    "sort_descending": (
        Annotated[bool, typer.Option("--sort-descending", help="Sort the other way round.", rich_help_panel="Output")],
        False,
    ),
    "max_width": (
        Annotated[
            int,
            typer.Option(
                "--max-width",
                metavar="N",
                help=("Fit tables into N columns (0: the terminal's, when it is one; also CLIFF_MAX_TERM_WIDTH)."),
                rich_help_panel="Output",
            ),
        ],
        int(os.environ.get("CLIFF_MAX_TERM_WIDTH", 0) or 0),
    ),
    "fit_width": (
        Annotated[
            bool,
            typer.Option(
                "--fit-width",
                help=("Fit tables to the terminal's width even when piped (also CLIFF_FIT_WIDTH=1)."),
                rich_help_panel="Output",
            ),
        ],
        bool(int(os.environ.get("CLIFF_FIT_WIDTH", 0) or 0)),
    ),
    "long": (Annotated[bool, typer.Option("--long", help="Every column, ids whole.", rich_help_panel="Output")], False),
    "as_json": (Annotated[bool, typer.Option("--json", hidden=True, help="The same as -f json.")], False),
}


def lists(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the output options; it prints through :func:`emit`. (Put it under
    ``@app.command()``.)"""
    signature = inspect.signature(command)
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in _OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_output(**kwargs: Any) -> Any:
        chosen = {name: kwargs.pop(name) for name in _OPTIONS}
        fmt = "json" if chosen["as_json"] else chosen["format_"]
        if fmt not in FORMATS:
            raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
        from .common import current_invocation

        current_invocation().output = OutputOptions(
            fmt,
            chosen["column"],
            chosen["sort_column"],
            chosen["sort_descending"],
            chosen["max_width"],
            chosen["fit_width"],
            chosen["long"],
        )
        return command(**kwargs)

    with_output.__signature__ = signature.replace(  # type: ignore[attr-defined]  # inspect reads it; functools' wrapper type does not declare it
        parameters=[*signature.parameters.values(), *added]
    )
    with_output.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in added}}
    return with_output


# -- choosing columns and rows -------------------------------------------------------------


def _normal(name: str) -> str:
    return name.lower().strip().replace(" ", "_").replace("-", "_")


def chosen_columns(columns: list[Column], options: OutputOptions) -> list[Column]:
    """``-c`` as cliff reads it (key or header, normalised; in the listing's order), else the
    table's set or, for machine formats, every column."""
    if options.columns:
        wanted = {_normal(c) for c in options.columns}
        picked = [c for c in columns if _normal(c.key) in wanted or _normal(c.title) in wanted]
        if not picked:
            raise typer.BadParameter(
                f"no recognized column names in {options.columns}; the columns are {', '.join(c.key for c in columns)}",
                param_hint="--column",
            )
        return picked
    return [c for c in columns if options.machine or options.long or not c.long]


def sorted_rows(rows: list[dict[str, Any]], columns: list[Column], options: OutputOptions) -> list[dict[str, Any]]:
    keys = [
        c.key for name in options.sort_columns for c in columns if _normal(name) in (_normal(c.key), _normal(c.title))
    ]
    if not keys:
        return rows
    # None sorts last whichever way; numbers as numbers, the rest as text
    return sorted(
        rows,
        key=lambda row: [
            (row.get(k) is None, row.get(k) if isinstance(row.get(k), (int, float)) else str(row.get(k) or ""))
            for k in keys
        ],
        reverse=options.sort_descending,
    )


# -- emitting ------------------------------------------------------------------------------


def emit(result: Listing | Record, options: OutputOptions, out: Console, say: Console) -> None:
    """Print ``result`` on ``out`` as ``options`` ask; notes (the empty message) on ``say``."""
    if isinstance(result, Record):
        _emit_record(result, options, out)
        return
    columns = chosen_columns(result.columns, options)
    rows = sorted_rows(result.rows, result.columns, options)
    if options.format == "table":
        if not options.columns:  # a column empty in every row says nothing in a table
            columns = [c for c in columns if any(row.get(c.key) not in (None, "", [], {}) for row in rows)] or columns
        if rows:
            if result.title:
                out.print(result.title, style="italic", highlight=False)
            out.print(draw(columns, rows, options, out), soft_wrap=True, crop=False)
        if not rows and result.empty:
            say.print(result.empty, highlight=False, soft_wrap=True)
        return
    keys = [c.key for c in columns]
    data = [redact({k: _plain(row.get(k)) for k in keys}) for row in rows]
    if options.format == "json":
        _write(json.dumps(data, indent=2, default=str) + "\n")
    elif options.format == "yaml":
        _write(_yaml(data))
    elif options.format == "csv":
        _write(_csv([keys, *([row[k] for k in keys] for row in data)]))
    else:
        _write("".join(" ".join(_value(row[k]) for k in keys) + "\n" for row in data))


def _emit_record(record: Record, options: OutputOptions, out: Console) -> None:
    fields = chosen_columns(record.fields, options)
    if options.format == "table":
        rows = [
            {"field": c.title, "value": record.values.get(c.key), "_kind": c.kind}
            for c in fields
            if record.values.get(c.key) is not None
        ]
        if record.title:
            out.print(record.title, style="italic", highlight=False)
        out.print(
            draw([Column("field"), Column("value", "text")], rows, options, out, kinds_of_rows=True),
            soft_wrap=True,
            crop=False,
        )
        return
    values = redact(
        {c.key: _plain(record.values.get(c.key)) for c in fields} | ({} if options.columns else record.nested)
    )
    if options.format == "json":
        _write(json.dumps(values, indent=2, default=str) + "\n")
    elif options.format == "yaml":
        _write(_yaml(values))
    elif options.format == "csv":
        _write(_csv([list(values), list(values.values())]))
    else:
        _write("".join(_value(v) + "\n" for v in values.values()))


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="milliseconds")
    return value


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False, allow_unicode=True)


def _csv(rows: Iterable[list[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n", escapechar="\\")
    for row in rows:
        writer.writerow([v if isinstance(v, (int, float)) and not isinstance(v, bool) else _value(v) for v in row])
    return buffer.getvalue()


# -- the table -----------------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
_HEXISH = re.compile(r"^[0-9a-f]{8}-?[0-9a-f-]{8,}$")


def shown(value: Any, kind: Kind, *, today: date | None = None) -> str:
    """A value as a table cell (ids are cut by :func:`_unique_prefixes`, per column)."""
    if value is None:
        return ""
    if kind == "time":
        return compact_time(value, today)
    if kind == "percent" and isinstance(value, (int, float)):
        return f"{value:.1%}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in redact(value).items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value)


def compact_time(value: Any, today: date | None = None) -> str:
    """``HH:MM:SS`` for a time of today (in its own zone), ``YYYY-MM-DD HH:MM:SS`` otherwise."""
    if isinstance(value, str):
        if not _ISO.match(value):
            return value
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        return str(value)
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    now = datetime.now(moment.tzinfo)
    return moment.strftime("%H:%M:%S" if moment.date() == (today or now.date()) else "%Y-%m-%d %H:%M:%S")


def _day_of(value: Any) -> date | None:
    if isinstance(value, str) and _ISO.match(value):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            return None
    return value.date() if isinstance(value, datetime) else None


def _one_day(values: list[Any]) -> str | None:
    """The date all of a column's times fall on, when it is one and not today: said once, in
    the header, and the cells show the time of day alone."""
    days = {_day_of(v) for v in values if v is not None}
    if len(days) != 1 or None in days:
        return None
    [day] = days
    return None if day is None or day == date.today() else day.isoformat()


def _unique_prefixes(values: list[str]) -> list[str]:
    """Each id cut to the shortest prefix (at least :data:`SHORT_ID`) that no other id of the column shares."""
    ids = [v for v in values if _HEXISH.match(v)]
    if not ids:
        return values
    length = SHORT_ID
    while length < max(len(v) for v in ids) and len({v[:length] for v in set(ids)}) < len(set(ids)):
        length += 1
    return [v[:length] if _HEXISH.match(v) else v for v in values]


def draw(
    columns: list[Column],
    rows: list[dict[str, Any]],
    options: OutputOptions,
    console: Console,
    *,
    kinds_of_rows: bool = False,
    width: int | None = None,
) -> Text:
    """``rows`` as a boxed table (``+---+`` as the openstack CLI draws it), fitted to ``width``
    (or as ``--max-width``/``--fit-width`` and the terminal say): free-text cells wrap at spaces,
    nothing else is ever broken."""
    columns = list(columns)
    kinds: list[str] = [c.kind for c in columns]
    rows = [redact(row) for row in rows]  # redacted once more on the way out, as every format is
    cells: list[list[str]] = []
    for row in rows:
        line = []
        for c in columns:
            kind = row.get("_kind", "text") if kinds_of_rows and c.key == "value" else c.kind
            line.append(shown(row.get(c.key), kind))
        cells.append(line)
    for i, c in enumerate(columns):
        if c.kind == "id" and not options.long:
            for line, cut in zip(cells, _unique_prefixes([r[i] for r in cells]), strict=False):
                line[i] = cut
    headers = [c.title for c in columns]
    for i, c in enumerate(columns):
        if c.kind == "time" and (day := _one_day([row.get(c.key) for row in rows])):
            headers[i] = f"{headers[i]} {day}" if "(" not in headers[i] else headers[i].replace(")", f", {day})")
            for line, row in zip(cells, rows, strict=False):
                line[i] = compact_time(row.get(c.key), today=_day_of(row.get(c.key)))
    target = width or _target_width(options, console)
    widths = fit(headers, cells, kinds, target, names=False)
    left_out: list[str] = []
    # too wide with every word whole: the spare columns go (the last first, and a line says
    # which) before names are wrapped
    while (
        target
        and sum(widths) + 3 * len(widths) + 1 > target
        and not options.columns
        and (spare := [i for i, c in enumerate(columns) if c.spare])
    ):
        i = spare[-1]
        left_out.insert(0, columns[i].key)
        every: list[list[Any]] = [columns, kinds, headers, *cells]
        for seq in every:
            del seq[i]
        widths = fit(headers, cells, kinds, target, names=False)
    widths = fit(headers, cells, kinds, target)
    text = Text(no_wrap=True, overflow="ignore")
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
    text.append(border)
    _append_row(
        text,
        [_wrap(h, w, "text") or [""] for h, w in zip(headers, widths, strict=False)],
        widths,
        kinds,
        [None] * len(widths),
        header=True,
    )
    text.append(border)
    for line in cells:
        wrapped = [_wrap(cell, w, kind) for cell, w, kind in zip(line, widths, kinds, strict=False)]
        styles = [STATUS_STYLE.get(cell) if kind == "status" else None for cell, kind in zip(line, kinds, strict=False)]
        _append_row(text, [w or [""] for w in wrapped], widths, kinds, styles)
    text.append(border.rstrip("\n"))
    if left_out:
        text.append(f"\nnot shown at {target} columns: {', '.join(left_out)} (-c COLUMN picks columns)", style="dim")
    return text


def live(result: Listing, console: Console) -> Text:
    """A listing as a live display shows it: its title over the table, fitted to the terminal."""
    text = Text(no_wrap=True, overflow="ignore")
    if result.title:
        text.append(result.title + "\n", style="italic")
    if result.rows:
        options = OutputOptions()
        text.append_text(
            draw(chosen_columns(result.columns, options), result.rows, options, console, width=console.width)
        )
    elif result.empty:
        text.append(result.empty)
    return text


_PIECE = re.compile(r"[^-./_:@,=]*[-./_:@,=]*")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _pieces(word: str, camel: bool = False) -> list[str]:
    """A name cut after each separator (``overcloud-``, ``compute-``, ``3.``, ``localdomain``; ``key=``),
    and with ``camel`` before each capital that follows a small letter (``Compute``,
    ``Deployed``, ``Server[0]``): where a name may go on the next line without a word broken."""
    pieces = [p for p in _PIECE.findall(word) if p]
    return [q for p in pieces for q in _CAMEL.split(p) if q] if camel else pieces


def _wrap(cell: str, width: int, kind: str) -> list[str]:
    if len(cell) <= width:
        return [cell]
    camel = any(len(p) > width for w in cell.split() for p in _pieces(w))
    if kind == "time":  # a date over its time of day
        return cell.split()
    # (a name with spaces in it, a step's name, only gets here once every word-wrap is spent)
    words = textwrap.wrap(cell, width, break_long_words=False, break_on_hyphens=False)
    lines = []
    for word in words:
        if len(word) <= width:
            lines.append(word)
            continue
        line = ""
        for piece in _pieces(word, camel):
            if line and len(line) + len(piece) > width:
                lines.append(line)
                line = ""
            line += piece
        lines.append(line)
    return lines


def _append_row(
    text: Text,
    lines: list[list[str]],
    widths: list[int],
    kinds: list[str],
    styles: list[str | None],
    header: bool = False,
) -> None:
    for n in range(max(len(cell) for cell in lines)):
        text.append("|")
        for cell, width, kind, style in zip(lines, widths, kinds, styles, strict=False):
            piece = cell[n] if n < len(cell) else ""
            padded = piece.rjust(width) if kind in ("number", "percent") and not header else piece.ljust(width)
            text.append(" ")
            text.append(padded, style="bold" if header else style)
            text.append(" |")
        text.append("\n")


def _target_width(options: OutputOptions, console: Console) -> int | None:
    """cliff's rule: --max-width if set; else the terminal's width when printing to one (or
    with --fit-width); else no fitting."""
    if options.max_width > 0:
        return options.max_width
    if console.is_terminal or options.fit_width:
        return console.width
    return None


def fit(
    headers: list[str], cells: list[list[str]], kinds: list[str], target: int | None, *, names: bool = True
) -> list[int]:
    """Column widths: each column's widest cell, narrowed to fit ``target`` (with the borders)
    first in free-text columns down to their longest word, then in headers down to theirs,
    then (with ``names``) names down to their longest piece between separators (see :func:`_pieces`)."""
    n = len(headers)
    widest = [max([len(headers[i]), *(max(len(p) for p in row[i].split("\n")) for row in cells)]) for i in range(n)]
    if target is None or sum(widest) + 3 * n + 1 <= target:
        return widest
    room = target - 3 * n - 1
    longest_word = [max([0, *(len(w) for row in cells for w in row[i].split())]) for i in range(n)]
    header_word = [max(len(w) for w in (headers[i].split() or [""])) for i in range(n)]
    cell_widest = [max([0, *(max(len(p) for p in row[i].split("\n")) for row in cells)]) for i in range(n)]
    text_floor = [max(longest_word[i], header_word[i]) if kinds[i] == "text" else widest[i] for i in range(n)]

    def longest_piece(i: int, camel: bool = False) -> int:
        return max([0, *(len(p) for row in cells for w in row[i].split() for p in _pieces(w, camel))])

    widths = list(widest)
    headers_floor = [max(cell_widest[i] if kinds[i] != "text" else text_floor[i], header_word[i]) for i in range(n)]
    header_piece = [max(len(p) for w in (headers[i].split() or [""]) for p in (_pieces(w) or [""])) for i in range(n)]
    names_floor = [
        max(
            longest_piece(i)
            if kinds[i] in ("word", "text")
            else longest_word[i]
            if kinds[i] == "time"
            else cell_widest[i],
            header_piece[i],
        )
        for i in range(n)
    ]
    words_floor = [
        max(longest_piece(i, True) if kinds[i] in ("word", "text") else names_floor[i], header_piece[i])
        for i in range(n)
    ]
    for floor in (text_floor, headers_floor, *((names_floor, words_floor) if names else ())):
        while sum(widths) > room:
            over = [i for i in range(n) if widths[i] > floor[i]]
            if not over:
                break
            i = max(over, key=lambda j: widths[j])
            second = max([floor[i], *(widths[j] for j in over if j != i)])
            widths[i] = max(floor[i], min(widths[i] - 1, max(second, widths[i] - (sum(widths) - room))))
    return widths
