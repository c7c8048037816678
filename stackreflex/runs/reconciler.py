"""Nothing orphaned: runs that no live message or lease accounts for are sent a message again.

A run may be left with nothing to move it on: its worker died (its lease lapses), the process
that parked it exited before sending its wake-up (embedded mode, Ctrl-C), its message went to
a dead-letter queue while the database was unreachable. Every process that serves handlers
looks, at start and then periodically, for runs of its handlers that are overdue by more
than a grace period, and sends each one message. Sending one too many is harmless: a claim
takes a run only once per wake-up, so a second message is skipped.

A run is re-dispatched from its envelope as the audit log holds it. When redaction masked
part of that envelope (a secret in its data), it cannot be handed to the handler again:
such a run is reported, to be published anew.
"""

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.records import RunRecord, RunStatus
from ..models.audit import AuditLog
from .lifecycle import Dispatch

log = logging.getLogger("stackreflex.run")

#: Most runs looked at in one pass.
BATCH = 500


class Reconciler:
    """Re-dispatches the overdue runs of ``handlers`` that act on ``cloud``."""

    def __init__(
        self,
        audit: AuditLog,
        dispatch: Dispatch,
        handlers: Iterable[str],
        *,
        grace: float,
        cloud: str | None,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.audit, self.dispatch, self.handlers = audit, dispatch, sorted(handlers)
        self.grace, self.cloud, self.clock = grace, cloud, clock
        #: every run this reconciler sent on, so a short-lived process can say which it took up
        self.taken_up: set[str] = set()

    def once(self) -> list[RunRecord]:
        """One pass; returns the runs sent a message. Right after a database outage it waits a
        grace first: the messages held up by the outage are live, and flow again."""
        if not self.audit.settled(self.grace):
            return []
        cutoff = self.clock.now() - timedelta(seconds=self.grace)
        sent = []
        for run in self.audit.overdue_runs(self.handlers, cutoff, self.cloud, BATCH):
            if not self.audit.mark_redispatched(run, cutoff):
                continue  # it moved meanwhile, or another process took it
            body = self.audit.kept_envelope(run.envelope_id)
            if body is None:
                log.warning(
                    "run %s of %s is %s with nothing to move it on, and cannot be re-dispatched: its "
                    "envelope %s carried secrets, which the audit log does not keep; publish it again, or "
                    "end it with `stackreflex runs cancel %s --reason TEXT --no-compensation`",
                    run.id,
                    run.handler,
                    run.status.value,
                    run.envelope_id,
                    run.id,
                    extra={"run_id": run.id, "handler": run.handler},
                )
                continue
            self.dispatch(run.handler, body, run.wake, None)
            log.warning(
                "re-dispatched run %s of %s: %s",
                run.id,
                run.handler,
                why_overdue(run),
                extra={"run_id": run.id, "handler": run.handler},
            )
            sent.append(run)
            self.taken_up.add(run.id)
        return sent


def why_overdue(run: RunRecord) -> str:
    """What left ``run`` with nothing to move it on, as an operator would put it."""
    if run.cancel_reason is not None:
        return "a cancel was asked for, and nothing took it up"
    if run.status is RunStatus.RUNNING:
        return f"its lease lapsed at {_clock_time(run.lease_until)} (its worker stopped)"
    if run.status is RunStatus.WAITING:
        return f"its wake-up was due at {_clock_time(run.wake_at)} and none came"
    if run.attempts == 0:
        return "it never started"
    return f"its retry was due by {_clock_time(run.wake_at)} and none came"


def _clock_time(moment: datetime | None) -> str:
    return f"{moment:%H:%M:%SZ}" if moment is not None else "an unknown time"
