"""The audit log's write API: envelopes, runs (with claims, leases and continuations) and steps.

Every value written passes through :func:`stackreflex.redaction.redact` here, so no
caller can put a secret into a table by forgetting to.

These writes sit on the path of every event, so they are SQLAlchemy Core statements
built once with bound parameters (building a statement per call, or going through the
ORM, cost several times the database work itself); those of the accept, the claim and
the run updates are also compiled once and run on the driver (:mod:`.prepared`). Runs
are returned as read-only rows of the ``run`` table.
"""

import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Hashable, Iterable, Iterator

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ..bus.envelope import Envelope
from ..clock import utcnow
from ..redaction import redact, redact_text
from .database import make_engine, migrate
from .group_commit import GroupCommit, T, Write
from .prepared import Prepared
from .tables import FINAL_STATUSES, EnvelopeRecord, Run, Step, WatcherCursor

#: With checkpoints deferred (:meth:`AuditLog.defer_checkpoints`), the WAL size (pages) at
#: which a write checkpoints after all (SQLite's default is 1,000).
DEFERRED_AUTOCHECKPOINT_PAGES = 10_000
#: The size a WAL file is cut back to when it restarts (bytes), so a burst does not leave it large.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: How much of a rejected message body is kept for the post-mortem.
RAW_EXCERPT_CHARS = 4000

RUN = Run.__table__
STEP = Step.__table__
ENVELOPE = EnvelopeRecord.__table__
CURSOR = WatcherCursor.__table__


def _json(value: Any) -> str:
    return json.dumps(redact(value), default=str, sort_keys=True)


def _text(value: str | None) -> str | None:
    return None if value is None else redact_text(value)


#: A run as read from the database: a read-only row with attribute access to the columns of
#: :class:`Run` (a named tuple from the busy path's statements, a Core row from other reads).
RunRow = Any

#: Claim a run for one attempt: pending, waiting for this wake-up, or running under a lapsed lease.
_CLAIM = update(RUN).where(
    RUN.c.envelope_id == bindparam("b_envelope"), RUN.c.handler == bindparam("b_handler"),
    RUN.c.wake == bindparam("b_wake"),
    or_(RUN.c.status == "pending", RUN.c.status == "waiting",
        and_(RUN.c.status == "running", RUN.c.lease_until < bindparam("b_now"))),
).values(status="running", attempts=RUN.c.attempts + 1, lease_owner=bindparam("b_owner"),
         lease_until=bindparam("b_lease_until"), updated_at=bindparam("b_now"),
         started_at=func.coalesce(RUN.c.started_at, bindparam("b_now"))).returning(*RUN.c)
_RUN_BY_KEY = select(RUN).where(RUN.c.envelope_id == bindparam("b_envelope"), RUN.c.handler == bindparam("b_handler"))
_INTERRUPT_STEPS = update(STEP).where(
    STEP.c.run_id == bindparam("b_run"), STEP.c.status == "running", STEP.c.attempt < bindparam("b_attempt"),
).values(status="interrupted", finished_at=bindparam("b_now"),
         error="the worker running this step stopped before it finished")
_FINISH_STEP = update(STEP).where(STEP.c.id == bindparam("b_id")).values(
    status=bindparam("b_status"), finished_at=bindparam("b_now"), detail=bindparam("b_detail"),
    error=bindparam("b_error"))
#: The columns an accepted envelope and a new run are inserted with.
_ENVELOPE_COLUMNS = ("envelope_id", "status", "reason", "type", "subject", "source", "correlation_id",
                     "causation_id", "actor", "time", "received_at", "payload")
_NEW_RUN_COLUMNS = ("id", "envelope_id", "handler", "type", "subject", "correlation_id", "status", "attempts",
                    "wake", "state", "created_at", "updated_at")


