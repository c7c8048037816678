"""The audit log's write API: envelopes, runs (claims, leases, continuations, cancels) and steps.

Every value written passes through :func:`stackreflex.core.redaction.redact` here, so no
caller can put a secret into a table by forgetting to.

These writes sit on the path of every event, so they are SQLAlchemy Core statements
built once with bound parameters (building a statement per call, or going through the
ORM, cost several times the database work itself); those of the accept, the claim and
the run updates are also compiled once and run on the driver (:mod:`.prepared`).

A run's transitions are decided by :mod:`stackreflex.runs`; here they are single
statements. Those an execution makes are *fenced*: they name the execution's lease token
and change nothing once another execution has taken the run over. Every write waits
through a database outage (:mod:`.outage`).
"""

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import SecretStr
from sqlalchemy import (
    BindParameter,
    Connection,
    Dialect,
    Insert,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.selectable import ExecutableReturnsRows
from sqlmodel import Session

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.envelope import Envelope
from ..core.errors import DatabaseUnavailable
from ..core.records import Accepted, Claim, ClaimRefusal, Fence, RunRecord, RunRef, Served
from ..core.redaction import MASK, redact, redact_text
from .database import make_engine, migrate
from .group_commit import GroupCommit, T, Write
from .outage import DEFAULT_OUTAGE_LIMIT, OutageGuard
from .prepared import Prepared
from .tables import (
    FINAL_STATUSES,
    EnvelopeRecord,
    InstallationSecret,
    Run,
    RunStatus,
    Step,
    StepStatus,
    Subscription,
    WatcherCursor,
)

#: Transactions a process runs at once on PostgreSQL: while one waits for its commit to reach
#: the disk, the next can be under way (SQLite has one writer: one lane).
POSTGRESQL_WRITE_LANES = 4
#: With checkpoints deferred (:meth:`AuditLog.defer_checkpoints`), the WAL size (pages) at
#: which a write checkpoints after all (SQLite's default is 1,000).
DEFERRED_AUTOCHECKPOINT_PAGES = 10_000
#: The size a WAL file is cut back to when it restarts (bytes), so a burst does not leave it large.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: How much of a rejected message body is kept for the post-mortem.
RAW_EXCERPT_CHARS = 4000

RUN: Table = Run.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
STEP: Table = Step.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
ENVELOPE: Table = EnvelopeRecord.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
CURSOR: Table = WatcherCursor.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
SUBSCRIPTION: Table = Subscription.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__
SECRET: Table = InstallationSecret.__table__  # type: ignore[attr-defined]  # sqlmodel does not declare SQLAlchemy's __table__

PENDING, RUNNING, WAITING = RunStatus.PENDING.value, RunStatus.RUNNING.value, RunStatus.WAITING.value


def _inserted_id(c: Connection, statement: Insert) -> int:
    """The primary key of the one row ``statement`` inserted."""
    key = c.execute(statement).inserted_primary_key
    assert key is not None  # an INSERT of one row has one
    return int(key[0])


def _json(value: Any) -> str:
    return json.dumps(redact(value), default=str, sort_keys=True)


def _text(value: str | None) -> str | None:
    return None if value is None else _storable(redact_text(value))


def _redacted_excerpt(raw: bytes | str | None) -> str:
    """What a rejected message is kept as: redacted by key when it is JSON (as a valid envelope
    is), by its text otherwise; the first :data:`RAW_EXCERPT_CHARS` characters."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else (raw or "")
    try:
        text = json.dumps(redact(json.loads(text)))
    except (ValueError, RecursionError):
        text = redact_text(text)
    return text[:RAW_EXCERPT_CHARS]


def rejection_digest(raw: bytes, routing_key: str) -> str:
    """What identifies a refused message: its routing key and its bytes."""
    return hashlib.sha256(routing_key.encode("utf-8", "surrogatepass") + b"\n" + bytes(raw)).hexdigest()


def _storable(text: str) -> str:
    """Text every database takes: a NUL (which PostgreSQL's text columns refuse) written as ``\\x00``.
    A rejected message that could not be recorded would be parked again on every redelivery."""
    return text.replace("\x00", "\\x00")


#: Claim a run for one execution: pending (new, or its retry is here), waiting for this wake-up
#: and due (or asked to cancel), or running under a lease that lapsed (its worker died). A
#: takeover is a new attempt; a wake is not.
_CLAIM = (
    update(RUN)
    .where(
        RUN.c.envelope_id == bindparam("b_envelope"),
        RUN.c.handler == bindparam("b_handler"),
        RUN.c.wake == bindparam("b_wake"),
        or_(
            RUN.c.status == PENDING,
            and_(RUN.c.status == WAITING, or_(RUN.c.wake_at <= bindparam("b_now"), RUN.c.cancel_reason.is_not(None))),
            and_(RUN.c.status == RUNNING, RUN.c.lease_until < bindparam("b_now")),
        ),
    )
    .values(
        status=RUNNING,
        attempts=case((RUN.c.attempts == 0, 1), (RUN.c.status == RUNNING, RUN.c.attempts + 1), else_=RUN.c.attempts),
        wakes=case((RUN.c.status == WAITING, RUN.c.wakes + 1), else_=RUN.c.wakes),
        lease_owner=bindparam("b_owner"),
        lease_until=bindparam("b_lease_until"),
        updated_at=bindparam("b_now"),
        started_at=func.coalesce(RUN.c.started_at, bindparam("b_now")),
    )
    .returning(*RUN.c)
)
_RUN_BY_KEY = select(RUN).where(RUN.c.envelope_id == bindparam("b_envelope"), RUN.c.handler == bindparam("b_handler"))
_FENCE = and_(RUN.c.id == bindparam("b_id"), RUN.c.lease_owner == bindparam("b_token"))
#: An execution's last write: the run ends, its lease and next due time cleared.
_FINISH = (
    update(RUN)
    .where(_FENCE)
    .values(
        status=bindparam("b_status"),
        error=bindparam("b_error"),
        finished_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
        lease_until=None,
        lease_owner=None,
        wake_at=None,
        progress_note=None,
    )
    .returning(RUN.c.id)
)
#: An execution failed and will be tried again: one more attempt, due once the retry's backoff ends.
_RELEASE = (
    update(RUN)
    .where(_FENCE)
    .values(
        status=PENDING,
        error=bindparam("b_error"),
        attempts=RUN.c.attempts + 1,
        wake_at=bindparam("b_due"),
        updated_at=bindparam("b_now"),
        lease_until=None,
        lease_owner=None,
    )
    .returning(RUN.c.id)
)
#: An execution suspended: the run waits for wake-up ``b_wake`` at ``b_wake_at``.
_SUSPEND = (
    update(RUN)
    .where(_FENCE)
    .values(
        status=WAITING,
        wake=bindparam("b_wake"),
        wake_at=bindparam("b_wake_at"),
        deadline=bindparam("b_deadline"),
        wait_key=bindparam("b_wait_key"),
        waiting_for=bindparam("b_waiting_for"),
        state=bindparam("b_state"),
        updated_at=bindparam("b_now"),
        lease_until=None,
        lease_owner=None,
    )
    .returning(RUN.c.id)
)
_INTERRUPT_STEPS = (
    update(STEP)
    .where(
        STEP.c.run_id == bindparam("b_run"),
        STEP.c.status == StepStatus.RUNNING.value,
        STEP.c.attempt < bindparam("b_attempt"),
    )
    .values(
        status=StepStatus.INTERRUPTED.value,
        finished_at=bindparam("b_now"),
        error="the worker running this step stopped before it finished",
    )
)
_FINISH_STEP = (
    update(STEP)
    .where(STEP.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        finished_at=bindparam("b_now"),
        detail=bindparam("b_detail"),
        error=bindparam("b_error"),
    )
)
#: The columns an accepted envelope and a new run are inserted with.
_ENVELOPE_COLUMNS = (
    "envelope_id",
    "status",
    "digest",
    "reason",
    "type",
    "subject",
    "source",
    "correlation_id",
    "causation_id",
    "actor",
    "time",
    "received_at",
    "payload",
)
_NEW_RUN_COLUMNS = (
    "id",
    "envelope_id",
    "handler",
    "type",
    "subject",
    "correlation_id",
    "status",
    "attempts",
    "wakes",
    "retry_base",
    "wake",
    "wake_at",
    "state",
    "cloud",
    "created_at",
    "updated_at",
)


class _BusyStatements:
    """The statements on the path of every event, prepared for the engine's dialect the
    first time each is used (a CLI reading the log never pays for them)."""

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        self._prepared: dict[Hashable, Prepared] = {}

    def _get(
        self, key: Hashable, build: Callable[[], ExecutableReturnsRows], columns: Iterable[str] | None = None
    ) -> Prepared:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = Prepared(build(), self.dialect, columns)
        return prepared

    @property
    def claim(self) -> Prepared:
        return self._get("claim", lambda: _CLAIM)

    @property
    def run_by_key(self) -> Prepared:
        return self._get("run_by_key", lambda: _RUN_BY_KEY)

    @property
    def finish(self) -> Prepared:
        return self._get("finish", lambda: _FINISH)

    @property
    def release(self) -> Prepared:
        return self._get("release", lambda: _RELEASE)

    @property
    def suspend(self) -> Prepared:
        return self._get("suspend", lambda: _SUSPEND)

    @property
    def interrupt_steps(self) -> Prepared:
        return self._get("interrupt_steps", lambda: _INTERRUPT_STEPS)

    @property
    def insert_envelopes(self) -> Prepared:
        return self._get("insert_envelopes", lambda: insert(ENVELOPE), _ENVELOPE_COLUMNS)

    @property
    def insert_runs(self) -> Prepared:
        return self._get("insert_runs", lambda: insert(RUN), _NEW_RUN_COLUMNS)

    def fenced_update(self, columns: tuple[str, ...]) -> Prepared:
        """``UPDATE run SET <columns> WHERE id = :b_id AND lease_owner = :b_token RETURNING
        cancel_reason``, one per set of columns."""
        return self._get(
            ("fenced", columns),
            lambda: (
                update(RUN)
                .where(_FENCE)
                .values({name: bindparam(f"b_{name}") for name in columns})
                .returning(RUN.c.cancel_reason)
            ),
        )

    def _rows_for_ids(
        self,
        c: Connection,
        name: str,
        build: Callable[[list[BindParameter[Any]]], ExecutableReturnsRows],
        ids: list[str],
    ) -> list[Any]:
        """Rows of a statement over a list of ids, padded to a power of two so that a few
        prepared variants cover any batch."""
        size = 1 << max(len(ids) - 1, 0).bit_length()
        padded = ids + ids[-1:] * (size - len(ids))
        statement = self._get((name, size), lambda: build([bindparam(f"b_id{i}") for i in range(size)]))
        return statement.rows(c, {f"b_id{i}": value for i, value in enumerate(padded)})

    def accepted_among(self, c: Connection, ids: list[str]) -> dict[str, tuple[datetime, str | None]]:
        """Which of ``ids`` were accepted before: when (the first time), and the digest of
        what they said (None for envelopes recorded before digests were kept)."""
        rows = self._rows_for_ids(
            c,
            "accepted_among",
            lambda binds: (
                select(
                    ENVELOPE.c.envelope_id,
                    func.min(ENVELOPE.c.received_at).label("received_at"),
                    func.min(ENVELOPE.c.digest).label("digest"),
                )
                .where(ENVELOPE.c.envelope_id.in_(binds), ENVELOPE.c.status == "accepted")
                .group_by(ENVELOPE.c.envelope_id)
            ),
            ids,
        )
        return {row.envelope_id: (row.received_at, row.digest) for row in rows}

    def runs_of(self, c: Connection, ids: list[str]) -> list[Any]:
        """The runs of the envelopes ``ids``: envelope_id, id, handler, status, attempts."""
        return self._rows_for_ids(
            c,
            "runs_of",
            lambda binds: select(RUN.c.envelope_id, RUN.c.id, RUN.c.handler, RUN.c.status, RUN.c.attempts).where(
                RUN.c.envelope_id.in_(binds)
            ),
            ids,
        )


@dataclass(frozen=True)
class WaitingStep:
    """A step a run suspended inside; the run's next execution goes on with it."""

    id: int
    name: str
    target: str | None
    started_at: datetime
    detail: dict[str, Any]


class AuditLog:
    """Reads and writes the audit tables through one engine.

    Writes go through :class:`GroupCommit`: the threads of one process take turns at
    the database, and the writes that wait while one transaction commits share the
    next. They run on kept connections (checking one out of the pool for each write, with
    PostgreSQL's pre-ping and reset, cost a quarter of the write): one on SQLite, which has
    one writer anyway, and :data:`POSTGRESQL_WRITE_LANES` on PostgreSQL, whose commits wait
    for a flush of its log that other connections' commits can share. Reads take pooled
    connections of their own, so they never wait behind a write.
    """

    def __init__(self, engine: Engine, *, clock: Clock = SYSTEM_CLOCK, outage_limit: float = DEFAULT_OUTAGE_LIMIT):
        self.engine = engine
        self.clock = clock
        self._sqlite = engine.dialect.name == "sqlite"
        lanes = 1 if self._sqlite else POSTGRESQL_WRITE_LANES
        self._kept: list[Connection | None] = [None] * lanes
        self._kept_at = [0.0] * lanes  # when each was made (monotonic seconds)
        self._checkpoints_deferred = False
        #: write transactions committed, and how many had been when a checkpoint last copied the whole WAL
        self._committed = self._checkpointed = 0
        self._lanes = [GroupCommit(partial(self._transaction, lane)) for lane in range(lanes)]
        self._busy = _BusyStatements(engine.dialect)
        self._outage = OutageGuard(outage_limit, clock)

    @classmethod
    def open(cls, url: str, **options: Any) -> "AuditLog":
        """Connect to ``url`` and bring its schema up to date."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine, **options)

    def session(self) -> Session:
        """A session for reading."""
        return Session(self.engine, expire_on_commit=False)

    def _write(self, work: Write[T], wait: Callable[[float], None] | None = None, limit: float | None = None) -> T:
        """Run ``work(connection)`` in a write transaction; return its result once committed.
        Through an outage the write is made again, so ``work`` must be safe to repeat."""
        return self._outage.run(lambda: self._lane().run(work), wait=wait, limit=limit)

    def _lane(self) -> GroupCommit:
        """An idle lane if there is one, else the one with the fewest writes waiting."""
        return min(self._lanes, key=GroupCommit.load)

    def _read(self, work: Callable[[Connection], T], *, limit: float | None = None) -> T:
        def read() -> T:
            with self.engine.connect() as c:
                return work(c)

        return self._outage.run(read, limit=limit)

    @contextmanager
    def _transaction(self, lane: int) -> Iterator[Connection]:
        """A transaction for the :class:`GroupCommit` of ``lane``, which holds its writer while it
        lasts, on the lane's kept connection (made again after the database dropped it)."""
        kept = self._kept[lane]
        # A connection made before the database last failed a write may be dead without knowing
        # it (each lane would find out with a failed write of its own, an outage each time).
        if kept is None or kept.invalidated or kept.closed or self._kept_at[lane] <= self._outage.last_failure:
            if kept is not None:
                kept.close()
            self._kept_at[lane] = self.clock.monotonic()
            kept = self._kept[lane] = self.engine.connect()
            if self._checkpoints_deferred:
                self._defer_checkpoints_on(kept)
        with kept.begin():
            yield kept
        self._committed += 1

    def defer_checkpoints(self) -> bool:
        """SQLite: leave WAL checkpoints to :meth:`checkpoint`, called off the busy path; False
        (nothing to do) for other databases.

        Otherwise the write that takes the WAL past 1,000 pages copies them all back into the
        database file and syncs it, holding the writer for milliseconds: every fiftieth event
        or so waited for it (the p99 latency was 2.5 times what it is without). The writes
        still checkpoint if the WAL reaches :data:`DEFERRED_AUTOCHECKPOINT_PAGES`: a passive
        checkpoint racing a steady stream of writes may never catch up with them.
        """
        if not self._sqlite:
            return False
        [lane] = self._lanes
        with lane.exclusive():
            self._checkpoints_deferred = True
            if self._kept[0] is not None and not self._kept[0].invalidated:
                self._defer_checkpoints_on(self._kept[0])
        return True

    @staticmethod
    def _defer_checkpoints_on(connection: Connection) -> None:
        driver = connection.connection.dbapi_connection
        assert driver is not None  # a connection in use holds its driver's
        driver.execute(f"PRAGMA wal_autocheckpoint={DEFERRED_AUTOCHECKPOINT_PAGES}")
        driver.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")

    def checkpoint(self) -> None:
        """Copy what the WAL holds back into the database file, without waiting for readers or
        writers (SQLite's PASSIVE checkpoint); the WAL restarts from its beginning once all of
        it is copied. Nothing is done while no write has committed since all of it was (an idle
        process looked every quarter second)."""
        committed = self._committed
        if committed == self._checkpointed:
            return
        with self.engine.connect() as c:
            busy, pages, copied = c.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        if not busy and pages == copied:  # a reader's snapshot can keep pages from being copied
            self._checkpointed = committed

    # -- envelopes -------------------------------------------------------------------

    @staticmethod
    def _envelope_values(envelope: Envelope, status: str, now: datetime) -> dict[str, Any]:
        return {
            "status": status,
            "reason": None,
            "received_at": now,
            "payload": _json(envelope.to_dict()),
            "digest": envelope.content_digest(),
            "envelope_id": envelope.id,
            "type": envelope.type,
            "subject": envelope.subject,
            "source": envelope.source,
            "correlation_id": envelope.correlationid,
            "causation_id": envelope.causationid,
            "actor": envelope.actor,
            "time": envelope.time,
        }

    def record_envelope(
        self, envelope: Envelope, *, status: str, reason: str | None = None, wait: Callable[[float], None] | None = None
    ) -> None:
        """Record a valid envelope as ``accepted`` or ``duplicate`` (a refused message is
        :meth:`record_rejection`'s)."""
        values = self._envelope_values(envelope, status, self.clock.now())
        self._write(lambda c: c.execute(insert(ENVELOPE), [{**values, "reason": _text(reason)}]), wait)

    def record_rejection(
        self,
        raw: bytes,
        routing_key: str,
        reason: str,
        *,
        envelope_id: str | None = None,
        wait: Callable[[float], None] | None = None,
    ) -> str | None:
        """Record a message the router refuses, once: returns its digest if it still has to be
        parked (then :meth:`parked`), None if it was recorded and parked on an earlier delivery.

        A message the database will not take whole (a value it refuses) is recorded with what
        it can take: its digest, size and first bytes, escaped.
        """
        digest = rejection_digest(raw, routing_key)
        now = self.clock.now()
        full = {
            "status": "rejected",
            "digest": digest,
            "received_at": now,
            "reason": _text(reason),
            "envelope_id": _storable(envelope_id[:128]) if envelope_id else None,
            "payload": _storable(_redacted_excerpt(raw)),
        }

        def record(values: dict[str, Any]) -> Callable[[Connection], bool]:
            def write(c: Connection) -> bool:
                earlier = c.execute(
                    select(ENVELOPE.c.parked_at)
                    .where(ENVELOPE.c.status == "rejected", ENVELOPE.c.digest == digest)
                    .limit(1)
                ).first()
                if earlier is None:
                    c.execute(insert(ENVELOPE), [values])
                    return True
                return earlier.parked_at is None

            return write

        try:
            due = self._write(record(full), wait)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            excerpt = repr(bytes(raw[:64]))[2:-1]  # every byte that is not printable ASCII escaped
            due = self._write(
                record(
                    {
                        **full,
                        "envelope_id": None,
                        "payload": json.dumps({"sha256": digest, "bytes": len(raw), "first_bytes": excerpt}),
                        "reason": _text(
                            f"{reason} (recorded in part: the database refused the whole: {type(exc).__name__})"
                        ),
                    }
                ),
                wait,
            )
        return digest if due else None

    def parked(self, digest: str) -> None:
        """The rejected message ``digest`` is in the dead-letter queue: a redelivery is not parked again."""
        now = self.clock.now()
        self._write(
            lambda c: c.execute(
                update(ENVELOPE)
                .where(ENVELOPE.c.status == "rejected", ENVELOPE.c.digest == digest)
                .values(parked_at=now)
            )
        )

    def unpark(self, digest: str) -> None:
        """The rejected message ``digest`` left the dead-letter queue (``dlq replay``): refused
        again, it is parked again."""
        self._write(
            lambda c: c.execute(
                update(ENVELOPE)
                .where(ENVELOPE.c.status == "rejected", ENVELOPE.c.digest == digest)
                .values(parked_at=None)
            )
        )

    def dispatch_key(self, configured: SecretStr | None = None) -> bytes:
        """This installation's key for the router's messages to handlers: ``configured`` (the
        ``dispatch_key`` setting) if given, or the one kept here, made on first use."""
        if configured is not None:
            return configured.get_secret_value().encode()

        def read(c: Connection) -> str | None:
            return c.execute(select(SECRET.c.value).where(SECRET.c.name == "dispatch")).scalar()

        def make(c: Connection) -> str:
            value = read(c)
            if value is None:
                value = secrets.token_hex(32)
                c.execute(insert(SECRET), [{"name": "dispatch", "value": value, "created_at": self.clock.now()}])
            return value

        value = self._read(read)
        if value is None:
            try:
                value = self._write(make)
            except IntegrityError:  # another process made it first
                value = self._read(read)
                assert value is not None  # the row the other process inserted
        return bytes.fromhex(value)

    def accept_many(
        self,
        batch: list[tuple[Envelope, list[str]]],
        *,
        cloud: str | None = None,
        wait: Callable[[float], None] | None = None,
    ) -> list[Accepted]:
        """Record valid envelopes and make sure each handler has its run, in one transaction
        (the router's busy path: one commit for a batch, not one per envelope). New runs are
        due at once, and act on ``cloud``.

        ``duplicate`` is true when an envelope was accepted before (a redelivery or a
        second publish); its runs are then the existing ones.
        """
        now = self.clock.now()
        prepared = [
            (envelope, handlers, self._envelope_values(envelope, "accepted", now)) for envelope, handlers in batch
        ]
        for attempt in range(3):  # another router may insert the same runs at the same time
            try:
                return self._write(lambda c: self._accept(c, prepared, now, cloud), wait)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("the last attempt returns or raises")

    def _accept(
        self,
        c: Connection,
        prepared: list[tuple[Envelope, list[str], dict[str, Any]]],
        now: datetime,
        cloud: str | None,
    ) -> list[Accepted]:
        ids = list({envelope.id: None for envelope, _, _ in prepared})
        earlier = self._busy.accepted_among(c, ids)
        # Accepted at ``now``: by this very batch, whose commit an outage hid; it is being made again.
        redone = {eid for eid, (when, _) in earlier.items() if when == now}
        seen = set(earlier) - redone
        said = {eid: digest for eid, (_, digest) in earlier.items()}
        existing: dict[str, dict[str, RunRef]] = {}
        for row in self._busy.runs_of(c, list(earlier)) if earlier else ():
            existing.setdefault(row.envelope_id, {})[row.handler] = RunRef(row.id, row.status, row.attempts, False)
        envelopes, new_runs, answers = [], [], []
        for envelope, handlers, values in prepared:
            if said.get(envelope.id) not in (None, values["digest"]):
                answers.append(
                    Accepted(
                        False,
                        {},
                        conflict=(
                            f"conflict: envelope id {envelope.id} was accepted before with other content; "
                            "an id names one envelope (publish a changed envelope under a new id)"
                        ),
                    )
                )
                continue
            said.setdefault(envelope.id, values["digest"])
            duplicate = envelope.id in seen  # also the second copy of one envelope in this batch
            seen.add(envelope.id)
            if envelope.id not in redone:
                envelopes.append({**values, "status": "duplicate" if duplicate else "accepted"})
            runs = existing.setdefault(envelope.id, {})
            for name in handlers:
                if name not in runs:
                    run = self._run_values(envelope, name, now, cloud)
                    new_runs.append(run)
                    runs[name] = RunRef(run["id"], PENDING, 0, True)
            answers.append(Accepted(duplicate, {name: runs[name] for name in handlers}))
        if envelopes:
            self._busy.insert_envelopes.execute(c, envelopes)
        if new_runs:
            self._busy.insert_runs.execute(c, new_runs)
        return answers

    @staticmethod
    def _run_values(envelope: Envelope, handler: str, now: datetime, cloud: str | None) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "envelope_id": envelope.id,
            "handler": handler,
            "type": envelope.type,
            "subject": envelope.subject,
            "correlation_id": envelope.correlationid,
            "status": PENDING,
            "attempts": 0,
            "wakes": 0,
            "retry_base": 0,
            "wake": 0,
            "wake_at": now,
            "state": "{}",
            "cloud": cloud,
            "created_at": now,
            "updated_at": now,
        }

    def kept_envelope(self, envelope_id: str) -> dict[str, Any] | None:
        """The envelope as received, when the log holds it whole: None when redaction masked a
        part of it (its secrets are not kept, so it cannot be handed to a handler again)."""
        payload = self._read(
            lambda c: c.execute(
                select(ENVELOPE.c.payload)
                .where(ENVELOPE.c.envelope_id == envelope_id, ENVELOPE.c.status == "accepted")
                .order_by(ENVELOPE.c.pk)
                .limit(1)
            ).scalar()
        )
        return None if payload is None or MASK in payload else json.loads(payload)

    # -- runs: what an execution does ----------------------------------------------------

    def claim(self, envelope_id: str, handler: str, *, wake: int, token: str, lease_seconds: float) -> Claim:
        """Atomically take a run to ``running`` for one execution holding the lease ``token``,
        or say why not.

        A run can be taken when it is pending, waiting for this wake-up and due (or asked to
        cancel), or running under a lease that lapsed (its worker died: its open steps become
        ``interrupted``).
        """
        now = self.clock.now()
        key = {"b_envelope": envelope_id, "b_handler": handler}
        claiming = {
            **key,
            "b_wake": wake,
            "b_now": now,
            "b_owner": token,
            "b_lease_until": now + timedelta(seconds=lease_seconds),
        }
        busy = self._busy

        def take(c: Connection) -> tuple[Any, bool]:
            run = busy.claim.first(c, claiming)
            if run is None:
                found = busy.run_by_key.first(c, key)
                # taken by this very claim, whose commit an outage hid (it is being made again)
                return found, (
                    found is not None and found.lease_owner == token and found.status == RUNNING and found.wake == wake
                )
            if run.attempts > 1:
                busy.interrupt_steps.execute(c, {"b_run": run.id, "b_attempt": run.attempts, "b_now": now})
            return run, True

        row, taken = self._write(take)
        if row is None:
            return Claim(None, ClaimRefusal.MISSING)
        run = RunRecord.from_row(row)
        if taken:
            return Claim(run)
        if run.finished:
            return Claim(run, ClaimRefusal.FINISHED)
        if run.wake > wake:
            return Claim(run, ClaimRefusal.STALE)
        if run.wake < wake:
            return Claim(run, ClaimRefusal.AHEAD)
        if run.status == WAITING:
            return Claim(run, ClaimRefusal.NOT_DUE)
        return Claim(run, ClaimRefusal.BUSY)

    def heartbeat(self, leases: dict[str, str], lease_seconds: float) -> dict[str, Fence]:
        """Extend the leases (run id → token) this process's executions hold; says, for each,
        whether it is still held and whether a cancel was asked for."""
        if not leases:
            return {}
        statement = self._busy.fenced_update(("lease_until",))

        def renew(c: Connection) -> dict[str, Fence]:
            until = self.clock.now() + timedelta(seconds=lease_seconds)
            found = {}
            for run_id, token in leases.items():
                rows = statement.rows(c, {"b_id": run_id, "b_token": token, "b_lease_until": until})
                found[run_id] = Fence(bool(rows), rows[0].cancel_reason if rows else None)
            return found

        return self._write(renew)

    def finish(
        self, run_id: str, token: str, status: RunStatus, error: str | None = None, *, close_steps: str | None = None
    ) -> bool:
        """End a run, if ``token`` still holds its lease. With ``close_steps``, steps left running
        or waiting are ended ``interrupted`` with that reason. False if the lease was lost."""
        now = self.clock.now()
        parameters = {"b_id": run_id, "b_token": token, "b_status": status.value, "b_error": _text(error), "b_now": now}

        def end(c: Connection) -> bool:
            if not self._busy.finish.rows(c, parameters):
                return False
            if close_steps:
                self._close_steps(c, run_id, close_steps, now)
            return True

        return self._write(end)

    def release_for_retry(self, run_id: str, token: str, error: str, due_at: datetime) -> bool:
        """An execution failed and will be tried again: ``pending``, one more attempt, due at ``due_at``."""
        return bool(
            self._write(
                lambda c: self._busy.release.rows(
                    c,
                    {
                        "b_id": run_id,
                        "b_token": token,
                        "b_error": _text(error),
                        "b_due": due_at,
                        "b_now": self.clock.now(),
                    },
                )
            )
        )

    def suspend(
        self,
        run_id: str,
        token: str,
        *,
        wake: int,
        wake_at: datetime,
        deadline: datetime | None,
        wait_key: str | None,
        waiting_for: str,
        state: dict[str, Any],
    ) -> bool:
        """Park a run as ``waiting`` until ``wake_at``, answering only wake-up ``wake``."""
        return bool(
            self._write(
                lambda c: self._busy.suspend.rows(
                    c,
                    {
                        "b_id": run_id,
                        "b_token": token,
                        "b_wake": wake,
                        "b_wake_at": wake_at,
                        "b_deadline": deadline,
                        "b_wait_key": wait_key,
                        "b_waiting_for": _text(waiting_for),
                        "b_state": _json(state),
                        "b_now": self.clock.now(),
                    },
                )
            )
        )

    def _fenced(self, run_id: str, token: str, values: dict[str, Any], steps: Sequence[dict[str, Any]] = ()) -> Fence:
        values["updated_at"] = self.clock.now()
        statement = self._busy.fenced_update(tuple(sorted(values)))
        parameters = {"b_id": run_id, "b_token": token, **{f"b_{k}": v for k, v in values.items()}}

        def write(c: Connection) -> Fence:
            rows = statement.rows(c, parameters)
            if rows and steps:
                c.execute(insert(STEP), steps)
            return Fence(bool(rows), rows[0].cancel_reason if rows else None)

        return self._write(write)

    def save_state(self, run_id: str, token: str, state: dict[str, Any], steps: Iterable[dict[str, Any]] = ()) -> Fence:
        """Save a handler's state, with the steps (over already) that it accounts for, in one
        transaction: a worker dying in between must not leave steps the state does not know."""
        return self._fenced(
            run_id, token, {"state": _json(state)}, [self._step_values(run_id, **step) for step in steps]
        )

    def set_progress(self, run_id: str, token: str, done: int, total: int | None, note: str | None) -> Fence:
        return self._fenced(
            run_id, token, {"progress_done": done, "progress_total": total, "progress_note": _text(note)}
        )

    # -- runs: what operators and reconcilers do ------------------------------------------

    def request_cancel(self, run_id: str, reason: str) -> RunRecord | None:
        """Ask for an unfinished run to be cancelled; its next execution ends it (after the
        handler's compensation). Returns the run as it stands, or None if it is over."""
        statement = (
            update(RUN)
            .where(RUN.c.id == run_id, RUN.c.status.not_in(FINAL_STATUSES))
            .values(cancel_reason=_text(reason), updated_at=self.clock.now())
            .returning(*RUN.c)
        )
        row = self._write(lambda c: c.execute(statement).first())
        return RunRecord.from_row(row) if row is not None else None

    def end_unserved(self, run_id: str, status: RunStatus, error: str) -> bool:
        """End an unfinished run that no execution holds (``runs cancel --no-compensation``)."""
        now = self.clock.now()
        statement = (
            update(RUN)
            .where(
                RUN.c.id == run_id,
                or_(RUN.c.status.in_((PENDING, WAITING)), and_(RUN.c.status == RUNNING, RUN.c.lease_until < now)),
            )
            .values(
                status=status.value,
                error=_text(error),
                finished_at=now,
                updated_at=now,
                lease_until=None,
                lease_owner=None,
                wake_at=None,
                progress_note=None,
            )
        )

        def end(c: Connection) -> bool:
            if not c.execute(statement).rowcount:
                return False
            self._close_steps(c, run_id, f"the run was {status.value}", now)
            return True

        return self._write(end)

    def wake_now(self, run_id: str) -> None:
        """A waiting run is due now (``runs resume``)."""
        now = self.clock.now()
        self._write(
            lambda c: c.execute(
                update(RUN).where(RUN.c.id == run_id, RUN.c.status == WAITING).values(wake_at=now, updated_at=now)
            )
        )

    def wake_publisher(self, envelope_id: str) -> list[RunRecord]:
        """The waiting runs of ``envelope_id``, made due now: one of the envelopes they published
        has a run that moved on (a coordinator waits for its children this way, not by polling)."""
        now = self.clock.now()
        statement = (
            update(RUN)
            .where(RUN.c.envelope_id == envelope_id, RUN.c.status == WAITING, RUN.c.wake_at > now)
            .values(wake_at=now, updated_at=now)
            .returning(*RUN.c)
        )
        return [RunRecord.from_row(row) for row in self._write(lambda c: c.execute(statement).all())]

    def requeue(self, run_id: str) -> None:
        """A dead run replayed from the dead-letter queue runs again, with a fresh retry budget."""
        now = self.clock.now()
        self._write(
            lambda c: c.execute(
                update(RUN)
                .where(RUN.c.id == run_id, RUN.c.status == RunStatus.DEAD.value)
                .values(
                    status=PENDING,
                    attempts=RUN.c.attempts + 1,
                    retry_base=RUN.c.attempts,
                    finished_at=None,
                    wake_at=now,
                    updated_at=now,
                    lease_until=None,
                    lease_owner=None,
                )
            )
        )

    def overdue_runs(
        self, handlers: Iterable[str], cutoff: datetime, cloud: str | None, limit: int = 500
    ) -> list[RunRecord]:
        """Unfinished runs of ``handlers`` that nothing has moved since ``cutoff``: pending or
        waiting runs due before it, running runs whose lease lapsed before it. Runs of another
        cloud are left alone."""
        names = list(handlers)
        if not names:
            return []
        due = func.coalesce(RUN.c.wake_at, RUN.c.created_at)
        query = (
            select(RUN)
            .where(
                RUN.c.handler.in_(names),
                or_(RUN.c.cloud.is_(None), RUN.c.cloud == cloud),
                or_(RUN.c.redispatched_at.is_(None), RUN.c.redispatched_at < cutoff),
                or_(
                    and_(RUN.c.status.in_((PENDING, WAITING)), due < cutoff),
                    and_(RUN.c.status == RUNNING, RUN.c.lease_until < cutoff),
                ),
            )
            .order_by(due)
            .limit(limit)
        )
        return self._read(lambda c: [RunRecord.from_row(row) for row in c.execute(query)])

    def settled(self, seconds: float) -> bool:
        """The database has been reachable (as far as this process saw) for at least ``seconds``."""
        return self._outage.settled(seconds)

    def mark_redispatched(self, run: RunRecord, cutoff: datetime) -> bool:
        """Take the right to send ``run`` a message (one reconciler wins); False if it moved meanwhile."""
        statement = (
            update(RUN)
            .where(
                RUN.c.id == run.id,
                RUN.c.status == run.status.value,
                RUN.c.wake == run.wake,
                or_(RUN.c.redispatched_at.is_(None), RUN.c.redispatched_at < cutoff),
            )
            .values(redispatched_at=self.clock.now())
        )
        return bool(self._write(lambda c: c.execute(statement).rowcount))

    # -- steps -----------------------------------------------------------------------

    def start_step(self, run_id: str, attempt: int, name: str, target: str | None) -> int:
        statement = insert(STEP).values(
            run_id=run_id,
            attempt=attempt,
            name=name,
            target=target,
            status=StepStatus.RUNNING.value,
            started_at=self.clock.now(),
            detail="{}",
        )
        return self._write(lambda c: _inserted_id(c, statement))

    def resume_step(self, step_id: int) -> None:
        """A waiting step goes on (its run woke and came back to it)."""
        statement = update(STEP).where(STEP.c.id == step_id).values(status=StepStatus.RUNNING.value)
        self._write(lambda c: c.execute(statement))

    def park_step(self, step_id: int, detail: dict[str, Any]) -> None:
        """Its run suspended inside the step: ``waiting``, with what it saw so far; not over."""
        statement = (
            update(STEP).where(STEP.c.id == step_id).values(status=StepStatus.WAITING.value, detail=_json(detail))
        )
        self._write(lambda c: c.execute(statement))

    def finish_step(
        self, step_id: int, status: StepStatus, detail: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        parameters = {
            "b_id": step_id,
            "b_status": status.value,
            "b_now": self.clock.now(),
            "b_detail": _json(detail or {}),
            "b_error": _text(error),
        }
        self._write(lambda c: c.execute(_FINISH_STEP, parameters))

    def record_step(
        self,
        run_id: str,
        attempt: int,
        name: str,
        target: str | None,
        *,
        status: str,
        started_at: datetime,
        finished_at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> int:
        """A step already over, whose start an earlier attempt saw (e.g. a migration followed
        through continuations): one write, with its real start and duration."""
        statement = insert(STEP).values(
            self._step_values(
                run_id,
                attempt,
                name,
                target,
                status=status,
                started_at=started_at,
                finished_at=finished_at,
                detail=detail,
                error=error,
            )
        )
        return self._write(lambda c: _inserted_id(c, statement))

    def _step_values(
        self,
        run_id: str,
        attempt: int,
        name: str,
        target: str | None = None,
        *,
        status: str = StepStatus.SUCCEEDED.value,
        started_at: datetime,
        finished_at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "attempt": attempt,
            "name": name,
            "target": target,
            "status": str(status),
            "started_at": started_at,
            "finished_at": finished_at or self.clock.now(),
            "detail": _json(detail or {}),
            "error": _text(error),
        }

    def waiting_steps(self, run_id: str) -> list[WaitingStep]:
        """The steps a run suspended inside, oldest first."""
        query = (
            select(STEP.c.id, STEP.c.name, STEP.c.target, STEP.c.started_at, STEP.c.detail)
            .where(STEP.c.run_id == run_id, STEP.c.status == StepStatus.WAITING.value)
            .order_by(STEP.c.id)
        )
        return self._read(
            lambda c: [
                WaitingStep(r.id, r.name, r.target, r.started_at, json.loads(r.detail or "{}"))
                for r in c.execute(query)
            ]
        )

    @staticmethod
    def _close_steps(c: Connection, run_id: str, why: str, now: datetime) -> None:
        c.execute(
            update(STEP)
            .where(STEP.c.run_id == run_id, STEP.c.status.in_((StepStatus.RUNNING.value, StepStatus.WAITING.value)))
            .values(status=StepStatus.INTERRUPTED.value, finished_at=now, error=_text(why))
        )

    # -- reading runs ------------------------------------------------------------------

    def find_run(self, envelope_id: str, handler: str) -> RunRecord | None:
        row = self._read(lambda c: self._busy.run_by_key.first(c, {"b_envelope": envelope_id, "b_handler": handler}))
        return RunRecord.from_row(row) if row is not None else None

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._read(lambda c: c.execute(select(RUN).where(RUN.c.id == run_id)).first())
        return RunRecord.from_row(row) if row is not None else None

    def unfinished_runs(
        self, *, correlation_id: str | None = None, ids: Iterable[str] | None = None
    ) -> list[RunRecord]:
        """Runs not over yet (of one correlation, or among ``ids``, or all), oldest first."""
        query = select(RUN).where(RUN.c.status.not_in(FINAL_STATUSES))
        if correlation_id is not None:
            query = query.where(RUN.c.correlation_id == correlation_id)
        if ids is not None:
            query = query.where(RUN.c.id.in_(list(ids)))
        return self._read(lambda c: [RunRecord.from_row(row) for row in c.execute(query.order_by(RUN.c.created_at))])

    def active_runs(self, handler: str, subject: str) -> list[RunRecord]:
        """Runs of ``handler`` about ``subject`` not yet finished, oldest first."""
        query = (
            select(RUN)
            .where(RUN.c.handler == handler, RUN.c.subject == subject, RUN.c.status.not_in(FINAL_STATUSES))
            .order_by(RUN.c.created_at, RUN.c.id)
        )
        return self._read(lambda c: [RunRecord.from_row(row) for row in c.execute(query)])

    def outcomes(self, envelope_ids: list[str]) -> dict[str, list[RunRecord]]:
        """The runs of each envelope (any handler), for handlers that follow what they caused."""
        found: dict[str, list[RunRecord]] = {e: [] for e in envelope_ids}
        if envelope_ids:
            rows = self._read(lambda c: list(c.execute(select(RUN).where(RUN.c.envelope_id.in_(envelope_ids)))))
            for row in rows:
                found[row.envelope_id].append(RunRecord.from_row(row))
        return found

    def probe(self) -> str:
        """One query, for ``doctor`` (the schema was brought up to date when the log was opened)."""
        with self.engine.connect() as c:
            c.execute(select(1))
        return "reachable, schema up to date"

    # -- who serves which handler ----------------------------------------------------------

    def register_subscriptions(self, owner: str, served: list[Served], bus: str = "") -> None:
        """This process serves these handlers on ``bus`` (see :func:`~stackreflex.bus.connections.bus_identity`)."""
        now = self.clock.now()
        rows = [
            {
                "owner": owner,
                "bus": bus,
                "handler": s.handler,
                "patterns": json.dumps(list(s.patterns)),
                "filtered": s.filtered,
                "started_at": now,
                "heartbeat_at": now,
            }
            for s in served
        ]

        def register(c: Connection) -> None:
            c.execute(delete(SUBSCRIPTION).where(SUBSCRIPTION.c.owner == owner))
            if rows:
                c.execute(insert(SUBSCRIPTION), rows)

        self._write(register)

    def renew_subscriptions(self, owner: str) -> None:
        now = self.clock.now()
        self._write(
            lambda c: c.execute(update(SUBSCRIPTION).where(SUBSCRIPTION.c.owner == owner).values(heartbeat_at=now))
        )

    def drop_subscriptions(self, owner: str) -> None:
        """A stopping process: it waits for the database briefly (its subscriptions lapse anyway)."""
        self._write(lambda c: c.execute(delete(SUBSCRIPTION).where(SUBSCRIPTION.c.owner == owner)), limit=5.0)

    def served_handlers(self, since: datetime) -> dict[str, int]:
        """Handler → how many processes that heartbeat since ``since`` serve it."""
        query = (
            select(SUBSCRIPTION.c.handler, func.count())
            .where(SUBSCRIPTION.c.heartbeat_at >= since)
            .group_by(SUBSCRIPTION.c.handler)
        )
        # the rows, as pairs: a result has keys(), so dict() of the result itself reads it as a mapping
        return self._read(lambda c: dict(c.execute(query).all()))

    def live_subscriptions(self, bus: str, since: datetime) -> list[Served]:
        """The handlers served on ``bus`` by processes that heartbeat since ``since``, one entry
        per handler (processes serving one name serve the same patterns, or the newest one's count)."""
        query = (
            select(SUBSCRIPTION.c.handler, SUBSCRIPTION.c.patterns, SUBSCRIPTION.c.filtered)
            .where(SUBSCRIPTION.c.bus == bus, SUBSCRIPTION.c.heartbeat_at >= since)
            .order_by(SUBSCRIPTION.c.started_at)
        )
        # One try: a router keeps what it last read rather than wait out an outage here (its
        # accept waits, and keeps its broker connection alive meanwhile).
        rows = self._read(lambda c: list(c.execute(query)), limit=0)
        return list({h: Served(h, tuple(json.loads(p)), bool(f)) for h, p, f in rows}.values())

    # -- watcher cursors ---------------------------------------------------------------

    def cursor(self, stack: str) -> str | None:
        """The id of the last Heat event published for ``stack``."""
        return self._read(lambda c: c.execute(select(CURSOR.c.last_event_id).where(CURSOR.c.stack == stack)).scalar())

    def save_cursor(self, stack: str, event_id: str) -> None:
        now = self.clock.now()

        def save(c: Connection) -> None:
            if not c.execute(
                update(CURSOR).where(CURSOR.c.stack == stack).values(last_event_id=event_id, updated_at=now)
            ).rowcount:
                c.execute(insert(CURSOR), [{"stack": stack, "last_event_id": event_id, "updated_at": now}])

        self._write(save)
