"""One attempt of one run: claim it, call the handler, record the outcome.

What happens next is for the task layer: nothing (finished or a duplicate), a retry
(the exception propagates to dramatiq's Retries), or a message sent again later
through ``resend(wake, delay)``: a continuation's wake-up, or a try once another
worker's lease on the run has lapsed.

A continuation's wake-up message is sent *before* the run is parked: if the worker
dies in between, the original message is redelivered and the run simply re-checks.
Long waits hop in segments of at most :data:`MAX_DELAY_HOP`, because the broker
holds a delayed message unacknowledged and RabbitMQ closes consumers that hold one
past ``consumer_timeout`` (30 minutes by default).
"""

import json
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from ..bus.envelope import Envelope
from ..clock import utcnow
from ..errors import HandlerFailed
from ..models.audit import AuditLog
from .context import RunContext, Suspend
from .registry import Handler

log = logging.getLogger("stackreflex.run")

#: Extra wait after a foreign lease lapses before trying the run again (seconds).
LEASE_SLACK = 0.5
#: Longest single delay of a wake-up message (seconds); longer waits take several hops.
MAX_DELAY_HOP = 300.0
#: Retry delay for a wake-up that arrived before its run was parked (seconds).
EARLY_RETRY = 0.2

Resend = Callable[[int, float], None]


class ActiveRuns:
    """The runs this worker process is executing; their leases are kept alive by heartbeats."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, run_id: str) -> None:
        with self._lock:
            self._ids.add(run_id)

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._ids.discard(run_id)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._ids)


@dataclass
class Services:
    """What executing a run needs from the process around it."""

    audit: AuditLog
    #: ``publish(envelope, mandatory=True)``: confirmed, and unroutable is an error
    publish: Callable[..., None]
    #: ``notify(envelope)``: advisory notices, fire and forget
    notify: Callable[[Envelope], None]
    owner: str
    lease_seconds: float
    active: ActiveRuns
    cloud_factory: Callable[[], Any]
    ssh_factory: Callable[..., Any]
    settings: Any = None


def execute(handler: Handler, body: dict, wake: int, services: Services, *,
            final_attempt: bool, resend: Resend) -> None:
    """Run one attempt of ``handler`` for the envelope ``body`` (or wake-up ``wake`` of it)."""
    envelope = Envelope.model_validate(body)
    audit = services.audit
    parked = audit.find_run(envelope.id, handler.name) if wake else None
    if parked is not None and parked.status == "waiting" and parked.wake == wake:
        remaining = (parked.wake_at - utcnow()).total_seconds()
        if remaining > 0:
            resend(wake, min(remaining, MAX_DELAY_HOP))
            return
    claim = audit.claim(envelope.id, handler.name, wake=wake, owner=services.owner,
                        lease_seconds=services.lease_seconds)
    if claim.refused == "missing":
        audit.ensure_run(envelope, handler.name)
        claim = audit.claim(envelope.id, handler.name, wake=wake, owner=services.owner,
                            lease_seconds=services.lease_seconds)
    if not claim.granted:
        run = claim.run
        if claim.refused == "busy":
            resend(wake, max((run.lease_until - utcnow()).total_seconds(), 0) + LEASE_SLACK)
        elif claim.refused == "early":
            resend(wake, EARLY_RETRY)
        else:
            log.info("run %s of %s not started again: %s (%s)", run.id, handler.name, claim.refused,
                     run.status, extra={"run_id": run.id, "handler": handler.name})
        return

    run = claim.run
    announces = services.settings is None or services.settings.announces(envelope)
    ctx = RunContext(run=run, envelope=envelope, audit=audit, publish=services.publish,
                     notify=_notifier(services.notify) if announces else _unheard,
                     state=json.loads(run.state or "{}"), cloud_factory=services.cloud_factory,
                     ssh_factory=services.ssh_factory, settings=services.settings)
    services.active.add(run.id)
    log.info("run started: %s for %s %s (attempt %d)", handler.name, envelope.type, envelope.subject or "",
             run.attempts, extra={"run_id": run.id, "handler": handler.name, "envelope_id": envelope.id})
    try:
        handler.fn(envelope, ctx)
    except Suspend as wait:
        wake_at = utcnow() + timedelta(seconds=wait.after)
        resend(run.wake + 1, min(wait.after, MAX_DELAY_HOP))
        audit.suspend(run.id, wake=run.wake + 1, wake_at=wake_at, deadline=wait.deadline,
                      waiting_for=wait.waiting_for, state=ctx.state)
        _announce(ctx, "run.progress", "waiting", note=f"waiting for {wait.waiting_for}")
        log.info("run waiting: %s for %s, re-check in %.1fs", handler.name, wait.waiting_for, wait.after,
                 extra={"run_id": run.id, "handler": handler.name})
    except HandlerFailed as exc:
        _end(services, ctx, "failed", str(exc))
    except BaseException as exc:  # includes dramatiq's time-limit interrupt and worker shutdown
        error = f"{type(exc).__name__}: {exc}"
        if final_attempt:
            _end(services, ctx, "dead", f"{error} (no retries left after {run.attempts} attempts)")
        else:
            audit.release_for_retry(run.id, error)
            log.warning("run attempt failed, will retry: %s: %s", handler.name, error,
                        extra={"run_id": run.id, "handler": handler.name})
        raise
    else:
        _end(services, ctx, "succeeded", None)
    finally:
        services.active.discard(run.id)


def _end(services: Services, ctx: RunContext, status: str, error: str | None) -> None:
    services.audit.finish(ctx.run.id, status, error)
    _announce(ctx, "run.finished", status, error=error)
    level = logging.INFO if status == "succeeded" else logging.ERROR
    log.log(level, "run %s: %s%s", status, ctx.run.handler, f": {error}" if error else "",
            extra={"run_id": ctx.run.id, "handler": ctx.run.handler, "status": status})


def _announce(ctx: RunContext, type: str, status: str, **data) -> None:
    ctx._notify(ctx._event(type, status=status, attempts=ctx.run.attempts, **data))


def _unheard(envelope: Envelope) -> None:
    """The notices of a run nobody follows: not sent (see ``Settings.run_notices``)."""


def _notifier(notify: Callable[[Envelope], None]) -> Callable[[Envelope], None]:
    """Progress notices must never fail a run: log and go on."""

    def send(envelope: Envelope) -> None:
        try:
            notify(envelope)
        except Exception as exc:
            log.warning("could not publish %s: %s", envelope.type, exc)

    return send