class _BusyStatements:
    """The statements on the path of every event, prepared for the engine's dialect the
    first time each is used (a CLI reading the log never pays for them)."""

    def __init__(self, dialect):
        self.dialect = dialect
        self._prepared: dict[Hashable, Prepared] = {}

    def _get(self, key: Hashable, build: Callable[[], Any], columns: Iterable[str] | None = None) -> Prepared:
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
    def interrupt_steps(self) -> Prepared:
        return self._get("interrupt_steps", lambda: _INTERRUPT_STEPS)

    @property
    def insert_envelopes(self) -> Prepared:
        return self._get("insert_envelopes", lambda: insert(ENVELOPE), _ENVELOPE_COLUMNS)

    @property
    def insert_runs(self) -> Prepared:
        return self._get("insert_runs", lambda: insert(RUN), _NEW_RUN_COLUMNS)

    def update_run(self, columns: tuple[str, ...]) -> Prepared:
        """``UPDATE run SET <columns> WHERE id = :b_id``, one per set of columns."""
        return self._get(("update_run", columns), lambda: update(RUN).where(RUN.c.id == bindparam("b_id")).values(
            {name: bindparam(f"b_{name}") for name in columns}))

    def _rows_for_ids(self, c: Connection, name: str, build: Callable[[list], Any], ids: list[str]) -> list:
        """Rows of a statement over a list of ids, padded to a power of two so that a few
        prepared variants cover any batch."""
        size = 1 << max(len(ids) - 1, 0).bit_length()
        padded = ids + ids[-1:] * (size - len(ids))
        statement = self._get((name, size), lambda: build([bindparam(f"b_id{i}") for i in range(size)]))
        return statement.rows(c, {f"b_id{i}": value for i, value in enumerate(padded)})

    def accepted_among(self, c: Connection, ids: list[str]) -> set[str]:
        """Which of ``ids`` were accepted before."""
        rows = self._rows_for_ids(c, "accepted_among", lambda binds: select(ENVELOPE.c.envelope_id).distinct().where(
            ENVELOPE.c.envelope_id.in_(binds), ENVELOPE.c.status == "accepted"), ids)
        return {row.envelope_id for row in rows}

    def runs_of(self, c: Connection, ids: list[str]) -> list:
        """The runs of the envelopes ``ids``: envelope_id, id, handler, status, attempts."""
        return self._rows_for_ids(c, "runs_of", lambda binds: select(
            RUN.c.envelope_id, RUN.c.id, RUN.c.handler, RUN.c.status, RUN.c.attempts
        ).where(RUN.c.envelope_id.in_(binds)), ids)


@dataclass(frozen=True)
class Claim:
    """The answer to "may this message run the handler now?"."""

    run: RunRow | None
    #: why not: ``missing``, ``finished``, ``busy`` (another worker holds a live lease),
    #: ``stale`` (an old wake-up) or ``early`` (a wake-up that overtook the parking of its run)
    refused: str | None = None

    @property
    def granted(self) -> bool:
        return self.refused is None


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


