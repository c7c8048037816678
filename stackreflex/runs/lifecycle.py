"""The life of a run in this process: claim, execute, then succeed, fail, retry, wait or be
cancelled; the one place each transition is decided and recorded.

>>> execution = lifecycle.begin(handler, policy, body, wake=0)   # a ClaimRefusal if not now
>>> lifecycle.call(execution)                                     # the handler, in the actor
>>> lifecycle.end(execution, exception, retry=...)                # what the audit log says happened

A wait sends its wake-up message first and parks the run second: a worker dying in between
leaves the run running under a lease that lapses, and its redelivered message takes it over;
a wake-up that arrives before its run is parked is sent again a moment later. (Parking first
would leave a waiting run with no message until a reconciler noticed.) Long waits hop in segments of at most :data:`MAX_DELAY_HOP`, because the broker holds a
delayed message unacknowledged and RabbitMQ closes consumers that hold one past
``consumer_timeout`` (30 minutes by default).
"""

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..core import metrics
from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.envelope import Envelope
from ..core.errors import DatabaseUnavailable, HandlerFailed
from ..core.records import ClaimRefusal, RunRecord, RunStatus
from ..core.registry import Handler
from ..models.audit import AuditLog
from .execution import Cancelled, Execution, Failed, Skipped, Succeeded, Suspended
from .policy import RetryPolicy
from .waits import LeaseLost, RunCancelled, Suspend

log = logging.getLogger("stackreflex.run")

#: Longest single delay of a wake-up message (seconds); longer waits take several hops.
MAX_DELAY_HOP = 300.0
#: Extra wait after another execution's lease would lapse before trying its run again (seconds).
LEASE_SLACK = 0.5
#: Delay before a wake-up that overtook the parking of its run tries again (seconds).
EARLY_RETRY = 1.0

#: ``dispatch(handler, body, wake, delay_seconds)``: send a handler's message (``delay`` None: now).
Dispatch = Callable[[str, dict[str, Any], int, float | None], None]


