"""RunContext: what a handler may use, and nothing else."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from ..core import metrics
from ..core.clock import Clock
from ..core.envelope import Envelope
from ..core.errors import HandlerFailed
from ..core.records import RunRecord, StepStatus
from ..core.settings import Settings
from ..runs.execution import Execution
from ..runs.waits import call_site_key

if TYPE_CHECKING:
    import paramiko
    from openstack.connection import Connection

log = logging.getLogger("stackreflex.run")


class _StoppingClock(Clock):
    """The execution's clock, whose sleep ends early when the process is stopping (the handler
    then parks at its next wait instead of waiting in place)."""

    def __init__(self, clock: Clock, stopping: threading.Event) -> None:
        self._clock, self._stopping = clock, stopping

    def now(self) -> datetime:
        return self._clock.now()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def stopped(self) -> bool:
        return self._stopping.is_set()

    def sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        if not self._stopping.is_set():
            self._clock.sleep(seconds, until=self._stopping)


class RunContext:
    """Handed to a handler for one execution of one run.

    ``ctx.state`` is a dict saved across continuations (it is redacted like every
    audit value: keep secrets out of it and read them again when needed).
    """

    def __init__(
        self,
        execution: Execution,
        *,
        publish: Callable[..., None],
        notify: Callable[[Envelope], None],
        cloud_factory: Callable[[], Connection],
        ssh_factory: Callable[..., paramiko.SSHClient],
        settings: Settings,
    ) -> None:
        self._execution = execution
        #: The process's settings (inventory, agent layout, SSH options…), read-only.
        self.settings = settings
        self.envelope = execution.envelope
        #: Time as the run sees it: ``ctx.clock.now()`` (UTC), ``ctx.clock.monotonic()``.
        self.clock: Clock = _StoppingClock(execution.clock, execution.stopping)
        self._publish = publish
        self._notify = notify
        self._cloud_factory = cloud_factory
        self._ssh_factory = ssh_factory

    @property
    def state(self) -> dict[str, Any]:
        return self._execution.state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._execution.state = value

    @property
    def run(self) -> RunRecord:
        return self._execution.run

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def attempt(self) -> int:
        """This execution's attempt: 1 unless an earlier execution failed."""
        return self.run.attempts

    @property
    def wakes(self) -> int:
        """How many times this run has been woken after waiting."""
        return self.run.wakes

    @property
    def stopping(self) -> bool:
        """The process is stopping: wait no longer in place (``ctx.wait`` parks at once)."""
        return self._execution.stopping.is_set()

    def sleep(self, seconds: float) -> None:
        """Pause in place, briefly; returns early when the process is stopping."""
        self.clock.sleep(seconds)

    @contextmanager
    def step(self, name: str, target: str | None = None) -> Iterator[dict[str, Any]]:
        """Record a step; fill the yielded dict with details (request ids, exit codes…).

        A wait inside a step leaves it ``waiting``; when the run wakes and comes back to the
        step (same name and target), the step goes on and ends with its true outcome.

        >>> with ctx.step("disable nova-compute", target="compute-0") as detail:
        ...     detail["request_id"] = "req-…"
        """
        execution = self._execution
        step_id, detail = execution.start_step(name, target)
        started = time.monotonic()
        try:
            yield detail
        except BaseException as exc:
            status = execution.end_step(step_id, detail, exc)
            if status is StepStatus.FAILED:
                metrics.STEP_DURATION.labels(self.run.handler).observe(time.monotonic() - started)
            if status is not None:
                log.info(
                    "step %s: %s target=%s%s",
                    status.value,
                    name,
                    target,
                    "" if status is StepStatus.WAITING else f" error={exc}",
                    extra={"run_id": self.run.id, "step": name, "target": target},
                )
            raise
        execution.end_step(step_id, detail, None)
        metrics.STEP_DURATION.labels(self.run.handler).observe(time.monotonic() - started)
        log.info(
            "step succeeded: %s target=%s in %.3fs",
            name,
            target,
            time.monotonic() - started,
            extra={"run_id": self.run.id, "step": name, "target": target},
        )

    def record(
        self,
        name: str,
        *,
        target: str | None = None,
        started_at: datetime,
        finished_at: datetime | None = None,
        status: str = "succeeded",
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Record a step that began before this execution (``started_at``, UTC) and is over
        (at ``finished_at``, default now)."""
        self._execution.record_step(
            name,
            target=target,
            started_at=started_at,
            finished_at=finished_at,
            status=status,
            detail=detail,
            error=error,
        )
        self._log_step(status, name, target)

    def _log_step(self, status: str, name: str, target: str | None) -> None:
        log.info(
            "step %s: %s target=%s", status, name, target, extra={"run_id": self.run.id, "step": name, "target": target}
        )

    def checkpoint(self, steps: Sequence[dict[str, Any]] = ()) -> None:
        """Save ``ctx.state`` now, before an action that must not be repeated if this worker dies,
        with the steps (as :meth:`record` takes them) that the state now accounts for.

        If the run was cancelled meanwhile, it stops here (after saving)."""
        self._execution.checkpoint(list(steps))
        for step in steps:
            self._log_step(step.get("status", "succeeded"), step["name"], step.get("target"))

    def others_running(self) -> list[RunRecord]:
        """Unfinished runs of this handler about the same subject that began before this one."""
        audit = self._execution.audit
        rows = audit.active_runs(self.run.handler, self.envelope.subject) if self.envelope.subject else []
        mine = next((i for i, r in enumerate(rows) if r.id == self.run.id), len(rows))
        return rows[:mine]

    def progress(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """Record progress and tell whoever follows the run (``--wait``)."""
        self._execution.progress(done, total, note)
        self._notify(self._event("run.progress", status="running", done=done, total=total, note=note))

    def publish(self, type: str, *, subject: str | None = None, data: Any = None, key: str | None = None) -> Envelope:
        """Publish an envelope caused by this run's envelope (same correlation id).

        With ``key``, the envelope's id is derived from this envelope and the key, so a
        retried or re-checked handler publishing the same thing again is absorbed as a
        duplicate. It is signed on the way out when a signing key is configured.
        """
        attributes = {"id": str(uuid.uuid5(uuid.UUID(self.envelope.id), key))} if key else {}
        envelope = Envelope.new(type, subject=subject, data=data, cause=self.envelope, **attributes)
        self._publish(envelope)
        return envelope

    def outcomes(self, envelope_ids: list[str]) -> dict[str, list[RunRecord]]:
        """The runs (read-only records: handler, status, error…) of envelopes this handler published."""
        return self._execution.audit.outcomes(envelope_ids)

    def cancel_run(self, run_id: str, reason: str) -> None:
        """Ask for a run caused by this run's envelope (same correlation) to be cancelled: it
        stops at its next safe point, and its handler's compensation runs."""
        audit = self._execution.audit
        run = audit.get_run(run_id)
        if run is None or run.correlation_id != self.run.correlation_id:
            raise HandlerFailed(f"run {run_id} was not caused by this run's envelope: it is not this run's to cancel")
        audit.request_cancel(run_id, reason)

    def recheck(self, after: float, *, waiting_for: str, key: str | None = None, deadline: float = 3600.0) -> NoReturn:
        """End this execution and run the handler again in ``after`` seconds, holding no message.

        ``deadline`` (seconds) counts from the first of consecutive waits with the same ``key``
        (default: where this is called from); past it the run fails with
        :class:`~stackreflex.core.errors.WaitTimedOut`. ``waiting_for`` is what operators are shown.
        """
        key = key or call_site_key()
        execution = self._execution
        execution.suspend(after, waiting_for=waiting_for, key=key, give_up_at=execution.give_up_at(key, deadline))

    def wait(
        self,
        check: Callable[[], Any],
        *,
        waiting_for: str,
        key: str | None = None,
        deadline: float = 3600.0,
        inline: float = 5.0,
        every: float = 0.25,
        recheck_after: float = 2.0,
    ) -> Any:
        """Call ``check`` every ``every`` seconds for up to ``inline`` seconds; if it is still not
        true, :meth:`recheck` later (holding no message). Returns ``check``'s true answer."""
        key = key or call_site_key()
        execution, clock = self._execution, self.clock
        give_up_at = execution.give_up_at(key, deadline)
        left = (give_up_at - clock.now()).total_seconds()
        give_up_inline = clock.monotonic() + min(inline, max(left, 0.0))
        while True:
            execution.safe_point()
            answer = check()
            if answer:
                execution.satisfied(key)
                return answer
            if self.stopping or clock.monotonic() + every > give_up_inline:
                execution.suspend(recheck_after, waiting_for=waiting_for, key=key, give_up_at=give_up_at)
            clock.sleep(every)

    def fail(self, reason: str) -> NoReturn:
        """End the run ``failed`` with ``reason``; no retry."""
        raise HandlerFailed(reason)

    @cached_property
    def cloud(self) -> Connection:
        """An openstacksdk connection, created on first use."""
        return self._cloud_factory()

    def ssh(self, host: str, **options: Any) -> paramiko.SSHClient:
        """An SSH session to ``host`` with the configured user, key and known_hosts."""
        return self._ssh_factory(host, **options)

    def _event(self, type: str, **data: Any) -> Envelope:
        return Envelope.new(
            type,
            subject=self.envelope.subject,
            cause=self.envelope,
            data={"run_id": self.run.id, "handler": self.run.handler, "envelope_id": self.envelope.id, **data},
        )
