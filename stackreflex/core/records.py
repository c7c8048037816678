"""The run's domain types: its statuses, a run as the audit log reads it, and the answers the
audit log gives the router (an accepted envelope) and the lifecycle (a claim, a fence)."""

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a run stands. ``pending`` also covers a run whose next retry is due later."""

    PENDING = "pending"
    RUNNING = "running"
    #: parked in a continuation: its handler runs again at ``wake_at`` (not a failure)
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    #: the handler decided it cannot succeed (no retry)
    FAILED = "failed"
    #: its retries ran out
    DEAD = "dead"
    SKIPPED = "skipped"
    #: an operator ended it (``stackreflex runs cancel``), after the handler's compensation
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    RUNNING = "running"
    #: its run suspended inside it; the step goes on when the run wakes
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: it never finished: its worker died, its run was cancelled, or its run ended without coming back to it
    INTERRUPTED = "interrupted"


RUN_STATUSES = tuple(s.value for s in RunStatus)
#: Statuses after which a run never acts again (unless a dead one is replayed from the dead-letter queue).
FINAL_STATUSES = (
    RunStatus.SUCCEEDED.value,
    RunStatus.FAILED.value,
    RunStatus.DEAD.value,
    RunStatus.SKIPPED.value,
    RunStatus.CANCELLED.value,
)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the ``run`` table, read-only (see :class:`.tables.Run` for each column)."""

    id: str
    envelope_id: str
    handler: str
    type: str
    subject: str | None
    correlation_id: str
    status: RunStatus
    attempts: int
    wakes: int
    retry_base: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    lease_until: datetime | None
    lease_owner: str | None
    wake: int
    wake_at: datetime | None
    deadline: datetime | None
    wait_key: str | None
    waiting_for: str | None
    state: str
    progress_done: int | None
    progress_total: int | None
    progress_note: str | None
    cancel_reason: str | None
    redispatched_at: datetime | None
    cloud: str | None

    @classmethod
    def from_row(cls, row: Any) -> "RunRecord":
        """From a named tuple (the busy path's statements) or a Core row."""
        values = row._asdict()
        return cls(**{name: values[name] for name in _FIELDS} | {"status": RunStatus(values["status"])})

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


_FIELDS = tuple(f.name for f in fields(RunRecord))


@dataclass(frozen=True, slots=True)
class Served:
    """A handler a process serves: what a router in any process routes by."""

    handler: str
    patterns: tuple[str, ...]
    #: the handler also has a predicate, which only a process that loads it can check
    filtered: bool = False


class ClaimRefusal(StrEnum):
    """Why a message may not run its run now."""

    #: no run exists for the message: only the router creates runs
    MISSING = "missing"
    #: the run is over
    FINISHED = "finished"
    #: another execution holds a live lease on it
    BUSY = "busy"
    #: the message belongs to an earlier generation (the run waited and moved on since)
    STALE = "stale"
    #: a wake-up that came before its time (long waits hop in segments)
    NOT_DUE = "not due"
    #: a wake-up sent just before its run was parked, which overtook the parking
    AHEAD = "ahead"


@dataclass(frozen=True)
class Claim:
    """The answer to "may this message run the run now?"."""

    run: RunRecord | None
    refused: ClaimRefusal | None = None

    @property
    def granted(self) -> bool:
        return self.refused is None


@dataclass(frozen=True)
class Fence:
    """What a write made under a lease found: whether the lease was still held, and whether an
    operator asked for the run to be cancelled meanwhile."""

    held: bool
    cancel_reason: str | None = None


@dataclass(frozen=True)
class RunRef:
    id: str
    status: str
    attempts: int
    created: bool


@dataclass(frozen=True)
class Accepted:
    """What the router learns when it records an envelope."""

    duplicate: bool
    #: handler name → its run (created now, or found from an earlier delivery)
    runs: dict[str, RunRef]
    #: why it was not accepted: its id was accepted before with other content (it is not recorded
    #: as accepted, and has no runs: the router rejects it)
    conflict: str | None = None
