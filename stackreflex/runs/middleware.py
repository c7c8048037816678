"""The run lifecycle inside dramatiq: its middleware hooks, and one actor per handler.

Where the hooks sit in the broker's middleware (see :func:`stackreflex.bus.dispatch.build_broker`):
after ``Retries`` and before ``TimeLimit``. So the claim runs before the time limit starts
(waiting out a database outage is not the handler's time), and, since dramatiq runs the
``after`` hooks in reverse order, the outcome is recorded after the time limit is lifted
and before ``Retries`` re-enqueues or dead-letters the message: a retry never arrives before
its run is released for it. ``Retries`` takes its decision from :meth:`retry_when`, which
asks the run's budget (:meth:`~.lifecycle.Lifecycle.may_retry`).
"""

import logging
import threading
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from ..bus.dispatch import authentic, handler_queue
from ..core.settings import Settings
from .execution import Execution
from .keeper import Keeper
from .lifecycle import Lifecycle
from .policy import RetryPolicy

#: Retries of a message whose run could not even be claimed (the database was unreachable for
#: longer than a write waits): its run stays pending, and a reconciler picks it up later.
UNCLAIMED_RETRIES = 5


class _SaidByTheLifecycle(logging.Filter):
    """dramatiq warns of every skipped message and logs every failed attempt at ERROR with its
    traceback; the lifecycle already says each in one line with its reason (a skip is a
    duplicate or stale wake-up; a failure says `retrying within …: reason`, or that the run is
    dead). The skip is dropped; the traceback is kept, at DEBUG, for who asks for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "was skipped" in message:
            return False
        if message.startswith("Failed to process message"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_SaidByTheLifecycle())


class RunLifecycle(Middleware):
    """dramatiq's hooks around each handler message, handed to the :class:`Lifecycle`."""

    def __init__(self, lifecycle: Lifecycle, keeper: Keeper | None = None, *, dispatch_key: bytes):
        self.lifecycle = lifecycle
        self.keeper = keeper
        #: what the router's and the lifecycle's messages are authenticated with
        self.dispatch_key = dispatch_key
        self.handlers: dict[str, tuple[Any, RetryPolicy]] = {}
        self._local = threading.local()

    def current(self) -> Execution:
        """The execution this worker thread is running (set by :meth:`before_process_message`)."""
        execution: Execution | None = self._local.execution
        assert execution is not None  # claimed, or the message was skipped before its actor ran
        return execution

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._local.execution = None
        served = self.handlers.get(message.actor_name)
        if served is None:
            return
        handler, policy = served
        if not authentic(self.dispatch_key, message):
            self.lifecycle.refuse(message.actor_name, message.encode(), message.args[0] if message.args else None)
            raise SkipMessage("not sent by this installation")
        body, wake = message.args[0], int(message.args[1]) if len(message.args) > 1 else 0
        begun = self.lifecycle.begin(handler, policy, body, wake)
        if not isinstance(begun, Execution):
            raise SkipMessage(begun.value)
        self._local.execution = begun

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        execution = getattr(self._local, "execution", None)
        if execution is None:
            return
        retry = exception is not None and self.lifecycle.may_retry(execution)
        self.lifecycle.end(execution, exception, retry=retry, retries=message.options.get("retries", 0))

    def retry_when(self, retries: int, exception: BaseException) -> bool:
        """``Retries``' predicate: the run's budget decides (the same answer :meth:`after_process_message` recorded)."""
        execution = getattr(self._local, "execution", None)
        if execution is None:
            return retries < UNCLAIMED_RETRIES
        return self.lifecycle.may_retry(execution)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.keeper is not None:
            self.keeper.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.keeper is not None:
            self.keeper.stop()


def declare_actor(
    broker: dramatiq.Broker, settings: Settings, handler: Any, policy: RetryPolicy, middleware: RunLifecycle
) -> dramatiq.Actor[..., None]:
    """One dramatiq actor and queue per handler; its body runs the execution the middleware claimed."""
    lifecycle = middleware.lifecycle

    def run(envelope: dict[str, Any], wake: int = 0) -> None:
        lifecycle.call(middleware.current())

    run.__name__ = handler.name
    middleware.handlers[handler.name] = (handler, policy)
    return dramatiq.Actor(
        run,
        broker=broker,
        actor_name=handler.name,
        queue_name=handler_queue(settings, handler.name),
        priority=0,
        options={**policy.actor_options(), "retry_when": middleware.retry_when},
    )
