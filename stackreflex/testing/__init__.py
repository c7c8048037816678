"""The handler test kit: run your handler against an envelope, through the real run lifecycle
and a real audit log in memory, on a clock that jumps instead of sleeping.

Waits (``ctx.wait``, ``ctx.recheck``, ``ctx.sleep``) and retry backoffs advance the kit's
clock, so a handler that waits for an hour is tested in milliseconds. Messages go through
dramatiq's own middleware (its ``Retries`` among them), one at a time, due by that clock.

>>> from stackreflex import Envelope
>>> from stackreflex.testing import HandlerKit
>>> kit = HandlerKit(cloud=my_cloud)                     # what ctx.cloud is in the handler
>>> result = kit.run(check_node, Envelope.new("command.node.check", subject="compute-0"))
>>> result.run.status, result.run.attempts, result.run.wakes
('succeeded', 1, 2)
>>> [(s["name"], s["status"]) for s in result.steps]
[('uptime', 'succeeded')]
"""

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries, SkipMessage

from ..bus.dispatch import Dispatcher
from ..core.clock import Clock
from ..core.envelope import Envelope
from ..core.records import RunRecord
from ..core.registry import Handler, handler_of
from ..core.settings import Settings
from ..handlers.context import RunContext
from ..models.audit import AuditLog
from ..models.queries import run_with_steps
from ..runs.execution import Execution
from ..runs.lifecycle import Lifecycle
from ..runs.middleware import RunLifecycle, declare_actor
from ..runs.policy import policy_for
from ..runs.reconciler import Reconciler

__all__ = ["FakeClock", "HandlerKit", "RunResult"]

