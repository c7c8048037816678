"""RunContext: what a handler may use, and nothing else."""

import logging
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from functools import cached_property
from typing import Any, Callable, Iterator, NoReturn

from ..bus.envelope import Envelope
from ..bus.signing import needs_signature, sign
from ..clock import utcnow
from ..errors import HandlerFailed, WaitTimedOut
from ..models.audit import AuditLog, RunRow

log = logging.getLogger("stackreflex.run")


class Suspend(Exception):
    """Raised by :meth:`RunContext.recheck`: park the run and re-check later (not an error)."""

    def __init__(self, after: float, waiting_for: str, deadline):
        super().__init__(waiting_for)
        self.after, self.waiting_for, self.deadline = after, waiting_for, deadline


class RunContext:
    """Handed to a handler for one attempt of one run.

    ``ctx.state`` is a dict saved across continuations (it is redacted like every
    audit value: keep secrets out of it and read them again when needed).
    """

    def __init__(self, *, run: RunRow, envelope: Envelope, audit: AuditLog,
                 publish: Callable[..., None], notify: Callable[[Envelope], None], state: dict,
                 cloud_factory: Callable[[], Any], ssh_factory: Callable[..., Any], settings=None):
        self.run = run
        #: The process's settings (inventory, agent layout, SSH options…), read-only.
        self.settings = settings
        self.envelope = envelope
        self.state = state
        self._audit = audit
        self._publish = publish
        self._notify = notify
        self._cloud_factory = cloud_factory
        self._ssh_factory = ssh_factory

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def attempt(self) -> int:
        return self.run.attempts

    @contextmanager
    def step(self, name: str, target: str | None = None) -> Iterator[dict]:
        """Record a step; fill the yielded dict with details (request ids, exit codes…).

        >>> with ctx.step("disable nova-compute", target="compute-0") as detail:
        ...     detail["request_id"] = "req-…"
        """
        detail: dict = {}
        step_id = self._audit.start_step(self.run.id, self.run.attempts, name, target)
        started = time.monotonic()
        try:
            yield detail
        except BaseException as exc:
            self._audit.finish_step(step_id, "failed", detail, f"{type(exc).__name__}: {exc}")
            log.info("step failed: %s target=%s error=%s", name, target, exc,
                     extra={"run_id": self.run.id, "step": name, "target": target})
            raise
        self._audit.finish_step(step_id, "succeeded", detail)
        log.info("step succeeded: %s target=%s in %.3fs", name, target, time.monotonic() - started,
                 extra={"run_id": self.run.id, "step": name, "target": target})

    def record(self, name: str, *, target: str | None = None, started_at, finished_at=None,
               status: str = "succeeded", detail: dict | None = None, error: str | None = None) -> None:
        """Record a step that began before this attempt (``started_at``, UTC) and is over
        (at ``finished_at``, default now)."""
        self._audit.record_step(self.run.id, self.run.attempts, name, target, status=status,
                                started_at=started_at, finished_at=finished_at, detail=detail, error=error)
        self._log_step(status, name, target)

    def _log_step(self, status: str, name: str, target: str | None) -> None:
        log.info("step %s: %s target=%s", status, name, target,
                 extra={"run_id": self.run.id, "step": name, "target": target})

    def checkpoint(self, steps: list[dict] = ()) -> None:
        """Save ``ctx.state`` now, before an action that must not be repeated if this worker dies,
        with the steps (as :meth:`record` takes them) that the state now accounts for."""
        self._audit.save_state(self.run.id, self.state, [{"attempt": self.run.attempts, **s} for s in steps])
        for step in steps:
            self._log_step(step.get("status", "succeeded"), step["name"], step.get("target"))

    def others_running(self) -> list:
        """Unfinished runs of this handler about the same subject that began before this one."""
        rows = self._audit.active_runs(self.run.handler, self.envelope.subject) if self.envelope.subject else []
        mine = next((i for i, r in enumerate(rows) if r.id == self.run.id), len(rows))
        return rows[:mine]

    def progress(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """Record progress and tell whoever follows the run (``--wait``)."""
        self._audit.set_progress(self.run.id, done, total, note)
        self._notify(self._event("run.progress", status="running", done=done, total=total, note=note))

    def publish(self, type: str, *, subject: str | None = None, data: Any = None, key: str | None = None) -> Envelope:
        """Publish an envelope caused by this run's envelope (same correlation id).

        With ``key``, the envelope's id is derived from this envelope and the key, so a
        retried or re-checked handler publishing the same thing again is absorbed as a
        duplicate. Commands are signed when a signing key is configured.
        """
        attributes = {"id": str(uuid.uuid5(uuid.UUID(self.envelope.id), key))} if key else {}
        envelope = Envelope.new(type, subject=subject, data=data, cause=self.envelope, **attributes)
        signing_key = getattr(self.settings, "signing_key", None)
        if signing_key is not None and needs_signature(envelope):
            envelope = sign(envelope, signing_key.get_secret_value())
        self._publish(envelope)
        return envelope

    def outcomes(self, envelope_ids: list[str]) -> dict[str, list]:
        """The runs (read-only rows: handler, status, error…) of envelopes this handler published."""
        return self._audit.outcomes(envelope_ids)

    def recheck(self, after: float, *, waiting_for: str, deadline: float = 3600.0) -> NoReturn:
        """End this attempt and run the handler again in ``after`` seconds, holding no message.

        ``deadline`` (seconds) counts from the first wait for the same thing; past it the
        run fails with :class:`WaitTimedOut`.
        """
        give_up_at = self._give_up_at(waiting_for, deadline)
        if utcnow() >= give_up_at:
            raise WaitTimedOut(f"gave up waiting for {waiting_for}: deadline passed at "
                               f"{give_up_at:%Y-%m-%dT%H:%M:%SZ}")
        raise Suspend(after, waiting_for, give_up_at)

    def _give_up_at(self, waiting_for: str, deadline: float):
        """When a wait for ``waiting_for`` gives up: ``deadline`` seconds after the first wait for it."""
        if self.run.waiting_for == waiting_for and self.run.deadline is not None:
            return self.run.deadline
        return utcnow() + timedelta(seconds=deadline)

    def wait(self, check: Callable[[], Any], *, waiting_for: str, deadline: float = 3600.0,
             inline: float = 5.0, every: float = 0.25, recheck_after: float = 2.0) -> Any:
        """Call ``check`` every ``every`` seconds for up to ``inline`` seconds; if it is still not
        true, :meth:`recheck` later (holding no message). Returns ``check``'s true answer."""
        left = (self._give_up_at(waiting_for, deadline) - utcnow()).total_seconds()
        give_up_inline = time.monotonic() + min(inline, max(left, 0.0))
        while True:
            answer = check()
            if answer:
                return answer
            if time.monotonic() + every > give_up_inline:
                self.recheck(recheck_after, waiting_for=waiting_for, deadline=deadline)
            time.sleep(every)

    def fail(self, reason: str) -> NoReturn:
        """End the run ``failed`` with ``reason``; no retry."""
        raise HandlerFailed(reason)

    @cached_property
    def cloud(self):
        """An openstacksdk connection, created on first use."""
        return self._cloud_factory()

    def ssh(self, host: str, **options):
        """An SSH session to ``host`` with the configured user, key and known_hosts."""
        return self._ssh_factory(host, **options)

    def _event(self, type: str, **data) -> Envelope:
        return Envelope.new(type, subject=self.envelope.subject, cause=self.envelope,
                            data={"run_id": self.run.id, "handler": self.run.handler,
                                  "envelope_id": self.envelope.id, **data})
