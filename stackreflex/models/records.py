"""Typed records the audit log's write API hands back: a run as read from the database, and the
answer to a claim."""

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from .tables import FINAL_STATUSES, RunStatus


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