#: Where a kit's clock starts.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock(Clock):
    """A clock that moves only when told to (or when something sleeps on it)."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now, self._monotonic = start, 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def advance_to(self, moment: datetime) -> None:
        self.advance((moment - self._now).total_seconds())


class _KitBroker(StubBroker):
    """dramatiq's stub broker, whose messages are kept in order of when they are due on the kit's clock."""

    def __init__(self, clock: FakeClock, middleware: list[Middleware]) -> None:
        super().__init__(middleware=middleware)
        self.clock = clock
        self.due: list[tuple[datetime, int, Any]] = []
        self._order = itertools.count()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        self.emit_before("enqueue", message, delay)
        when = self.clock.now() + timedelta(milliseconds=delay or 0)
        heapq.heappush(self.due, (when, next(self._order), message))
        self.emit_after("enqueue", message, delay)
        return message


@dataclass
class RunResult:
    """How a run stands once the kit stopped following it."""

    run: RunRecord
    #: its steps, as ``stackreflex audit show --json`` gives them
    steps: list[dict[str, Any]]
    #: how many messages were processed (each an execution, unless skipped)
    messages: int
    #: what the handler published with ``ctx.publish``
    published: list[Envelope] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.run.status.value


class HandlerKit:
    """Runs handlers one message at a time.

    ``cloud`` is what ``ctx.cloud`` gives the handler (an openstacksdk connection to a test
    cloud, for instance); ``ssh(host, **options)`` what ``ctx.ssh`` opens. The audit log is
    SQLite in memory unless ``database_url`` names another.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        cloud: Any = None,
        ssh: Callable[..., Any] | None = None,
        clock: FakeClock | None = None,
        database_url: str = "sqlite://",
    ) -> None:
        self.settings = settings or Settings()
        self.clock = clock or FakeClock()
        self.audit = AuditLog.open(database_url, clock=self.clock)
        self.published: list[Envelope] = []
        self._cloud, self._ssh = cloud, ssh
        self.lifecycle = Lifecycle(
            audit=self.audit,
            owner="kit",
            lease_seconds=self.settings.lease_seconds,
            dispatch=self._dispatch,
            context_factory=self._context,
            notify=lambda e: None,
            announces=lambda e: False,
            clock=self.clock,
        )
        key = self.audit.dispatch_key(self.settings.dispatch_key)
        self.middleware = RunLifecycle(self.lifecycle, dispatch_key=key)
        self.broker = _KitBroker(self.clock, [Retries(), self.middleware])
        self.dispatcher = Dispatcher(self.settings, self.broker, key)
        self.handlers: dict[str, Handler] = {}
        #: the envelopes given to :meth:`run`, as given (the audit log keeps them redacted)
        self._bodies: dict[str, dict[str, Any]] = {}

    def run(
        self,
        handler: Handler | Callable[..., Any],
        envelope: Envelope,
        *,
        until_waiting: bool = False,
        max_messages: int = 1000,
    ) -> RunResult:
        """Route ``envelope`` to ``handler`` (a function decorated with ``@handler``) and process its
        messages until the run ends (or, with ``until_waiting``, until it first waits)."""
        served = self.serve(handler)
        self._bodies[envelope.id] = envelope.to_dict()
        [accepted] = self.audit.accept_many([(envelope, [served.name])])
        if accepted.runs[served.name].created:
            self.dispatcher.dispatch(served.name, envelope)
        return self.go_on(accepted.runs[served.name].id, until_waiting=until_waiting, max_messages=max_messages)

    def serve(self, handler: Handler | Callable[..., Any]) -> Handler:
        """Declare ``handler`` in the kit (done by :meth:`run`)."""
        found = handler if isinstance(handler, Handler) else handler_of(handler)
        if found is None:
            raise ValueError(f"{getattr(handler, '__name__', handler)!r} is not a handler: decorate it with @handler")
        if found.name not in self.handlers:
            declare_actor(
                self.broker, self.settings, found, policy_for(found, self.settings.handler_overrides), self.middleware
            )
            self.handlers[found.name] = found
        return found

    def go_on(self, run_id: str, *, until_waiting: bool = False, max_messages: int = 1000) -> RunResult:
        """Process due messages, the clock jumping to each, until the run ends (or waits)."""
        messages = 0
        while messages < max_messages and self.broker.due:
            run = self._run(run_id)
            if run.finished or (until_waiting and run.status == "waiting"):
                break
            self.process_next()
            messages += 1
        return self.result(run_id, messages)

    def process_next(self) -> None:
        """The earliest message: the clock moves to when it is due, and it is processed as a
        dramatiq worker thread processes one."""
        when, _, message = heapq.heappop(self.broker.due)
        if when > self.clock.now():
            self.clock.advance_to(when)
        proxy = MessageProxy(message)
        try:
            self.broker.emit_before("process_message", proxy)
            self.broker.get_actor(message.actor_name)(*proxy.args, **proxy.kwargs)
            self.broker.emit_after("process_message", proxy, result=None)
        except SkipMessage:
            self.broker.emit_after("skip_message", proxy)
        except BaseException as exc:
            self.broker.emit_after("process_message", proxy, exception=exc)

    def lose_messages(self) -> int:
        """Drop every message not yet processed, as an embedded process that exits does."""
        lost = len(self.broker.due)
        self.broker.due.clear()
        return lost

    def reconcile(self, grace: float | None = None) -> list[RunRecord]:
        """One pass of the reconciler over the kit's handlers: runs nothing moves on are sent a message."""
        return Reconciler(
            self.audit,
            self._dispatch,
            self.handlers,
            clock=self.clock,
            cloud=None,
            grace=self.settings.reconcile_grace if grace is None else grace,
        ).once()

    def cancel(self, run_id: str, reason: str) -> None:
        """What ``stackreflex runs cancel`` does: ask for the cancel, and send the run a message."""
        run = self.audit.request_cancel(run_id, reason)
        if run is not None and run.status != "running":
            self.dispatcher.dispatch(run.handler, self._bodies[run.envelope_id], run.wake)

    def result(self, run_id: str, messages: int = 0) -> RunResult:
        return RunResult(self._run(run_id), run_with_steps(self.audit, run_id)["steps"], messages, list(self.published))

    def _run(self, run_id: str) -> RunRecord:
        run = self.audit.get_run(run_id)
        if run is None:
            raise ValueError(f"no run {run_id} in the kit's audit log")
        return run

    def _dispatch(self, handler: str, body: dict[str, Any], wake: int, delay: float | None) -> None:
        self.dispatcher.dispatch(handler, body, wake, delay)

    def _context(self, execution: Execution) -> RunContext:
        return RunContext(
            execution,
            publish=self.published.append,
            notify=lambda e: None,
            cloud_factory=self._cloud_or_refuse,
            ssh_factory=self._ssh_or_refuse,
            settings=self.settings,
        )

    def _cloud_or_refuse(self) -> Any:
        if self._cloud is None:
            raise RuntimeError("the handler used ctx.cloud, and the kit was given none: HandlerKit(cloud=...)")
        return self._cloud

    def _ssh_or_refuse(self, host: str, **options: Any) -> Any:
        if self._ssh is None:
            raise RuntimeError(
                f"the handler opened ctx.ssh({host!r}), and the kit was given no ssh: HandlerKit(ssh=...)"
            )
        return self._ssh(host, **options)
