"""Following runs live: the CLI's ``--wait`` listens for the notices of one envelope's runs.

The listening queue is bound before the envelope is published, so nothing is missed.
"""

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from kombu.entity import Queue, binding

from ..core.envelope import Envelope, parse_envelope
from ..core.errors import InvalidEnvelope, StackreflexError, UnroutableError
from ..core.records import FINAL_STATUSES
from ..core.settings import Settings
from ..core.signing import Signer
from .connections import Delivery, drain, kombu_connection
from .publisher import declare_exchange, topic_exchange

log = logging.getLogger(__name__)

#: Routing keys of the notices a follower listens to.
NOTICE_PATTERNS = ("envelope.routed", "envelope.rejected", "run.progress", "run.finished")


class FollowTimeout(StackreflexError):
    """--wait gave up before every run finished (the runs go on)."""


class EnvelopeRejected(StackreflexError):
    """The router refused the envelope; the reason says why."""


@dataclass
class RunState:
    handler: str
    run_id: str | None = None
    status: str = "pending"
    error: str | None = None
    done: int | None = None
    total: int | None = None
    note: str | None = None


@dataclass
class Progress:
    """What is known so far about one envelope's runs."""

    envelope_id: str
    routed: bool = False
    duplicate: bool = False
    runs: dict[str, RunState] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.routed and all(r.status in FINAL_STATUSES for r in self.runs.values())

    @property
    def succeeded(self) -> bool:
        return self.finished and all(r.status in ("succeeded", "skipped") for r in self.runs.values())


class Follower:
    """A temporary queue bound to run notices; use as a context manager around publishing."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._signer = Signer.from_settings(settings)
        self._inbox: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Exception | None = None

    def __enter__(self) -> "Follower":
        self._thread = threading.Thread(target=self._listen, daemon=True, name="stackreflex-follow")
        self._thread.start()
        if not self._ready.wait(15) and self._error is None:
            raise StackreflexError("could not start listening for run progress on the broker")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        exchange = topic_exchange(self.settings)
        q = Queue(
            f"{self.settings.namespace}.follow.{uuid.uuid4().hex[:12]}",
            exclusive=True,
            auto_delete=True,
            durable=False,
            bindings=[binding(exchange, routing_key=p) for p in NOTICE_PATTERNS],
        )
        try:
            with kombu_connection(self.settings, consumer=True) as connection:
                declare_exchange(connection.default_channel, self.settings)
                with connection.Consumer([q], on_message=self._received):
                    self._ready.set()
                    while not self._stop.is_set():
                        drain(connection, 0.2)
        except Exception as exc:
            self._error = exc
            self._ready.set()

    def _notice(self, body: bytes) -> Envelope | None:
        """A notice to believe: a valid envelope, signed by a key of the ring when a key is set
        (a forged ``run.finished`` must not make a run look done)."""
        try:
            notice = parse_envelope(body)
            if self._signer is not None:
                self._signer.verify(notice)
        except InvalidEnvelope as exc:
            log.warning("ignored a notice that is not to be believed: %s", exc)
            return None
        return notice

    def _received(self, message: Delivery) -> None:
        self._inbox.put(message.body)
        message.ack()

    def follow(
        self, envelope: Envelope, *, timeout: float, on_update: Callable[[Progress], None] = lambda p: None
    ) -> Progress:
        """Collect notices for ``envelope`` until all its runs are final, or time out."""
        progress = Progress(envelope.id)
        early: dict[str, RunState] = {}
        deadline = time.monotonic() + timeout
        while not progress.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FollowTimeout(
                    f"gave up waiting after {timeout:.0f}s; the runs go on: "
                    f"stackreflex audit runs --correlation-id {envelope.correlationid}"
                )
            try:
                notice = self._notice(self._inbox.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                continue
            data = notice.data if notice is not None and isinstance(notice.data, dict) else {}
            if notice is None or data.get("envelope_id") != envelope.id:
                continue
            if notice.type == "envelope.rejected" and data.get("unrouted"):
                raise UnroutableError(str(data.get("reason")))
            if notice.type == "envelope.rejected":
                raise EnvelopeRejected(f"the router rejected {envelope.type} {envelope.id}: {data.get('reason')}")
            if notice.type == "envelope.routed":
                progress.routed, progress.duplicate = True, bool(data.get("duplicate"))
                for r in data.get("runs", []):
                    state = early.pop(r["handler"], None) or RunState(r["handler"], r["run_id"], r["status"])
                    progress.runs[r["handler"]] = state
            else:
                handler = data.get("handler")
                if not isinstance(handler, str):
                    continue  # not a notice of one of its runs
                runs = progress.runs if handler in progress.runs else early
                state = runs.setdefault(handler, RunState(handler))
                state.run_id = data.get("run_id")
                state.status = data.get("status", state.status)
                state.error = data.get("error", state.error)
                for key in ("done", "total", "note"):
                    if data.get(key) is not None:
                        setattr(state, key, data[key])
            on_update(progress)
        return progress
