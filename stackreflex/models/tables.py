"""The audit log's tables. Times are timezone-aware and stored as UTC.

Free-text and JSON columns hold redacted content only: :mod:`.audit` redacts
every value before it is written.
"""

from datetime import datetime

from sqlalchemy import Boolean, Column, Index, Text, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

# the tables' statuses, exported with them
from ..core.records import FINAL_STATUSES as FINAL_STATUSES
from ..core.records import RUN_STATUSES as RUN_STATUSES
from ..core.records import RunStatus as RunStatus
from ..core.records import StepStatus as StepStatus


class EnvelopeRecord(SQLModel, table=True):
    """Every envelope the router received, accepted or rejected."""

    __tablename__ = "envelope"
    __table_args__ = (
        Index("ix_envelope_correlation", "correlation_id", "received_at"),
        #: a stack's own envelopes (Heat's events), newest first
        Index("ix_envelope_subject_received", "subject", "received_at"),
        #: a rejected message's record, found again when it is redelivered
        Index(
            "ix_envelope_rejected_digest",
            "digest",
            sqlite_where=text("status = 'rejected'"),
            postgresql_where=text("status = 'rejected'"),
        ),
    )

    pk: int | None = Field(default=None, primary_key=True)
    envelope_id: str | None = Field(default=None, index=True, max_length=128)
    #: ``accepted``, ``duplicate`` or ``rejected``
    status: str = Field(max_length=16)
    #: SHA-256 of what an accepted envelope says (an id seen again with another digest is a
    #: conflict), or of a rejected message's routing key and bytes (one record, one parked copy)
    digest: str | None = Field(default=None, max_length=64)
    #: When a rejected message was put in the dead-letter queue (None: recorded, not yet parked)
    parked_at: datetime | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))
    #: type is not indexed (each index is one more write for every envelope accepted); subject
    #: is, with the time, for a stack's timeline
    type: str | None = Field(default=None, max_length=255)
    subject: str | None = Field(default=None, max_length=255)
    source: str | None = Field(default=None, max_length=255)
    correlation_id: str | None = Field(default=None, max_length=128)
    causation_id: str | None = Field(default=None, max_length=128)
    actor: str | None = Field(default=None, max_length=255)
    time: datetime | None = None
    received_at: datetime
    payload: str = Field(sa_column=Column(Text, nullable=False))


class Run(SQLModel, table=True):
    """One handler invocation for one envelope; (envelope_id, handler) is unique."""

    __tablename__ = "run"
    __table_args__ = (
        UniqueConstraint("envelope_id", "handler", name="uq_run_envelope_handler"),
        Index("ix_run_status_wake", "status", "wake_at"),
        Index("ix_run_created", "created_at"),
        Index("ix_run_correlation", "correlation_id"),
        #: a stack's, host's or server's history, newest first
        Index("ix_run_subject_created", "subject", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    envelope_id: str = Field(max_length=128)
    handler: str = Field(max_length=255, index=True)
    type: str = Field(max_length=255)
    subject: str | None = Field(default=None, max_length=255)
    correlation_id: str = Field(max_length=128)
    status: str = Field(default="pending", max_length=16)
    #: The attempt under way or last made: 1 for a run that never failed, one more for every
    #: execution that failed (or whose worker died) and was tried again. Waits do not count.
    attempts: int = 0
    #: Continuations run: how many times the run was woken after waiting.
    wakes: int = 0
    #: ``attempts`` when the current retry budget began (a dead run replayed gets a fresh one).
    retry_base: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    #: A running run belongs to one execution until this time; heartbeats push it forward. The
    #: owner is that execution's token: writes of an execution that lost its lease change nothing.
    lease_until: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=128)
    #: Continuations: generation number, when a message is next due (the wake-up, or a retry),
    #: give-up time and the key of the wait it belongs to, what is awaited, handler state.
    wake: int = 0
    wake_at: datetime | None = None
    deadline: datetime | None = None
    wait_key: str | None = Field(default=None, max_length=255)
    waiting_for: str | None = Field(default=None, sa_column=Column(Text))
    state: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    progress_done: int | None = None
    progress_total: int | None = None
    progress_note: str | None = Field(default=None, sa_column=Column(Text))
    #: Set by ``stackreflex runs cancel``: the run ends ``cancelled`` at its next safe point.
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text))
    #: When a reconciler last sent this run a message because none was live (so it sends one per grace).
    redispatched_at: datetime | None = None
    #: The cloud the run acts on (auth URL and project), so a process configured for another
    #: cloud never resumes it.
    cloud: str | None = Field(default=None, max_length=255)


class Step(SQLModel, table=True):
    """One recorded action inside a run: an API call, an SSH command, a wait."""

    __tablename__ = "step"
    __table_args__ = (Index("ix_step_target_started", "target", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=36)
    attempt: int
    name: str = Field(max_length=255)
    target: str | None = Field(default=None, max_length=255)
    #: a :class:`StepStatus`
    status: str = Field(max_length=16)
    started_at: datetime
    finished_at: datetime | None = None
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))


class WatcherCursor(SQLModel, table=True):
    """The last Heat event seen per stack, so a restarted watcher neither misses nor repeats."""

    __tablename__ = "watcher_cursor"

    stack: str = Field(primary_key=True, max_length=255)
    last_event_id: str | None = Field(default=None, max_length=64)
    updated_at: datetime


class Subscription(SQLModel, table=True):
    """A handler some process serves, kept alive by that process's heartbeats: what no live
    process serves is reported, not silently left to wait."""

    __tablename__ = "subscription"

    owner: str = Field(primary_key=True, max_length=128)
    handler: str = Field(primary_key=True, max_length=255)
    #: The handler's envelope type patterns (JSON list).
    patterns: str = Field(sa_column=Column(Text, nullable=False))
    #: The bus it is served on (broker and namespace; an embedded bus is its process's own).
    bus: str = Field(default="", max_length=255, sa_column_kwargs={"server_default": ""})
    #: The handler also has a predicate (``when=``): only its own worker can check it.
    filtered: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    started_at: datetime
    heartbeat_at: datetime


class InstallationSecret(SQLModel, table=True):
    """Keys every process of one installation shares, generated on first start: the key of
    the HMAC on the router's messages to handlers (``dispatch``), unless one is configured."""

    __tablename__ = "installation_secret"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=255)
    created_at: datetime