class AuditLog:
    """Reads and writes the audit tables through one engine.

    Writes go through :class:`GroupCommit`: the threads of one process take turns at
    the database, and the writes that wait while one transaction commits share the
    next. On SQLite, which has one writer anyway, they run on one kept connection
    (checking one out of the pool for each write cost a quarter of the write).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._kept: Connection | None = None
        self._checkpoints_deferred = False
        self._commits = GroupCommit(self._transaction)
        self._busy = _BusyStatements(engine.dialect)

    @classmethod
    def open(cls, url: str) -> "AuditLog":
        """Connect to ``url`` and bring its schema up to date."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    def session(self) -> Session:
        """A session for reading."""
        return Session(self.engine, expire_on_commit=False)

    def _write(self, work: Write[T]) -> T:
        """Run ``work(connection)`` in a write transaction; return its result once committed."""
        return self._commits.run(work)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction for :class:`GroupCommit`, which holds its writer while it lasts."""
        if not self._sqlite:
            with self.engine.begin() as connection:
                yield connection
            return
        if self._kept is None or self._kept.invalidated:
            self._kept = self.engine.connect()
            if self._checkpoints_deferred:
                self._defer_checkpoints_on(self._kept)
        with self._kept.begin():
            yield self._kept

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
        with self._commits.exclusive():
            self._checkpoints_deferred = True
            if self._kept is not None and not self._kept.invalidated:
                self._defer_checkpoints_on(self._kept)
        return True

    @staticmethod
    def _defer_checkpoints_on(connection: Connection) -> None:
        driver = connection.connection.dbapi_connection
        driver.execute(f"PRAGMA wal_autocheckpoint={DEFERRED_AUTOCHECKPOINT_PAGES}")
        driver.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")

    def checkpoint(self) -> None:
        """Copy what the WAL holds back into the database file, without waiting for readers or
        writers (SQLite's PASSIVE checkpoint); the WAL restarts from its beginning once all of
        it is copied."""
        with self.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # -- envelopes -------------------------------------------------------------------

    @staticmethod
    def _envelope_values(envelope: Envelope, status: str, now: datetime) -> dict:
        return dict(status=status, reason=None, received_at=now, payload=_json(envelope.to_dict()),
                    envelope_id=envelope.id, type=envelope.type, subject=envelope.subject,
                    source=envelope.source, correlation_id=envelope.correlationid,
                    causation_id=envelope.causationid, actor=envelope.actor, time=envelope.time)

    def record_envelope(self, envelope: Envelope | None, *, status: str,
                        reason: str | None = None, raw: bytes | str | None = None,
                        envelope_id: str | None = None) -> None:
        """Record an envelope as ``accepted``, ``duplicate`` or ``rejected`` (with its reason)."""
        if envelope is not None:
            values = self._envelope_values(envelope, status, utcnow())
        else:
            text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else (raw or "")
            values = dict(status=status, received_at=utcnow(), envelope_id=envelope_id,
                          payload=redact_text(text[:RAW_EXCERPT_CHARS]))
        self._write(lambda c: c.execute(insert(ENVELOPE), [{**values, "reason": _text(reason)}]))

    def accept_many(self, batch: list[tuple[Envelope, list[str]]]) -> list[Accepted]:
        """Record valid envelopes and make sure each handler has its run, in one transaction
        (the router's busy path: one commit for a batch, not one per envelope).

        ``duplicate`` is true when an envelope was accepted before (a redelivery or a
        second publish); its runs are then the existing ones.
        """
        now = utcnow()
        prepared = [(envelope, handlers, self._envelope_values(envelope, "accepted", now))
                    for envelope, handlers in batch]
        for attempt in range(3):  # another router may insert the same runs at the same time
            try:
                return self._write(lambda c: self._accept(c, prepared, now))
            except IntegrityError:
                if attempt == 2:
                    raise

    def _accept(self, c: Connection, prepared: list[tuple[Envelope, list[str], dict]], now: datetime) -> list[Accepted]:
        ids = list({envelope.id: None for envelope, _, _ in prepared})
        seen = self._busy.accepted_among(c, ids)
        existing: dict[str, dict[str, RunRef]] = {}
        for row in self._busy.runs_of(c, list(seen)) if seen else ():
            existing.setdefault(row.envelope_id, {})[row.handler] = RunRef(row.id, row.status, row.attempts, False)
        envelopes, new_runs, answers = [], [], []
        for envelope, handlers, values in prepared:
            duplicate = envelope.id in seen  # also the second copy of one envelope in this batch
            seen.add(envelope.id)
            envelopes.append({**values, "status": "duplicate" if duplicate else "accepted"})
            runs = existing.setdefault(envelope.id, {})
            for name in handlers:
                if name not in runs:
                    run = self._run_values(envelope, name, now)
                    new_runs.append(run)
                    runs[name] = RunRef(run["id"], "pending", 0, True)
            answers.append(Accepted(duplicate, {name: runs[name] for name in handlers}))
        self._busy.insert_envelopes.execute(c, envelopes)
        if new_runs:
            self._busy.insert_runs.execute(c, new_runs)
        return answers

    @staticmethod
    def _run_values(envelope: Envelope, handler: str, now: datetime) -> dict:
        return dict(id=str(uuid.uuid4()), envelope_id=envelope.id, handler=handler, type=envelope.type,
                    subject=envelope.subject, correlation_id=envelope.correlationid, status="pending",
                    attempts=0, wake=0, state="{}", created_at=now, updated_at=now)

    # -- runs ------------------------------------------------------------------------

    def ensure_run(self, envelope: Envelope, handler: str) -> tuple[RunRow, bool]:
        """Get the run for (envelope, handler), creating it ``pending``; True if created."""
        values = self._run_values(envelope, handler, utcnow())
        try:
            self._write(lambda c: c.execute(insert(RUN), [values]))
            created = True
        except IntegrityError:
            created = False
        return self.find_run(envelope.id, handler), created

    def find_run(self, envelope_id: str, handler: str) -> RunRow | None:
        with self.engine.connect() as c:
            return self._busy.run_by_key.first(c, {"b_envelope": envelope_id, "b_handler": handler})

    def _update_run(self, run_id: str, **values) -> int:
        values.setdefault("updated_at", utcnow())
        statement = self._busy.update_run(tuple(sorted(values)))
        parameters = {"b_id": run_id, **{f"b_{k}": v for k, v in values.items()}}
        return self._write(lambda c: statement.execute(c, parameters))

    def claim(self, envelope_id: str, handler: str, *, wake: int, owner: str,
              lease_seconds: float) -> Claim:
        """Atomically take a run to ``running`` for one attempt, or say why not.

        A run can be taken when it is pending or waiting for this wake-up, or when it is
        running under a lease that lapsed (its worker died: its open steps become
        ``interrupted``).
        """
        now = utcnow()
        key = {"b_envelope": envelope_id, "b_handler": handler}
        claiming = {**key, "b_wake": wake, "b_now": now, "b_owner": owner,
                    "b_lease_until": now + timedelta(seconds=lease_seconds)}

        busy = self._busy

        def take(c: Connection) -> tuple[RunRow | None, bool]:
            run = busy.claim.first(c, claiming)
            if run is None:
                return busy.run_by_key.first(c, key), False
            if run.attempts > 1:
                busy.interrupt_steps.execute(c, {"b_run": run.id, "b_attempt": run.attempts, "b_now": now})
            return run, True

        run, taken = self._write(take)
        if run is None:
            return Claim(None, "missing")
        if taken:
            return Claim(run)
        if run.status in FINAL_STATUSES:
            return Claim(run, "finished")
        if run.wake > wake:
            return Claim(run, "stale")
        if run.wake < wake:
            return Claim(run, "early")  # its wake-up was sent just before the run was parked
        return Claim(run, "busy")

    def heartbeat(self, run_ids: Iterable[str], owner: str, lease_seconds: float) -> None:
        """Extend the leases this worker holds on its running runs."""
        ids = list(run_ids)
        if ids:
            statement = update(RUN).where(RUN.c.id.in_(ids), RUN.c.status == "running", RUN.c.lease_owner == owner
                                          ).values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            self._write(lambda c: c.execute(statement))

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run: ``succeeded``, ``failed``, ``dead`` or ``skipped``."""
        now = utcnow()
        self._update_run(run_id, status=status, error=_text(error), finished_at=now,
                         lease_until=None, lease_owner=None, wake_at=None, updated_at=now)

    def release_for_retry(self, run_id: str, error: str) -> None:
        """An attempt failed and dramatiq will retry it: back to ``pending`` with the error."""
        self._update_run(run_id, status="pending", error=_text(error), lease_until=None, lease_owner=None)

    def suspend(self, run_id: str, *, wake: int, wake_at: datetime, deadline: datetime | None,
                waiting_for: str, state: dict) -> None:
        """Park a run as ``waiting`` until ``wake_at``, answering only wake-up ``wake``."""
        self._update_run(run_id, wake=wake, status="waiting", wake_at=wake_at, deadline=deadline,
                         waiting_for=_text(waiting_for), state=_json(state), lease_until=None, lease_owner=None)

    def requeue(self, run_id: str) -> None:
        """A dead run replayed from the dead-letter queue may run again."""
        self._update_run(run_id, status="pending", finished_at=None, lease_until=None, lease_owner=None)

    def save_state(self, run_id: str, state: dict, steps: Iterable[dict] = ()) -> None:
        """Save a handler's state, with the steps (over already) that it accounts for, in one
        transaction: a worker dying in between must not leave steps the state does not know."""
        values = [self._step_values(run_id, **step) for step in steps]
        statement = self._busy.update_run(("state", "updated_at"))
        parameters = {"b_id": run_id, "b_state": _json(state), "b_updated_at": utcnow()}

        def save(c: Connection) -> None:
            if values:
                c.execute(insert(STEP), values)
            statement.execute(c, parameters)

        self._write(save)

    def set_progress(self, run_id: str, done: int, total: int | None, note: str | None) -> None:
        self._update_run(run_id, progress_done=done, progress_total=total, progress_note=_text(note))

    # -- steps -----------------------------------------------------------------------

    def start_step(self, run_id: str, attempt: int, name: str, target: str | None) -> int:
        statement = insert(STEP).values(run_id=run_id, attempt=attempt, name=name, target=target,
                                        status="running", started_at=utcnow(), detail="{}")
        return self._write(lambda c: c.execute(statement).inserted_primary_key[0])

    def finish_step(self, step_id: int, status: str, detail: dict | None = None,
                    error: str | None = None) -> None:
        parameters = {"b_id": step_id, "b_status": status, "b_now": utcnow(), "b_detail": _json(detail or {}),
                      "b_error": _text(error)}
        self._write(lambda c: c.execute(_FINISH_STEP, parameters))

    def record_step(self, run_id: str, attempt: int, name: str, target: str | None, *, status: str,
                    started_at: datetime, finished_at: datetime | None = None, detail: dict | None = None,
                    error: str | None = None) -> int:
        """A step already over, whose start an earlier attempt saw (e.g. a migration followed
        through continuations): one write, with its real start and duration."""
        statement = insert(STEP).values(self._step_values(
            run_id, attempt, name, target, status=status, started_at=started_at, finished_at=finished_at,
            detail=detail, error=error))
        return self._write(lambda c: c.execute(statement).inserted_primary_key[0])

    @staticmethod
    def _step_values(run_id: str, attempt: int, name: str, target: str | None = None, *,
                     status: str = "succeeded", started_at: datetime, finished_at: datetime | None = None, detail: dict | None = None,
                     error: str | None = None) -> dict:
        return dict(run_id=run_id, attempt=attempt, name=name, target=target, status=status, started_at=started_at,
                    finished_at=finished_at or utcnow(), detail=_json(detail or {}), error=_text(error))

    def active_runs(self, handler: str, subject: str) -> list[RunRow]:
        """Runs of ``handler`` about ``subject`` not yet finished, oldest first."""
        with self.engine.connect() as c:
            return list(c.execute(select(RUN).where(
                RUN.c.handler == handler, RUN.c.subject == subject, RUN.c.status.not_in(FINAL_STATUSES)
            ).order_by(RUN.c.created_at, RUN.c.id)))

    def outcomes(self, envelope_ids: list[str]) -> dict[str, list[RunRow]]:
        """The runs of each envelope (any handler), for handlers that follow what they caused."""
        found: dict[str, list[RunRow]] = {e: [] for e in envelope_ids}
        if envelope_ids:
            with self.engine.connect() as c:
                for row in c.execute(select(RUN).where(RUN.c.envelope_id.in_(envelope_ids))):
                    found[row.envelope_id].append(row)
        return found

    # -- watcher cursors ---------------------------------------------------------------

    def cursor(self, stack: str) -> str | None:
        """The id of the last Heat event published for ``stack``."""
        with self.engine.connect() as c:
            return c.execute(select(CURSOR.c.last_event_id).where(CURSOR.c.stack == stack)).scalar()

    def save_cursor(self, stack: str, event_id: str) -> None:
        now = utcnow()

        def save(c: Connection) -> None:
            if not c.execute(update(CURSOR).where(CURSOR.c.stack == stack).values(
                    last_event_id=event_id, updated_at=now)).rowcount:
                c.execute(insert(CURSOR), [{"stack": stack, "last_event_id": event_id, "updated_at": now}])

        self._write(save)