class Lifecycle:
    """Runs executions of the handlers this process serves.

    ``context_factory(execution)`` makes what the handler is handed (a
    :class:`~stackreflex.handlers.context.RunContext`); ``notify(envelope)`` sends run notices
    to whoever follows the envelope (``--wait``), when ``announces(envelope)`` says so.
    """

    def __init__(
        self,
        *,
        audit: AuditLog,
        owner: str,
        lease_seconds: float,
        dispatch: Dispatch,
        context_factory: Callable[[Execution], Any],
        notify: Callable[[Envelope], None],
        announces: Callable[[Envelope], bool],
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.audit, self.owner, self.lease_seconds = audit, owner, lease_seconds
        self.dispatch, self.context_factory = dispatch, context_factory
        self.notify, self.announces, self.clock = notify, announces, clock
        #: set when the process stops: executions park at their next wait instead of waiting in place
        self.stopping = threading.Event()
        self._active: dict[str, Execution] = {}
        self._lock = threading.Lock()

    # -- one execution --------------------------------------------------------------------

    def begin(self, handler: Any, policy: RetryPolicy, body: dict[str, Any], wake: int) -> Execution | ClaimRefusal:
        """Claim the run of (``body``'s envelope, ``handler``) for an execution answering wake-up
        ``wake``, or say why this message may not run it now."""
        envelope = Envelope.model_validate(body)
        token = f"{self.owner}/{secrets.token_hex(4)}"
        claim = self.audit.claim(envelope.id, handler.name, wake=wake, token=token, lease_seconds=self.lease_seconds)
        if claim.refused is not None:  # not granted
            self._refused(handler, envelope, body, wake, claim.refused, claim.run)
            return claim.refused
        run = claim.run
        assert run is not None  # a granted claim holds its run
        waiting = self.audit.waiting_steps(run.id) if run.wake else []
        execution = Execution(
            run=run,
            envelope=envelope,
            body=body,
            handler=handler,
            policy=policy,
            token=token,
            audit=self.audit,
            clock=self.clock,
            stopping=self.stopping,
            waiting_steps=waiting,
            moved_on=self._wake_publisher,
        )
        with self._lock:
            self._active[run.id] = execution
        metrics.RUNS_STARTED.labels(handler.name).inc()
        log.info(
            "run started: %s for %s %s (attempt %d%s)",
            handler.name,
            envelope.type,
            envelope.subject or "",
            run.attempts,
            f", wake {run.wakes}" if run.wakes else "",
            extra={"run_id": run.id, "handler": handler.name, "envelope_id": envelope.id},
        )
        return execution

    def refuse(self, handler: str, raw: bytes, body: Any) -> None:
        """A message to ``handler`` that this installation did not send (its HMAC is missing or
        wrong: published straight to the handler's queue, or altered): recorded, never run."""
        envelope_id = body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None
        reason = (
            f"a message to handler {handler} was refused: it is not authenticated as sent by this "
            "installation's router (published straight to the handler's queue, or altered)"
        )
        try:
            self.audit.record_rejection(raw, f"dispatch:{handler}", reason, envelope_id=envelope_id)
        except Exception as exc:
            log.error("could not record a refused message to %s: %s", handler, exc)
        metrics.ENVELOPES_REJECTED.labels(metrics.type_label(f"dispatch:{handler}"), "unauthenticated_dispatch").inc()
        log.warning("%s (envelope %s)", reason, envelope_id, extra={"handler": handler, "envelope_id": envelope_id})

    def _refused(
        self,
        handler: Handler,
        envelope: Envelope,
        body: dict[str, Any],
        wake: int,
        why: ClaimRefusal,
        run: RunRecord | None,
    ) -> None:
        """Log why this message does not run its run, and send the message again where it is
        still the run's way forward."""
        if why is ClaimRefusal.MISSING:
            log.warning(
                "no run exists for a message to %s about envelope %s: only the router creates runs; "
                "the message is dropped",
                handler.name,
                envelope.id,
                extra={"handler": handler.name},
            )
            return
        assert run is not None  # only a missing run has none
        if why is ClaimRefusal.NOT_DUE:  # a long wait's next hop
            self._send(handler.name, body, wake, _until(run.wake_at, self.clock, MAX_DELAY_HOP), run.id)
            return
        if why is ClaimRefusal.BUSY:
            # A redelivered message (its worker's connection broke): if that worker died, this
            # message is what takes the run over once the lease lapses; if it lives, a skip then.
            self._send(
                handler.name, body, wake, _until(run.lease_until, self.clock, MAX_DELAY_HOP) + LEASE_SLACK, run.id
            )
        elif why is ClaimRefusal.AHEAD:  # sent just before its run was parked
            self._send(handler.name, body, wake, EARLY_RETRY, run.id)
        level = logging.DEBUG if why is ClaimRefusal.STALE else logging.INFO
        log.log(
            level,
            "run %s of %s not started by this message: %s (%s)",
            run.id,
            handler.name,
            why.value,
            run.status.value,
            extra={"run_id": run.id, "handler": handler.name},
        )

    def call(self, execution: Execution) -> None:
        """Run the handler (or, for a cancel, its compensation); the outcome is kept on the
        execution for :meth:`end`. Any other exception goes to dramatiq's retries."""
        ctx = self.context_factory(execution)
        try:
            if execution.cancel_reason is not None:
                execution.outcome = self._compensate(execution, ctx)
                return
            declined = _declined(execution)
            if declined:
                execution.outcome = Skipped(declined)
                return
            execution.handler.fn(execution.envelope, ctx)
            execution.outcome = Succeeded()
        except Suspend as wait:
            execution.outcome = Suspended(wait)
        except HandlerFailed as exc:
            execution.outcome = Failed(str(exc))
        except RunCancelled:
            execution.outcome = self._compensate(execution, ctx)
        except LeaseLost:
            execution.lost = True

    def _compensate(self, execution: Execution, ctx: Any) -> Cancelled | Suspended | None:
        """A cancel: the handler's compensation undoes what can be undone and says what is left."""
        execution.compensating = True
        handler, reason = execution.handler, execution.cancel_reason
        compensate = getattr(handler, "compensate", None)
        failure = None
        try:
            summary = compensate(execution.envelope, ctx, reason) if compensate else None
            summary = summary or _no_compensation(execution)
        except Suspend as wait:
            return Suspended(wait)  # the compensation waits too; it goes on when the run wakes
        except LeaseLost:
            execution.lost = True
            return None
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            summary = f"its compensation failed ({failure}); what the run had done stays as it is"
        execution.record_step(
            "cancel",
            target=execution.envelope.subject,
            started_at=self.clock.now(),
            finished_at=None,
            status="failed" if failure else "succeeded",
            detail={"reason": reason, "left": summary},
            error=failure,
        )
        return Cancelled(summary)

    def may_retry(self, execution: Execution) -> bool:
        """dramatiq's ``retry_when``: another execution, by the run's budget."""
        return not execution.lost and execution.policy.may_retry(execution.run)

    def end(self, execution: Execution, exception: BaseException | None, *, retry: bool, retries: int = 0) -> None:
        """Record how the execution ended (``retries``: the message's retries before this one)."""
        with self._lock:
            self._active.pop(execution.run.id, None)
        try:
            if execution.lost or isinstance(exception, LeaseLost) or (exception is None and execution.outcome is None):
                log.warning(
                    "run %s: another execution took it over; this one's outcome is not recorded",
                    execution.label,
                    extra={"run_id": execution.run.id},
                )
            elif exception is not None:
                self._failed(execution, exception, retry, retries)
            elif isinstance(execution.outcome, Suspended):
                self._suspend(execution, execution.outcome.wait)
            elif isinstance(execution.outcome, Succeeded):
                self._finish(execution, RunStatus.SUCCEEDED, None)
            elif isinstance(execution.outcome, Failed):
                self._finish(execution, RunStatus.FAILED, execution.outcome.reason)
            elif isinstance(execution.outcome, Skipped):
                self._finish(execution, RunStatus.SKIPPED, execution.outcome.reason)
            else:
                assert isinstance(execution.outcome, Cancelled)  # the outcomes left
                self._finish(
                    execution, RunStatus.CANCELLED, f"cancelled: {execution.cancel_reason}; {execution.outcome.summary}"
                )
        except DatabaseUnavailable as exc:
            log.error(
                "could not record how run %s ended: %s; it stays as it was until a reconciler takes it "
                "over once its lease lapses",
                execution.label,
                exc,
                extra={"run_id": execution.run.id},
            )

    def _failed(self, execution: Execution, exception: BaseException, retry: bool, retries: int) -> None:
        run, error = execution.run, f"{type(exception).__name__}: {exception}"
        if not retry:
            self._finish(execution, RunStatus.DEAD, f"{error} (no retries left after {run.attempts} attempt(s))")
            return
        within = execution.policy.retry_due_within(retries)
        if not self.audit.release_for_retry(
            run.id, execution.token, error, self.clock.now() + timedelta(seconds=within)
        ):
            return self._lost(execution)
        log.warning(
            "run %s failed (attempt %d); retrying within %.1fs: %s",
            run.handler,
            run.attempts,
            within,
            error,
            extra={"run_id": run.id, "handler": run.handler},
        )

    def _suspend(self, execution: Execution, wait: Suspend) -> None:
        run = execution.run
        wake_at = self.clock.now() + timedelta(seconds=wait.after)
        self._send(run.handler, execution.body, run.wake + 1, min(wait.after, MAX_DELAY_HOP), run.id)
        if not self.audit.suspend(
            run.id,
            execution.token,
            wake=run.wake + 1,
            wake_at=wake_at,
            deadline=wait.deadline,
            wait_key=wait.key[:255],
            waiting_for=wait.waiting_for,
            state=execution.state,
        ):
            return self._lost(execution)
        self._announce(execution, "run.progress", RunStatus.WAITING, note=f"waiting for {wait.waiting_for}")
        log.info(
            "run waiting: %s for %s, re-check in %.1fs",
            run.handler,
            wait.waiting_for,
            wait.after,
            extra={"run_id": run.id, "handler": run.handler},
        )
        self._wake_publisher(execution)

    def _finish(self, execution: Execution, status: RunStatus, error: str | None) -> None:
        run = execution.run
        leftover = (
            f"the run ended {status.value} without coming back to this step" if execution.unfinished_steps else None
        )
        if not self.audit.finish(run.id, execution.token, status, error, close_steps=leftover):
            return self._lost(execution)
        metrics.count_finished(run.handler, status.value, run.created_at, self.clock.now())
        self._announce(execution, "run.finished", status, error=error)
        self._wake_publisher(execution)
        level = (
            logging.INFO if status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.SKIPPED) else logging.ERROR
        )
        log.log(
            level,
            "run %s: %s%s",
            status.value,
            run.handler,
            f": {error}" if error else "",
            extra={"run_id": run.id, "handler": run.handler, "status": status.value},
        )

    def _wake_publisher(self, execution: Execution) -> None:
        """This run moved on (it saved progress, waits or ended): the run that published its
        envelope, if it is waiting, looks again now instead of at its next timed look."""
        cause = execution.envelope.causationid
        if not cause:
            return
        try:
            for run in self.audit.wake_publisher(cause):
                body = self.audit.kept_envelope(run.envelope_id)
                if body is not None:  # else its timed look comes as planned
                    self._send(run.handler, body, run.wake, None, run.id)
        except Exception as exc:
            log.warning("could not wake the run that published %s: %s", execution.envelope.id, exc)

    def _lost(self, execution: Execution) -> None:
        execution.lost = True
        log.warning(
            "run %s: another execution took it over before this one could record its end",
            execution.label,
            extra={"run_id": execution.run.id},
        )

    def _send(self, handler: str, body: dict[str, Any], wake: int, delay: float | None, run_id: str) -> None:
        try:
            self.dispatch(handler, body, wake, delay)
        except Exception as exc:
            log.warning(
                "could not send run %s its next message (%s); a reconciler sends it once it is overdue",
                run_id,
                exc,
                extra={"run_id": run_id},
            )

    def _announce(self, execution: Execution, type: str, status: RunStatus, **data: Any) -> None:
        if not self.announces(execution.envelope):
            return
        run = execution.run
        try:
            self.notify(
                Envelope.new(
                    type,
                    subject=execution.envelope.subject,
                    cause=execution.envelope,
                    data={
                        "run_id": run.id,
                        "handler": run.handler,
                        "envelope_id": execution.envelope.id,
                        "status": status.value,
                        "attempts": run.attempts,
                        **data,
                    },
                )
            )
        except Exception as exc:
            log.warning("could not publish %s: %s", type, exc)

    # -- what every execution of this process shares ---------------------------------------

    def active(self) -> list[Execution]:
        with self._lock:
            return list(self._active.values())

    def heartbeat(self) -> None:
        """Extend the leases of this process's executions; tell each whether it still holds its
        run and whether a cancel was asked for."""
        executions = {e.run.id: e for e in self.active()}
        fences = self.audit.heartbeat({run_id: e.token for run_id, e in executions.items()}, self.lease_seconds)
        for run_id, fence in fences.items():
            execution = executions[run_id]
            if not fence.held:
                execution.lost = True
            elif fence.cancel_reason and execution.cancel_reason is None:
                execution.cancel_reason = fence.cancel_reason


def _until(moment: datetime | None, clock: Clock, longest: float) -> float:
    """Seconds from now until ``moment`` (none if it passed or is unknown), at most ``longest``."""
    return min(max((moment - clock.now()).total_seconds(), 0.0), longest) if moment is not None else 0.0


def _declined(execution: Execution) -> str | None:
    """Why the handler's predicate declines the envelope, on a run's first execution: a router
    in a process that does not load the handler routes it by its patterns alone."""
    run, when = execution.run, getattr(execution.handler, "when", None)
    if when is None or run.attempts != 1 or run.wakes:
        return None
    try:
        if when(execution.envelope):
            return None
    except Exception as exc:
        return f"the predicate of {run.handler} failed on this envelope: {type(exc).__name__}: {exc}"
    return f"the predicate of {run.handler} ({getattr(when, '__name__', 'when')}) declined this envelope"


def _no_compensation(execution: Execution) -> str:
    run = execution.run
    where = run.progress_note or (f"waiting for {run.waiting_for}" if run.waiting_for else None)
    return f"{run.handler} undoes nothing when cancelled; what it had done stays as it is" + (
        f" (it was at: {where})" if where else ""
    )
