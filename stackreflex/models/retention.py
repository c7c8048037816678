"""Retention: drop what is older than asked, never a run that may still act, and never what
the router needs to know a replay by."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from .audit import AuditLog
from .tables import FINAL_STATUSES, EnvelopeRecord, Run, Step

RUN, STEP, ENVELOPE = Run.__table__, Step.__table__, EnvelopeRecord.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
#: Rows deleted per statement, so a large prune never holds one huge transaction.
BATCH = 5000


@dataclass
class Pruned:
    runs: int = 0
    steps: int = 0
    envelopes: int = 0


def prune(
    audit: AuditLog, before: datetime, *, dry_run: bool = False, replay_window: timedelta = timedelta(0)
) -> Pruned:
    """Delete finished runs created before ``before`` with their steps, and envelopes received
    before it that no unfinished run belongs to. Waiting, pending and running runs stay, whatever
    their age, and so does everything younger than ``replay_window``: a signature is good that
    long, and an envelope replayed inside it is known as a duplicate by its record here."""
    before = min(before, audit.clock.now() - replay_window)
    pruned = Pruned()
    old_runs = select(RUN.c.id).where(RUN.c.created_at < before, RUN.c.status.in_(FINAL_STATUSES))
    keep_envelopes = select(RUN.c.envelope_id).where(RUN.c.status.not_in(FINAL_STATUSES))
    old_envelopes = select(ENVELOPE.c.pk).where(
        ENVELOPE.c.received_at < before,
        ENVELOPE.c.envelope_id.is_(None) | ENVELOPE.c.envelope_id.not_in(keep_envelopes),
    )
    with audit.engine.begin() as db:
        run_ids = [r.id for r in db.execute(old_runs)]
        envelope_pks = [r.pk for r in db.execute(old_envelopes)]
        for start in range(0, len(run_ids), BATCH):
            batch = run_ids[start : start + BATCH]
            if dry_run:
                pruned.steps += len(db.execute(select(STEP.c.id).where(STEP.c.run_id.in_(batch))).all())
            else:
                pruned.steps += db.execute(delete(STEP).where(STEP.c.run_id.in_(batch))).rowcount
                db.execute(delete(RUN).where(RUN.c.id.in_(batch)))
        pruned.runs = len(run_ids)
        for start in range(0, len(envelope_pks), BATCH):
            if not dry_run:
                db.execute(delete(ENVELOPE).where(ENVELOPE.c.pk.in_(envelope_pks[start : start + BATCH])))
        pruned.envelopes = len(envelope_pks)
    return pruned
