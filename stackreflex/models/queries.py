"""Read-side queries over the audit log, returning plain dicts ready to render as tables or JSON."""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import col, select

from ..core.clock import utcnow
from ..core.errors import RunNotFound, StackreflexError
from .audit import AuditLog
from .tables import EnvelopeRecord, Run, Step

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdwy])$")
#: Seconds in each unit of a relative time (a year is 365 days).
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d``, ``1y`` ago, or an ISO 8601 time (UTC unless it names a zone)."""
    match = _RELATIVE.match(text.strip())
    if match:
        try:
            return utcnow() - timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        except (OverflowError, ValueError):
            raise StackreflexError(f"{text!r} is further back than any time can be") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise StackreflexError(f"cannot read time {text!r}: use e.g. 30m, 2h, 7d or 2026-11-22T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_utc(moment: datetime | None) -> str | None:
    """``2026-11-22T08:00:00.000Z``; a naive time is taken as UTC (SQLite returns them so)."""
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def parse_age(text: str) -> datetime:
    """``90d``, ``12w``, ``48h``, ``1y``: that long ago; anything else is refused."""
    if not _RELATIVE.match(text.strip()):
        raise StackreflexError(f"cannot read age {text!r}: give one such as 90d, 12w, 48h or 1y")
    return parse_since(text)


@dataclass
class RunFilter:
    status: list[str] | None = None
    handler: str | None = None
    since: datetime | None = None
    subject: str | None = None
    correlation_id: str | None = None
    limit: int = 50


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "handler": run.handler,
        "status": run.status,
        "type": run.type,
        "subject": run.subject,
        "envelope_id": run.envelope_id,
        "correlation_id": run.correlation_id,
        "attempts": run.attempts,
        "wakes": run.wakes,
        "created_at": iso_utc(run.created_at),
        "started_at": iso_utc(run.started_at),
        "finished_at": iso_utc(run.finished_at),
        "duration_s": seconds_between(run.started_at, run.finished_at),
        "waiting_for": run.waiting_for if run.status == "waiting" else None,
        "wake_at": iso_utc(run.wake_at) if run.status == "waiting" else None,
        "deadline": iso_utc(run.deadline) if run.status == "waiting" else None,
        "progress": {"done": run.progress_done, "total": run.progress_total, "note": run.progress_note}
        if run.progress_done is not None
        else None,
        "error": run.error,
        "cancel_reason": run.cancel_reason,
    }


def list_runs(audit: AuditLog, f: RunFilter) -> list[dict[str, Any]]:
    """Newest first."""
    query = select(Run)
    if f.status:
        query = query.where(col(Run.status).in_(f.status))
    if f.handler:
        query = query.where(Run.handler == f.handler)
    if f.since:
        query = query.where(Run.created_at >= f.since)
    if f.subject:
        query = query.where(Run.subject == f.subject)
    if f.correlation_id:
        query = query.where(Run.correlation_id == f.correlation_id)
    query = query.order_by(col(Run.created_at).desc()).limit(f.limit)
    with audit.session() as s:
        return [run_summary(r) for r in s.exec(query)]


def find_run(audit: AuditLog, run_id: str) -> Run:
    """A run by its id or an unambiguous prefix of it (as shown in tables)."""
    with audit.session() as s:
        run = s.get(Run, run_id)
        if run is not None:
            return run
        # autoescape: '%' and '_' in what the operator typed are characters, not wildcards
        matches = list(s.exec(select(Run).where(col(Run.id).startswith(run_id, autoescape=True)).limit(2)))
    if not matches:
        raise RunNotFound(f"no run with id {run_id!r}; list runs with `stackreflex audit runs`")
    if len(matches) > 1:
        raise RunNotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")
    return matches[0]


def run_with_steps(audit: AuditLog, run_id: str) -> dict[str, Any]:
    run = find_run(audit, run_id)
    with audit.session() as s:
        steps = list(s.exec(select(Step).where(Step.run_id == run.id).order_by(col(Step.started_at), col(Step.id))))
    return {
        **run_summary(run),
        "steps": [
            {
                "id": st.id,
                "attempt": st.attempt,
                "name": st.name,
                "target": st.target,
                "status": st.status,
                "started_at": iso_utc(st.started_at),
                "finished_at": iso_utc(st.finished_at),
                "duration_s": seconds_between(st.started_at, st.finished_at),
                "detail": json.loads(st.detail or "{}"),
                "error": st.error,
            }
            for st in steps
        ],
    }


def known_handlers(audit: AuditLog) -> list[str]:
    with audit.session() as s:
        return sorted(set(s.exec(select(Run.handler).distinct())))


def list_envelopes(
    audit: AuditLog, *, status: str | None = None, since: datetime | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Envelopes as received (newest first), with the reason of each rejection."""
    query = select(EnvelopeRecord)
    if status:
        query = query.where(EnvelopeRecord.status == status)
    if since:
        query = query.where(EnvelopeRecord.received_at >= since)
    with audit.session() as s:
        rows = s.exec(query.order_by(col(EnvelopeRecord.pk).desc()).limit(limit))
        return [
            {
                "envelope_id": e.envelope_id,
                "status": e.status,
                "reason": e.reason,
                "type": e.type,
                "subject": e.subject,
                "actor": e.actor,
                "correlation_id": e.correlation_id,
                "received_at": iso_utc(e.received_at),
                "payload": e.payload,
            }
            for e in rows
        ]
