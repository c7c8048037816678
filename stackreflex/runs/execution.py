"""One execution of one run: the claimed run, its handler's state, and everything the handler
records, written under the execution's lease.

The handler sees this through its :class:`~stackreflex.handlers.context.RunContext`. Every
write that changes the run names the lease token, so an execution whose lease lapsed (its
worker stalled) and was taken over learns it at its next write and stops (:class:`LeaseLost`)
instead of acting beside the new one. A cancel asked for meanwhile is noticed the same way
and raised at the next safe point: a step's start, a checkpoint, a wait.
"""

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from ..core.clock import Clock
from ..core.envelope import Envelope
from ..core.errors import WaitTimedOut
from ..core.records import Fence, RunRecord, StepStatus
from ..models.audit import AuditLog, WaitingStep
from .policy import RetryPolicy
from .waits import LeaseLost, RunCancelled, Suspend

log = logging.getLogger("stackreflex.run")


@dataclass(frozen=True)
class Succeeded:
    pass


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class Skipped:
    """Its handler's predicate declined the envelope (checked where the handler is served)."""

    reason: str


@dataclass(frozen=True)
class Suspended:
    wait: Suspend


@dataclass(frozen=True)
class Cancelled:
    #: what the compensation did, or what it left as it was
    summary: str


Outcome = Succeeded | Failed | Skipped | Suspended | Cancelled


class Execution:
    """A run claimed for one execution of ``handler`` under the lease ``token``."""

    def __init__(
        self,
        *,
        run: RunRecord,
        envelope: Envelope,
        body: dict[str, Any],
        handler: Any,
        policy: RetryPolicy,
        token: str,
        audit: AuditLog,
        clock: Clock,
        stopping: threading.Event,
        waiting_steps: Sequence[WaitingStep] = (),
        moved_on: Callable[["Execution"], None] = lambda e: None,
    ):
        self.run, self.envelope, self.body = run, envelope, body
        #: called once the run saved progress (a checkpoint): whoever waits on it may look again
        self.moved_on = moved_on
        self.handler, self.policy, self.token = handler, policy, token
        self.audit, self.clock, self.stopping = audit, clock, stopping
        #: the handler's state, saved at checkpoints and when the run waits
        self.state: dict[str, Any] = json.loads(run.state or "{}")
        self.outcome: Outcome | None = None
        #: set from the run, a fenced write or a heartbeat: an operator asked for a cancel
        self.cancel_reason: str | None = run.cancel_reason
        #: the compensation of a cancel is running: cancels are not raised again
        self.compensating = False
        #: another execution took the run over
        self.lost = False
        self._waiting = {(s.name, s.target): s for s in waiting_steps}
        self._open: set[int] = set()
        self._satisfied: set[str] = set()

    @property
    def label(self) -> str:
        return f"{self.run.id} ({self.run.handler})"

    # -- the lease --------------------------------------------------------------------

    def fenced(self, fence: Fence) -> None:
        """Take in what a fenced write learnt; stop at once if the lease is lost."""
        if not fence.held:
            self.lost = True
            raise LeaseLost(f"run {self.label}: another execution took it over")
        if fence.cancel_reason and self.cancel_reason is None:
            self.cancel_reason = fence.cancel_reason

    def safe_point(self) -> None:
        """Where a handler may be stopped: a lost lease or a cancel asked for ends it here."""
        if self.lost:
            raise LeaseLost(f"run {self.label}: another execution took it over")
        if self.cancel_reason is not None and not self.compensating:
            raise RunCancelled(self.cancel_reason)

    # -- steps ------------------------------------------------------------------------

    def start_step(self, name: str, target: str | None) -> tuple[int, dict[str, Any]]:
        """A new step, or the one with this name and target the run suspended inside (it goes on,
        with the detail it had); returns its id and detail."""
        self.safe_point()
        waiting = self._waiting.pop((name, target), None)
        if waiting is not None:
            self.audit.resume_step(waiting.id)
            step_id, detail = waiting.id, dict(waiting.detail)
        else:
            step_id, detail = self.audit.start_step(self.run.id, self.run.attempts, name, target), {}
        self._open.add(step_id)
        return step_id, detail

    def end_step(self, step_id: int, detail: dict[str, Any], error: BaseException | None) -> StepStatus | None:
        """Record how a step ended: a wait leaves it ``waiting``, a cancel ``interrupted``."""
        self._open.discard(step_id)
        if error is None:
            self.audit.finish_step(step_id, StepStatus.SUCCEEDED, detail)
            return StepStatus.SUCCEEDED
        if isinstance(error, Suspend):
            self.audit.park_step(step_id, detail)
            return StepStatus.WAITING
        if isinstance(error, LeaseLost):
            return None  # the run is another execution's now
        if isinstance(error, RunCancelled):
            self.audit.finish_step(step_id, StepStatus.INTERRUPTED, detail, f"cancelled: {error.reason}")
            return StepStatus.INTERRUPTED
        self.audit.finish_step(step_id, StepStatus.FAILED, detail, f"{type(error).__name__}: {error}")
        return StepStatus.FAILED

    @property
    def unfinished_steps(self) -> bool:
        """Steps of this run left running or waiting (the run ends them when it ends)."""
        return bool(self._open or self._waiting)

    def record_step(
        self,
        name: str,
        *,
        target: str | None,
        started_at: datetime,
        finished_at: datetime | None,
        status: str,
        detail: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        self.audit.record_step(
            self.run.id,
            self.run.attempts,
            name,
            target,
            status=status,
            started_at=started_at,
            finished_at=finished_at,
            detail=detail,
            error=error,
        )

    def checkpoint(self, steps: Sequence[dict[str, Any]] = ()) -> None:
        """Save the state (with the steps it accounts for); a safe point afterwards."""
        self.fenced(
            self.audit.save_state(
                self.run.id, self.token, self.state, [{"attempt": self.run.attempts, **s} for s in steps]
            )
        )
        self.moved_on(self)
        self.safe_point()

    def progress(self, done: int, total: int | None, note: str | None) -> None:
        self.fenced(self.audit.set_progress(self.run.id, self.token, done, total, note))

    # -- waits ------------------------------------------------------------------------

    def give_up_at(self, key: str, seconds: float) -> datetime:
        """When a wait with ``key`` gives up: ``seconds`` after the first of consecutive waits with
        that key (kept in the run while it waits), or from now for a new wait."""
        if key == self.run.wait_key and self.run.deadline is not None and key not in self._satisfied:
            return self.run.deadline
        return self.clock.now() + timedelta(seconds=seconds)

    def satisfied(self, key: str) -> None:
        """The wait with ``key`` is over: a later wait with the same key starts a deadline anew."""
        self._satisfied.add(key)

    def suspend(self, after: float, *, waiting_for: str, key: str, give_up_at: datetime) -> NoReturn:
        if self.clock.now() >= give_up_at:
            raise WaitTimedOut(f"gave up waiting for {waiting_for}: deadline passed at {give_up_at:%Y-%m-%dT%H:%M:%SZ}")
        raise Suspend(max(after, 0.0), waiting_for, key, give_up_at)
