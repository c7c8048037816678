"""Summaries for post-mortems: runs per handler, runs still waiting, the slowest steps."""

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from .audit import AuditLog
from .queries import iso_utc, seconds_between
from .tables import FINAL_STATUSES, Run, Step

RUN, STEP = Run.__table__, Step.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)  # the tolerance keeps 0.95 * 20 at 19
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def handler_stats(
    audit: AuditLog, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per handler: runs, how they ended, success rate of the finished ones, p50/p95 duration (s)."""
    query = select(RUN.c.handler, RUN.c.status, RUN.c.started_at, RUN.c.finished_at)
    if since:
        query = query.where(RUN.c.created_at >= since)
    if until:
        query = query.where(RUN.c.created_at < until)
    per: dict[str, dict[str, Any]] = {}
    with audit.engine.connect() as db:
        for handler, status, started, finished in db.execute(query):
            entry = per.setdefault(handler, {"handler": handler, "runs": 0, "statuses": {}, "durations": []})
            entry["runs"] += 1
            entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
            if status in FINAL_STATUSES and started and finished:
                entry["durations"].append((finished - started).total_seconds())
    rows = []
    for handler in sorted(per):
        entry = per[handler]
        statuses, durations = entry.pop("statuses"), entry.pop("durations")
        finished = sum(n for s, n in statuses.items() if s in FINAL_STATUSES)
        rows.append(
            {
                **entry,
                "succeeded": statuses.get("succeeded", 0),
                "failed": statuses.get("failed", 0) + statuses.get("dead", 0),
                "cancelled": statuses.get("cancelled", 0),
                "unfinished": entry["runs"] - finished,
                "success_rate": round(statuses.get("succeeded", 0) / finished, 4) if finished else None,
                "p50_s": _round(percentile(durations, 0.5)),
                "p95_s": _round(percentile(durations, 0.95)),
            }
        )
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


#: A process whose subscriptions were renewed this recently (seconds) still serves its handlers.
SERVED_WITHIN = 90.0


def waiting_runs(audit: AuditLog) -> list[dict[str, Any]]:
    """Runs parked in a continuation (what each waits for, when it looks again, when it gives up),
    and unfinished runs whose handler no live process serves: nothing will move those on until
    one does (a worker with the handler, or `stackreflex runs resume`)."""
    served = audit.served_handlers(audit.clock.now() - timedelta(seconds=SERVED_WITHIN))
    query = select(RUN).where(RUN.c.status.in_(("waiting", "pending", "running"))).order_by(RUN.c.created_at)
    with audit.engine.connect() as db:
        rows = [r for r in db.execute(query) if r.status == "waiting" or r.handler not in served]
    return [
        {
            "id": r.id,
            "handler": r.handler,
            "subject": r.subject,
            "status": r.status,
            "waiting_for": r.waiting_for if r.status == "waiting" else None,
            "since": iso_utc(r.created_at),
            "wake_at": iso_utc(r.wake_at),
            "deadline": iso_utc(r.deadline),
            "attempts": r.attempts,
            "wakes": r.wakes,
            "progress": r.progress_note,
            "served_by": served.get(r.handler, 0),
            "cancel_requested": r.cancel_reason,
        }
        for r in rows
    ]


def slowest_steps(
    audit: AuditLog, run_id: str | None = None, since: datetime | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """The longest finished steps, of one run or of every run since ``since``."""
    query = select(STEP, RUN.c.handler).join(RUN, RUN.c.id == STEP.c.run_id).where(STEP.c.finished_at.is_not(None))
    if run_id:
        query = query.where(STEP.c.run_id == run_id)
    if since:
        query = query.where(STEP.c.started_at >= since)
    with audit.engine.connect() as db:
        rows = [
            {
                "run_id": s.run_id,
                "handler": s.handler,
                "step": s.name,
                "target": s.target,
                "status": s.status,
                "started_at": iso_utc(s.started_at),
                "duration_s": seconds_between(s.started_at, s.finished_at),
                "error": s.error,
            }
            for s in db.execute(query)
        ]
    return sorted(rows, key=lambda r: r["duration_s"], reverse=True)[:limit]
