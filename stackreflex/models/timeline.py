"""Post-mortem timelines: every envelope, run and step of a scope, in time order.

A scope is a correlation id (one command or event and all it caused), a stack (runs about
it and everything in their correlations), a host or a server (steps aimed at it and runs
about it, with their steps), or only a time window. Scopes given together intersect.
Each scope is read through an index, newest first and bounded by ``limit``, so a history of
millions of steps answers as fast as a small one.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Row, Select, or_, select

from ..core.redaction import redact
from .audit import AuditLog
from .queries import iso_utc, seconds_between
from .tables import EnvelopeRecord, Run, Step

RUN, STEP, ENVELOPE = Run.__table__, Step.__table__, EnvelopeRecord.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
#: Entries a timeline returns unless told otherwise (the newest, shown oldest first).
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Scope:
    correlation_id: str | None = None
    stack: str | None = None
    host: str | None = None
    server: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only entries with one of these statuses (succeeded, failed, rejected…).
    status: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT

    @property
    def subjects(self) -> list[str]:
        return [s for s in (self.stack, self.host, self.server) if s]

    def describe(self) -> str:
        parts = [
            f"{k} {v}"
            for k, v in (
                ("correlation", self.correlation_id),
                ("stack", self.stack),
                ("host", self.host),
                ("server", self.server),
            )
            if v
        ]
        if self.since or self.until:
            parts.append(f"from {iso_utc(self.since) or 'the start'} to {iso_utc(self.until) or 'now'}")
        return ", ".join(parts) or "everything"


@dataclass
class Timeline:
    scope: Scope
    entries: list[dict[str, Any]]
    #: True when more entries matched than ``scope.limit``: the oldest were left out.
    truncated: bool


def _window(query: Select[Any], column: ColumnElement[Any], scope: Scope) -> Select[Any]:
    if scope.since:
        query = query.where(column >= scope.since)
    if scope.until:
        query = query.where(column < scope.until)
    return query


def timeline(audit: AuditLog, scope: Scope) -> Timeline:
    """The entries of ``scope``, oldest first (the newest ``scope.limit`` of them)."""
    with audit.engine.connect() as db:
        runs = _scoped_runs(db, scope)
        steps = _steps(db, scope, runs)
        envelopes = _envelopes(db, scope, runs)
    shown_runs = [r for r in runs.values() if not scope.status or r.status in scope.status]
    entries = [
        *(_envelope_entry(e) for e in envelopes),
        *(_run_entry(r) for r in shown_runs),
        *(_step_entry(s, runs.get(s.run_id)) for s in steps),
    ]
    entries.sort(key=lambda e: (e["time"], _KIND_ORDER[e["kind"]], 0 if e["kind"] == "run" else int(e["id"][1:])))
    truncated = len(entries) > scope.limit
    return Timeline(scope, redact(entries[-scope.limit :]), truncated)


_KIND_ORDER = {"envelope": 0, "run": 1, "step": 2}


def _scoped_runs(db: Connection, scope: Scope) -> dict[str, Row[Any]]:
    """The runs in scope, by id: each scope given narrows the set."""
    chosen: dict[str, Row[Any]] | None = None

    def narrow(rows: Iterable[Row[Any]]) -> None:
        nonlocal chosen
        found = {r.id: r for r in rows}
        chosen = found if chosen is None else {k: v for k, v in chosen.items() if k in found}

    limit = scope.limit
    if scope.correlation_id:
        narrow(
            db.execute(
                _window(select(RUN).where(RUN.c.correlation_id == scope.correlation_id), RUN.c.created_at, scope)
            )
        )
    if scope.stack:
        about: Iterable[Row[Any]] = db.execute(
            _window(select(RUN.c.correlation_id).where(RUN.c.subject == scope.stack), RUN.c.created_at, scope)
            .order_by(RUN.c.created_at.desc())
            .limit(limit)
        )
        correlations = sorted({r.correlation_id for r in about})
        narrow(_in(db, select(RUN), RUN.c.correlation_id, correlations))
    for target in (scope.host, scope.server):
        if not target:
            continue
        about = db.execute(
            _window(select(RUN).where(RUN.c.subject == target), RUN.c.created_at, scope)
            .order_by(RUN.c.created_at.desc())
            .limit(limit)
        ).all()
        aimed = db.execute(
            _window(select(STEP.c.run_id).where(STEP.c.target == target), STEP.c.started_at, scope)
            .order_by(STEP.c.started_at.desc())
            .limit(limit)
        )
        narrow([*about, *_in(db, select(RUN), RUN.c.id, sorted({r.run_id for r in aimed} - {r.id for r in about}))])
    if chosen is None:  # only a window
        chosen = {
            r.id: r
            for r in db.execute(
                _window(select(RUN), RUN.c.created_at, scope).order_by(RUN.c.created_at.desc()).limit(limit)
            )
        }
    return chosen


#: Values per ``IN (…)`` list, well under every database's parameter limit.
CHUNK = 500


def _in(
    db: Connection,
    query: Select[Any],
    column: ColumnElement[Any],
    values: list[str],
    *,
    newest: Column[Any] | None = None,
    limit: int | None = None,
) -> list[Row[Any]]:
    """``query`` for ``column IN values``, a chunk at a time; with ``newest``, only the newest
    ``limit`` rows by that column."""
    rows: list[Row[Any]] = []
    for start in range(0, len(values), CHUNK):
        chunk = query.where(column.in_(values[start : start + CHUNK]))
        if newest is not None:
            chunk = chunk.order_by(newest.desc()).limit(limit)
        rows.extend(db.execute(chunk))
    if newest is not None:
        rows = sorted(rows, key=lambda r: getattr(r, newest.name), reverse=True)[:limit]
    return rows


def _steps(db: Connection, scope: Scope, runs: dict[str, Row[Any]]) -> list[Row[Any]]:
    """The newest steps of the runs in scope; for a host or server, only the steps aimed at it,
    unless their run is about it."""
    query = _window(select(STEP), STEP.c.started_at, scope)
    for target in (scope.host, scope.server):
        if target:
            about = [r.id for r in runs.values() if r.subject == target]  # at most scope.limit
            query = query.where(or_(STEP.c.target == target, STEP.c.run_id.in_(about)))
    if scope.status:
        query = query.where(STEP.c.status.in_(scope.status))
    return _in(db, query, STEP.c.run_id, sorted(runs), newest=STEP.c.started_at, limit=scope.limit)


def _envelopes(db: Connection, scope: Scope, runs: dict[str, Row[Any]]) -> list[Row[Any]]:
    correlations = sorted({r.correlation_id for r in runs.values()})
    if scope.correlation_id and not correlations:
        correlations = [scope.correlation_id]
    query = _window(select(ENVELOPE), ENVELOPE.c.received_at, scope)
    if scope.status:
        query = query.where(ENVELOPE.c.status.in_(scope.status))
    found = _in(db, query, ENVELOPE.c.correlation_id, correlations, newest=ENVELOPE.c.received_at, limit=scope.limit)
    if not scope.subjects and not scope.correlation_id:  # a window: rejected envelopes too
        rejected = query.where(ENVELOPE.c.status == "rejected").order_by(ENVELOPE.c.received_at.desc())
        found.extend(e for e in db.execute(rejected.limit(scope.limit)) if e.correlation_id not in correlations)
    if scope.stack and not (scope.host or scope.server or scope.correlation_id):
        # the stack's own events, Heat's failures among them, whether or not a run followed
        own = query.where(ENVELOPE.c.subject == scope.stack).order_by(ENVELOPE.c.received_at.desc())
        known = {e.pk for e in found}
        found.extend(e for e in db.execute(own.limit(scope.limit)) if e.pk not in known)
    if not scope.subjects:
        return found
    ids = {r.envelope_id for r in runs.values()}
    return [e for e in found if e.envelope_id in ids or e.subject in scope.subjects]


def _envelope_entry(e: Row[Any]) -> dict[str, Any]:
    return {
        "kind": "envelope",
        "id": f"e{e.pk}",
        "time": iso_utc(e.received_at),
        "end": None,
        "duration_s": None,
        "what": e.type or "(unreadable)",
        "target": e.subject,
        "status": e.status,
        "error": e.reason,
        "run_id": None,
        "handler": None,
        "correlation_id": e.correlation_id,
        "actor": e.actor,
    }


def _run_entry(r: Row[Any]) -> dict[str, Any]:
    return {
        "kind": "run",
        "id": r.id,
        "time": iso_utc(r.started_at or r.created_at),
        "end": iso_utc(r.finished_at),
        "duration_s": seconds_between(r.started_at, r.finished_at),
        "what": r.handler,
        "target": r.subject,
        "status": r.status,
        "error": r.error or (f"waiting for {r.waiting_for}" if r.status == "waiting" else None),
        "run_id": r.id,
        "handler": r.handler,
        "correlation_id": r.correlation_id,
        "attempts": r.attempts,
        "wakes": r.wakes,
    }


def _step_entry(s: Row[Any], run: Row[Any] | None) -> dict[str, Any]:
    return {
        "kind": "step",
        "id": f"s{s.id}",
        "time": iso_utc(s.started_at),
        "end": iso_utc(s.finished_at),
        "duration_s": seconds_between(s.started_at, s.finished_at),
        "what": s.name,
        "target": s.target,
        "status": s.status,
        "error": s.error,
        "run_id": s.run_id,
        "handler": run.handler if run else None,
        "correlation_id": run.correlation_id if run else None,
        "attempt": s.attempt,
        "detail": json.loads(s.detail or "{}"),
    }
