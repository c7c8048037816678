"""The audit log's write API: envelopes, runs (with claims, leases and continuations) and steps.

Every value written passes through :func:`stackreflex.redaction.redact` here, so no
caller can put a secret into a table by forgetting to.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ..bus.envelope import Envelope
from ..clock import utcnow
from ..redaction import redact, redact_text
from .database import make_engine, migrate
from .tables import FINAL_STATUSES, EnvelopeRecord, Run, Step

#: How much of a rejected message body is kept for the post-mortem.
RAW_EXCERPT_CHARS = 4000


def _json(value: Any) -> str:
    return json.dumps(redact(value), default=str, sort_keys=True)


def _text(value: str | None) -> str | None:
    return None if value is None else redact_text(value)


@dataclass(frozen=True)
class Claim:
    """The answer to "may this message run the handler now?"."""

    run: Run | None
    #: why not: ``missing``, ``finished``, ``busy`` (another worker holds a live lease),
    #: ``stale`` (an old wake-up) or ``early`` (a wake-up that overtook the parking of its run)
    refused: str | None = None

    @property
    def granted(self) -> bool:
        return self.refused is None


class AuditLog:
    """Reads and writes the audit tables through one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> "AuditLog":
        """Connect to ``url`` and bring its schema up to date."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- envelopes -------------------------------------------------------------------

    def record_envelope(self, envelope: Envelope | None, *, status: str,
                        reason: str | None = None, raw: bytes | str | None = None,
                        envelope_id: str | None = None) -> None:
        """Record an envelope as ``accepted``, ``duplicate`` or ``rejected`` (with its reason)."""
        if envelope is not None:
            payload = _json(envelope.to_dict())
            fields = dict(envelope_id=envelope.id, type=envelope.type, subject=envelope.subject,
                          source=envelope.source, correlation_id=envelope.correlationid,
                          causation_id=envelope.causationid, actor=envelope.actor, time=envelope.time)
        else:
            text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else (raw or "")
            payload = redact_text(text[:RAW_EXCERPT_CHARS])
            fields = dict(envelope_id=envelope_id)
        with self.session() as s:
            s.add(EnvelopeRecord(status=status, reason=_text(reason), received_at=utcnow(),
                                 payload=payload, **fields))
            s.commit()

    def seen(self, envelope_id: str) -> bool:
        """True if an envelope with this id was accepted before."""
        with self.session() as s:
            return s.exec(select(EnvelopeRecord.pk).where(
                EnvelopeRecord.envelope_id == envelope_id,
                EnvelopeRecord.status == "accepted").limit(1)).first() is not None

    # -- runs ------------------------------------------------------------------------

    def ensure_run(self, envelope: Envelope, handler: str) -> tuple[Run, bool]:
        """Get the run for (envelope, handler), creating it ``pending``; True if created."""
        now = utcnow()
        run = Run(id=str(uuid.uuid4()), envelope_id=envelope.id, handler=handler, type=envelope.type,
                  subject=envelope.subject, correlation_id=envelope.correlationid,
                  created_at=now, updated_at=now)
        with self.session() as s:
            try:
                s.add(run)
                s.commit()
                return run, True
            except IntegrityError:
                s.rollback()
        return self.find_run(envelope.id, handler), False

    def find_run(self, envelope_id: str, handler: str) -> Run | None:
        with self.session() as s:
            return s.exec(select(Run).where(Run.envelope_id == envelope_id,
                                            Run.handler == handler)).first()

    def get_run(self, run_id: str) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    def _update_run(self, run_id: str, *conditions, **values) -> int:
        values.setdefault("updated_at", utcnow())
        with self.session() as s:
            result = s.execute(update(Run).where(Run.id == run_id, *conditions).values(**values))
            s.commit()
            return result.rowcount

    def claim(self, envelope_id: str, handler: str, *, wake: int, owner: str,
              lease_seconds: float) -> Claim:
        """Atomically take a run to ``running`` for one attempt, or say why not.

        A run can be taken when it is pending or waiting for this wake-up, or when it is
        running under a lease that lapsed (its worker died: its open steps become
        ``interrupted``).
        """
        now = utcnow()
        claimable = and_(
            Run.envelope_id == envelope_id, Run.handler == handler, Run.wake == wake,
            or_(Run.status.in_(("pending", "waiting")),
                and_(Run.status == "running", Run.lease_until < now)),
        )
        with self.session() as s:
            taken = s.execute(update(Run).where(claimable).values(
                status="running", attempts=Run.attempts + 1, lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)).rowcount
            s.commit()
            run = s.exec(select(Run).where(Run.envelope_id == envelope_id,
                                           Run.handler == handler)).first()
            if taken:
                if run.started_at is None:
                    run.started_at = now
                    s.add(run)
                s.execute(update(Step).where(Step.run_id == run.id, Step.status == "running",
                                             Step.attempt < run.attempts)
                          .values(status="interrupted", finished_at=now,
                                  error="the worker running this step stopped before it finished"))
                s.commit()
                return Claim(run)
        if run is None:
            return Claim(None, "missing")
        if run.status in FINAL_STATUSES:
            return Claim(run, "finished")
        if run.wake > wake:
            return Claim(run, "stale")
        if run.wake < wake:
            return Claim(run, "early")  # its wake-up was sent just before the run was parked
        return Claim(run, "busy")

    def heartbeat(self, run_ids: Iterable[str], owner: str, lease_seconds: float) -> None:
        """Extend the leases this worker holds on its running runs."""
        ids = list(run_ids)
        if not ids:
            return
        now = utcnow()
        with self.session() as s:
            s.execute(update(Run).where(Run.id.in_(ids), Run.status == "running",
                                        Run.lease_owner == owner)
                      .values(lease_until=now + timedelta(seconds=lease_seconds)))
            s.commit()

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run: ``succeeded``, ``failed``, ``dead`` or ``skipped``."""
        now = utcnow()
        self._update_run(run_id, status=status, error=_text(error), finished_at=now,
                         lease_until=None, lease_owner=None, wake_at=None, updated_at=now)

    def release_for_retry(self, run_id: str, error: str) -> None:
        """An attempt failed and dramatiq will retry it: back to ``pending`` with the error."""
        self._update_run(run_id, status="pending", error=_text(error),
                         lease_until=None, lease_owner=None)

    def suspend(self, run_id: str, *, wake: int, wake_at: datetime, deadline: datetime | None,
                waiting_for: str, state: dict) -> None:
        """Park a run as ``waiting`` until ``wake_at``, answering only wake-up ``wake``."""
        with self.session() as s:
            run = s.get(Run, run_id)
            run.wake = wake
            run.status = "waiting"
            run.wake_at = wake_at
            run.deadline = deadline
            run.waiting_for = _text(waiting_for)
            run.state = _json(state)
            run.lease_until = run.lease_owner = None
            run.updated_at = utcnow()
            s.add(run)
            s.commit()

    def requeue(self, run_id: str) -> None:
        """A dead run replayed from the dead-letter queue may run again."""
        self._update_run(run_id, status="pending", finished_at=None, lease_until=None, lease_owner=None)

    def set_progress(self, run_id: str, done: int, total: int | None, note: str | None) -> None:
        self._update_run(run_id, progress_done=done, progress_total=total, progress_note=_text(note))

    # -- steps -----------------------------------------------------------------------

    def start_step(self, run_id: str, attempt: int, name: str, target: str | None) -> int:
        with self.session() as s:
            step = Step(run_id=run_id, attempt=attempt, name=name, target=target,
                        status="running", started_at=utcnow())
            s.add(step)
            s.commit()
            return step.id

    def finish_step(self, step_id: int, status: str, detail: dict | None = None,
                    error: str | None = None) -> None:
        with self.session() as s:
            step = s.get(Step, step_id)
            step.status = status
            step.finished_at = utcnow()
            step.detail = _json(detail or {})
            step.error = _text(error)
            s.add(step)
            s.commit()
