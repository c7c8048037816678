"""The audit log on SQLite and PostgreSQL: migrations, run uniqueness, claims and leases, redaction."""

import ctypes
import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from stackreflex.core.clock import utcnow
from stackreflex.core.envelope import Envelope
from stackreflex.core.records import ClaimRefusal, RunRecord
from stackreflex.core.registry import Registry
from stackreflex.core.settings import Settings
from stackreflex.models.audit import AuditLog
from stackreflex.models.database import make_engine, migrate
from stackreflex.models.group_commit import GroupCommit
from stackreflex.models.outage import AFTERSHOCK, OutageGuard
from stackreflex.models.prepared import Prepared
from stackreflex.models.queries import RunFilter, list_envelopes, list_runs, parse_since, run_with_steps
from stackreflex.models.tables import EnvelopeRecord, Run, RunStatus, StepStatus, WatcherCursor
from stackreflex.runtime import Runtime
from stackreflex.testing import FakeClock

from .conftest import wait_for


def new_run(audit: AuditLog, envelope: Envelope, handler: str) -> RunRecord:
    """The run (envelope, handler), made as the router makes it."""
    [accepted] = audit.accept_many([(envelope, [handler])])
    return audit.get_run(accepted.runs[handler].id)


def end_run(audit: AuditLog, envelope: Envelope, handler: str, status: RunStatus, error: str | None = None) -> None:
    """Claim the run and end it, as an execution does."""
    claim = audit.claim(
        envelope.id, handler, wake=audit.find_run(envelope.id, handler).wake, token="ender", lease_seconds=5
    )
    assert claim.granted and audit.finish(claim.run.id, "ender", status, error)


def test_migrations_create_the_schema_and_are_idempotent(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)
    tables = set(inspect(engine).get_table_names())
    assert {
        "envelope",
        "run",
        "step",
        "watcher_cursor",
        "subscription",
        "installation_secret",
        "alembic_version",
    } <= tables
    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0007"
    assert "ix_run_subject_created" in {i["name"] for i in inspect(engine).get_indexes("run")}
    assert {i["name"] for i in inspect(engine).get_indexes("envelope")} == {
        "ix_envelope_envelope_id",
        "ix_envelope_correlation",
        "ix_envelope_subject_received",
        "ix_envelope_rejected_digest",
    }


def test_a_run_is_unique_per_envelope_and_handler(database_url):
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("test.record", subject="n1")
    [first] = audit.accept_many([(envelope, ["note"])])
    [again] = audit.accept_many([(envelope, ["note", "other"])])
    assert first.runs["note"].created and not again.runs["note"].created and again.runs["other"].created
    assert first.runs["note"].id == again.runs["note"].id != again.runs["other"].id
    try:
        with audit.engine.begin() as c:
            c.execute(insert(Run.__table__), [{**AuditLog._run_values(envelope, "note", utcnow(), None), "id": "x"}])
    except IntegrityError:
        pass
    else:
        raise AssertionError("a second run for (envelope, handler) was accepted")


def test_claims_serialise_executions_and_a_lapsed_lease_is_a_new_attempt_that_fences_the_old_one(database_url):
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("test.record")
    run = new_run(audit, envelope, "note")
    first = audit.claim(envelope.id, "note", wake=0, token="w1", lease_seconds=0.5)
    assert first.granted and first.run.attempts == 1
    step = audit.start_step(run.id, 1, "long call", "node-1")
    busy = audit.claim(envelope.id, "note", wake=0, token="w2", lease_seconds=0.5)
    assert busy.refused is ClaimRefusal.BUSY
    time.sleep(0.7)  # w1 stops heartbeating: its lease lapses
    second = audit.claim(envelope.id, "note", wake=0, token="w2", lease_seconds=5)
    assert second.granted and second.run.attempts == 2
    steps = run_with_steps(audit, run.id)["steps"]
    assert [(s["id"], s["status"]) for s in steps] == [(step, "interrupted")]
    # w1 comes back: whatever it writes under its old lease changes nothing
    assert not audit.save_state(run.id, "w1", {"late": True}).held
    assert not audit.finish(run.id, "w1", RunStatus.FAILED, "too late")
    assert not audit.heartbeat({run.id: "w1"}, 5)[run.id].held
    assert audit.finish(run.id, "w2", RunStatus.SUCCEEDED)
    done = audit.get_run(run.id)
    assert (done.status, done.state, done.lease_owner) == ("succeeded", "{}", None)
    assert audit.claim(envelope.id, "note", wake=0, token="w3", lease_seconds=5).refused is ClaimRefusal.FINISHED


def test_heartbeats_keep_a_lease_alive_and_carry_a_cancel_to_the_execution(database_url):
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("test.record")
    run = new_run(audit, envelope, "note")
    audit.claim(envelope.id, "note", wake=0, token="w1", lease_seconds=0.5)
    for _ in range(4):
        time.sleep(0.25)
        assert audit.heartbeat({run.id: "w1"}, 0.5)[run.id].held
    assert audit.claim(envelope.id, "note", wake=0, token="w2", lease_seconds=1).refused is ClaimRefusal.BUSY
    assert audit.request_cancel(run.id, "window closed").status == "running"
    fence = audit.heartbeat({run.id: "w1"}, 0.5)[run.id]
    assert fence.held and fence.cancel_reason == "window closed"


def test_wake_ups_only_claim_their_own_generation_and_wakes_are_not_attempts(database_url):
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("test.wait")
    run = new_run(audit, envelope, "wait")
    audit.claim(envelope.id, "wait", wake=0, token="w1", lease_seconds=5)
    assert audit.claim(envelope.id, "wait", wake=1, token="w1", lease_seconds=5).refused is ClaimRefusal.AHEAD
    assert audit.suspend(
        run.id,
        "w1",
        wake=1,
        wake_at=utcnow() + timedelta(hours=1),
        deadline=None,
        wait_key="k",
        waiting_for="node to poll",
        state={"checked": 1},
    )
    assert audit.claim(envelope.id, "wait", wake=0, token="w2", lease_seconds=5).refused is ClaimRefusal.STALE
    assert audit.claim(envelope.id, "wait", wake=1, token="w2", lease_seconds=5).refused is ClaimRefusal.NOT_DUE
    audit.wake_now(run.id)
    claim = audit.claim(envelope.id, "wait", wake=1, token="w2", lease_seconds=5)
    assert claim.granted and claim.run.state == '{"checked": 1}'
    assert (claim.run.attempts, claim.run.wakes, claim.run.wait_key) == (1, 1, "k")


def test_every_write_is_redacted(database_url):
    audit = AuditLog.open(database_url)
    envelope = Envelope.new(
        "test.record", data={"password": "hunter2", "url": "https://s/v1/o?temp_url_sig=SIGSECRET&temp_url_expires=1"}
    )
    audit.record_envelope(envelope, status="accepted")
    audit.record_rejection(b'{"password": "hunter2"', "test.record", "bad token=TOKSECRET")
    run = new_run(audit, envelope, "note")
    audit.claim(envelope.id, "note", wake=0, token="w", lease_seconds=5)
    step = audit.start_step(run.id, 1, "fetch", "node")
    audit.finish_step(step, StepStatus.FAILED, {"X-Auth-Token": "TOKSECRET"}, "GET ?temp_url_sig=SIGSECRET failed")
    audit.suspend(
        run.id,
        "w",
        wake=1,
        wake_at=utcnow(),
        deadline=None,
        wait_key="x",
        waiting_for="x",
        state={"token": "TOKSECRET"},
    )
    audit.request_cancel(run.id, "the password=hunter2 expired")
    end_run(audit, envelope, "note", RunStatus.FAILED, "password=hunter2 refused")
    with audit.engine.connect() as c:
        dump = " ".join(
            str(row) for table in ("envelope", "run", "step") for row in c.execute(text(f"select * from {table}"))
        )
    for secret in ("hunter2", "SIGSECRET", "TOKSECRET"):
        assert secret not in dump
    assert "temp_url_sig=***" in dump


def test_run_queries_filter_by_status_handler_subject_and_time(database_url):
    audit = AuditLog.open(database_url)
    a, b = Envelope.new("test.record", subject="compute-0"), Envelope.new("test.record", subject="compute-1")
    ra = new_run(audit, a, "note")
    rb = new_run(audit, b, "note")
    new_run(audit, b, "other")
    end_run(audit, a, "note", RunStatus.FAILED, "boom")
    assert [r["id"] for r in list_runs(audit, RunFilter(status=["failed"]))] == [ra.id]
    assert {r["id"] for r in list_runs(audit, RunFilter(subject="compute-1", handler="note"))} == {rb.id}
    assert len(list_runs(audit, RunFilter(correlation_id=b.correlationid))) == 2
    assert list_runs(audit, RunFilter(since=parse_since("1h"))) and not list_runs(
        audit, RunFilter(since=utcnow() + timedelta(minutes=1))
    )
    assert run_with_steps(audit, ra.id[:8])["error"] == "boom"


def test_many_processes_migrating_one_new_database_at_once_all_succeed(database_url, tmp_path):
    """Workers start together; every one of them migrates, and none may trip over another."""
    import subprocess
    import sys

    code = "import sys; from stackreflex.models.audit import AuditLog; AuditLog.open(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, database_url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert all(status == 0 for status, _ in results), [err for _, err in results if err]


def test_writes_that_wait_share_one_transaction_and_a_failing_write_fails_alone(database_url):
    """Group commit: writes queued while one transaction runs share the next; when one of them
    fails, the others are committed on their own and only its caller sees the error."""
    engine = make_engine(database_url)
    migrate(engine)
    opened = []

    def transaction():
        opened.append(1)
        return engine.begin()

    commits = GroupCommit(transaction)
    cursor = WatcherCursor.__table__
    release = threading.Event()

    def insert(stack: str, wait: bool = False):
        def work(c):
            c.execute(cursor.insert().values(stack=stack, last_event_id=stack, updated_at=utcnow()))
            if wait:
                release.wait(10)
            return stack

        return lambda: commits.run(work)

    def in_threads(*calls):
        outcomes = [None] * len(calls)

        def call(index):
            try:
                outcomes[index] = calls[index]()
            except Exception as exc:
                outcomes[index] = exc

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
        threads[0].start()
        wait_for(lambda: opened, message="the first write's transaction")
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(commits._queue) == len(calls) - 1, message="the others queued behind it")
        release.set()
        for thread in threads:
            thread.join(10)
        return outcomes

    assert in_threads(insert("a", wait=True), insert("b"), insert("c")) == ["a", "b", "c"]
    assert len(opened) == 2  # a's transaction, then one for b and c

    release.clear()
    opened.clear()
    outcome = in_threads(insert("d", wait=True), insert("e"), insert("a"))  # "a" exists: that write fails
    assert outcome[:2] == ["d", "e"] and isinstance(outcome[2], IntegrityError)
    assert len(opened) == 4  # d's; e and a together (rolled back); then e alone and a alone
    with engine.connect() as c:
        assert sorted(c.execute(select(cursor.c.stack)).scalars()) == ["a", "b", "c", "d", "e"]


def _blocked_writer(database_url):
    """A GroupCommit on a real database whose first write holds its transaction open until
    ``release`` is set; ``open_now`` counts the transactions under way."""
    engine = make_engine(database_url)
    migrate(engine)
    open_now, release = [0], threading.Event()

    @contextmanager
    def transaction():
        with engine.begin() as c:
            open_now[0] += 1
            try:
                yield c
            finally:
                open_now[0] -= 1

    commits = GroupCommit(transaction)
    cursor = WatcherCursor.__table__

    def write(stack: str, hold: bool = False):
        def work(c):
            c.execute(cursor.insert().values(stack=stack, last_event_id=stack, updated_at=utcnow()))
            if hold:
                release.wait(10)
            return stack

        return commits.run(work)

    return commits, write, open_now, release


def test_holding_the_writer_waits_for_the_writes_before_it_and_holds_back_those_after(sqlite_url):
    """``exclusive()`` queued behind a write is never carried along with it: it starts once no
    transaction is under way, and a write asked for meanwhile commits after it ends."""
    commits, write, open_now, release = _blocked_writer(sqlite_url)
    seen, done = {}, threading.Event()
    first = threading.Thread(target=write, args=("a", True))
    first.start()
    wait_for(lambda: open_now[0] == 1, message="the first write's transaction")
    queued = threading.Thread(target=write, args=("b",))
    queued.start()
    wait_for(lambda: len(commits._queue) == 1, message="a write queued behind it")

    def hold():
        with commits.exclusive():
            seen["open"] = open_now[0]
            later = threading.Thread(target=write, args=("c",))
            later.start()
            wait_for(lambda: len(commits._queue) == 1, message="a write asked for while held")
            seen["later done"] = not later.is_alive()
            done.set()
        later.join(10)
        seen["later done after"] = not later.is_alive()

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: len(commits._queue) == 2, message="the hold queued behind the write")
    release.set()
    holder.join(20)
    assert done.is_set() and seen == {"open": 0, "later done": False, "later done after": True}
    first.join(10), queued.join(10)


def test_a_writer_interrupted_while_it_waits_leaves_the_writer_free(sqlite_url):
    """A thread stopped by an exception while waiting its turn (dramatiq's time limit raises
    one asynchronously) holds nothing: the writes after it are committed."""
    commits, write, open_now, release = _blocked_writer(sqlite_url)
    first = threading.Thread(target=write, args=("a", True))
    first.start()
    wait_for(lambda: open_now[0] == 1, message="the first write's transaction")
    errors = []

    def interrupted():
        try:
            write("b")
        except TimeoutError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=interrupted)
    waiting.start()
    wait_for(lambda: len(commits._queue) == 1, message="a write queued")
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(waiting.ident), ctypes.py_object(TimeoutError))
    waiting.join(10)
    assert not waiting.is_alive() and len(errors) == 1
    release.set()
    first.join(10)
    assert write("c") == "c" and write("d") == "d"
    assert not commits._leading


def test_prepared_statements_store_and_return_what_core_does_and_raise_what_core_raises(database_url):
    """The busy path runs compiled statements on the driver: the rows it writes and the runs
    it returns must be Core's, time zones included, and its errors Core's kinds."""
    audit = AuditLog.open(database_url)
    dialect = audit.engine.dialect
    envelope = Envelope.new("test.prepared", subject="node-1", data={"password": "hunter2"})
    duplicate = Envelope.model_validate({**envelope.to_dict()})
    batch = [(envelope, ["a", "b"]), (duplicate, ["a", "b"])] + [
        (Envelope.new("test.prepared"), ["a"]) for _ in range(4)
    ]
    first, second, *others = audit.accept_many(batch)  # 6 ids: the id lists are padded to 8
    assert not first.duplicate and second.duplicate and second.runs == first.runs
    assert len({run.id for answer in others for run in answer.runs.values()}) == 4
    again = audit.accept_many([(envelope, ["a", "b", "c"])])[0]
    assert again.duplicate and again.runs["a"].id == first.runs["a"].id and again.runs["c"].created

    claimed = audit.claim(envelope.id, "a", wake=0, token="w1", lease_seconds=30).run
    with audit.engine.connect() as c:
        core_run = c.execute(select(Run.__table__).where(Run.id == claimed.id)).one()
        stored = c.execute(
            select(EnvelopeRecord.status, EnvelopeRecord.payload, EnvelopeRecord.received_at)
            .where(EnvelopeRecord.envelope_id == envelope.id)
            .order_by(EnvelopeRecord.pk)
        ).all()
    assert {name: getattr(claimed, name) for name in core_run._fields} == core_run._asdict()
    assert claimed.status == "running" and claimed.lease_until.utcoffset() == timedelta(0)
    assert [s for s, _, _ in stored] == ["accepted", "duplicate", "duplicate"]
    assert "hunter2" not in stored[0][1] and stored[0][2].utcoffset() == timedelta(0)
    assert audit.find_run(envelope.id, "a") == claimed

    clash = {**AuditLog._run_values(envelope, "z", utcnow(), None), "id": claimed.id}
    insert_runs = Prepared(insert(Run.__table__), dialect, columns=list(clash))
    try:
        with audit.engine.begin() as c:
            insert_runs.execute(c, [clash])
    except IntegrityError as exc:
        assert "run_pkey" in str(exc) or "UNIQUE constraint failed: run.id" in str(exc)
    else:
        raise AssertionError("a duplicate primary key was accepted")
    try:
        with audit.engine.begin() as c:
            Prepared(insert(Run.__table__), dialect, columns=["id"]).execute(c, [{"id": "x"}])
    except KeyError as exc:
        assert "status" in str(exc)  # a Python-side column default is not silently left out
    else:
        raise AssertionError("a column default was left to the database")
    try:
        Prepared(select(Run.__table__).where(Run.__table__.c.status.in_(["pending", "waiting"])), dialect)
    except ValueError as exc:
        assert "expanding IN" in str(exc)
    else:
        raise AssertionError("a statement with an expanding IN was prepared")


def test_sqlite_checkpoints_leave_the_writes_for_a_thread_of_their_own(tmp_path, postgres_url):
    """A write that passes 1,000 WAL pages no longer copies the WAL back into the database
    file (holding the writer for milliseconds): a worker's checkpoint thread does, off the
    busy path."""
    url, database = f"sqlite:///{tmp_path}/audit.db", tmp_path / "audit.db"
    audit = AuditLog.open(url)
    empty = database.stat().st_size
    assert audit.defer_checkpoints()
    for _ in range(300):  # about 3,600 pages of WAL
        audit.accept_many([(Envelope.new("test.wal"), ["note"])])
    assert database.stat().st_size == empty  # nothing copied back by the writes
    audit.checkpoint()
    assert database.stat().st_size > empty + 200_000
    audit.checkpoint()  # nothing written since: nothing to do
    copied = database.stat().st_size
    for _ in range(300):  # the writes after a checkpoint are copied by the next
        audit.accept_many([(Envelope.new("test.wal"), ["note"])])
    audit.checkpoint()
    assert database.stat().st_size > copied + 200_000
    assert len(list_runs(audit, RunFilter(limit=1000))) == 600

    busy = tmp_path / "busy.db"
    runtime = Runtime(Settings(database_url=f"sqlite:///{busy}"), Registry()).start()
    try:
        written = busy.stat().st_size
        for _ in range(300):
            runtime.audit.accept_many([(Envelope.new("test.wal"), ["note"])])
        wait_for(lambda: busy.stat().st_size > written + 200_000, timeout=10, message="a background checkpoint")
    finally:
        runtime.stop()
    assert not AuditLog.open(postgres_url).defer_checkpoints()  # PostgreSQL checkpoints on its own


def test_an_sqlite_audit_log_is_readable_by_its_owner_only(tmp_path):
    audit = AuditLog.open(f"sqlite:///{tmp_path}/state/stackreflex/audit.db")
    audit.record_envelope(Envelope.new("test.modes"), status="accepted")
    files = {
        f: os.stat(tmp_path / "state" / "stackreflex" / f).st_mode & 0o777
        for f in os.listdir(tmp_path / "state" / "stackreflex")
    }
    assert {"audit.db", "audit.db-wal", "audit.db-shm"} <= set(files)
    assert set(files.values()) == {0o600}
    assert os.stat(tmp_path / "state" / "stackreflex").st_mode & 0o777 == 0o700


def test_secrets_in_rejected_messages_are_redacted_by_key_and_in_their_text(database_url):
    audit = AuditLog.open(database_url)
    planted = {
        "temp_url_key": "S1secret",
        "api_key": "S2secret",
        "credential": "S3secret",
        "signing_key": "S4secret",
        "private_key": "S5secret",
        "password": "S6secret",
        "nested": [{"adminPass": "S7secret"}],
        "credentials": {"blob": "S10secret"},
    }  # a secret that is an object: masked whole
    audit.record_rejection(json.dumps({"id": "e1", "data": planted}).encode(), "a.b", "field 'type': Field required")
    audit.record_rejection(b"{broken temp_url_key=S8secret api_key: S9secret", "a.b", "not JSON")
    with audit.engine.connect() as c:
        stored = json.dumps([list(row) for row in c.execute(text("select payload, reason from envelope"))])
    assert "e1" in stored and "temp_url_key" in stored  # what is not secret stays readable
    leaked = [f"S{n}secret" for n in range(1, 11) if f"S{n}secret" in stored]
    assert leaked == []


def test_a_rejection_is_recorded_once_and_parked_once_whatever_the_database_takes(database_url):
    """A redelivered rejection is neither recorded nor parked again, and NUL bytes (which
    PostgreSQL's text refuses) are stored escaped."""
    audit = AuditLog.open(database_url)
    digest = audit.record_rejection(b"not json", "test.x", "not JSON")
    assert digest and audit.record_rejection(b"not json", "test.x", "not JSON") == digest  # not parked yet
    audit.parked(digest)
    assert audit.record_rejection(b"not json", "test.x", "not JSON") is None
    assert audit.record_rejection(b"not json", "test.other", "not JSON") not in (None, digest)  # another message
    refused = audit.record_rejection(b"\x00" * 10, "test.x", "a NUL\x00in the reason", envelope_id="id\x00")
    assert refused is not None
    rows = list(list_envelopes(audit, status="rejected", limit=10))
    assert len(rows) == 3 and all("\x00" not in json.dumps(r) for r in rows)
    audit.unpark(digest)  # `dlq replay` took it out: refused again, it is parked again
    assert audit.record_rejection(b"not json", "test.x", "not JSON") == digest


def test_an_id_seen_again_with_other_content_is_a_conflict_and_the_same_content_a_duplicate(database_url):
    audit = AuditLog.open(database_url)
    first = Envelope.new("test.record", subject="n1", data={"n": 1})
    [accepted] = audit.accept_many([(first, ["note"])])
    resent = first.model_copy(update={"notify": True, "signature": "hmac-sha256:x"})  # how it is sent: not content
    altered = first.model_copy(update={"data": {"n": 2}})
    [duplicate, conflict] = audit.accept_many([(resent, ["note"]), (altered, ["note"])])
    assert accepted.conflict is None and duplicate.duplicate and duplicate.conflict is None
    assert "accepted before with other content" in conflict.conflict and conflict.runs == {}
    assert [e["status"] for e in list_envelopes(audit)] == ["duplicate", "accepted"]


def test_the_dispatch_key_is_made_once_and_shared(database_url):
    first, second = AuditLog.open(database_url), AuditLog.open(database_url)
    assert len(first.dispatch_key()) == 32 and first.dispatch_key() == second.dispatch_key()
    assert first.dispatch_key(SecretStr("configured")) == b"configured"


def test_a_rejection_the_database_refuses_whole_is_recorded_by_digest_size_and_first_bytes(postgres_url):
    audit = AuditLog.open(postgres_url)
    with audit.engine.begin() as c:  # the database refuses any payload holding the word (staged)
        c.exec_driver_sql("""CREATE FUNCTION refuse() RETURNS trigger AS $$
                             BEGIN RAISE EXCEPTION 'value refused (staged by the test)'; END $$ LANGUAGE plpgsql""")
        c.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON envelope FOR EACH ROW "
            "WHEN (strpos(NEW.payload, 'poison') > 0) EXECUTE FUNCTION refuse()"
        )
    body = b"\x01" * 70 + b"poison"
    digest = audit.record_rejection(body, "test.x", "not JSON")
    [row] = list_envelopes(audit, status="rejected")
    assert json.loads(row["payload"]) == {"sha256": digest, "bytes": 76, "first_bytes": "\\x01" * 64}
    assert "recorded in part" in row["reason"] and audit.record_rejection(body, "test.x", "not JSON") == digest


def test_a_write_is_on_disk_before_it_returns(database_url):
    """The router acknowledges an envelope once its record is committed: the commit must have
    reached the disk, whatever the database's own default says."""
    engine = make_engine(database_url)
    migrate(engine)
    if engine.dialect.name == "postgresql":  # a common tuning the audit log must not inherit
        with engine.connect() as c:
            database = c.exec_driver_sql("SELECT current_database()").scalar()
            c.exec_driver_sql(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
            c.commit()
        engine.dispose()
    audit = AuditLog(make_engine(database_url))
    new_run(audit, Envelope.new("test.durable"), "h")

    def setting(c):
        if c.dialect.name == "sqlite":
            return c.exec_driver_sql("PRAGMA synchronous").scalar()
        return c.exec_driver_sql("SHOW synchronous_commit").scalar()

    on_the_write_connection = audit._write(setting)
    assert on_the_write_connection == (2 if audit.engine.dialect.name == "sqlite" else "on")  # 2: FULL


def test_on_postgresql_a_write_does_not_wait_behind_another_transaction(postgres_url):
    """PostgreSQL takes transactions side by side: while one write's transaction is held open
    (here waiting on an event; in life, waiting for its commit to reach the disk), another
    thread's write commits on a connection of its own."""
    audit = AuditLog.open(postgres_url)
    held, release = threading.Event(), threading.Event()

    def slow(c):
        held.set()
        release.wait(30)

    first = threading.Thread(target=audit._write, args=(slow,))
    first.start()
    try:
        assert held.wait(10)
        envelope = Envelope.new("test.beside")
        second = threading.Thread(target=new_run, args=(audit, envelope, "h"))
        second.start()
        second.join(10)
        assert not second.is_alive() and held.is_set() and not release.is_set()  # committed beside the first
        assert audit.find_run(envelope.id, "h") is not None
    finally:
        release.set()
        first.join(10)


def test_an_outage_is_said_once_even_when_a_late_write_fails_just_after_it_ended(caplog):
    """Several writers (PostgreSQL's write lanes) wait through one outage: a write whose attempt
    began during it may fail just after another went through. That is the same outage, not a
    second one; failures well after it are a new outage, said again; a lone failure the next
    try heals (a pooled connection the server dropped while idle) is no outage at all."""
    clock = FakeClock()
    guard = OutageGuard(600, clock)

    caplog.set_level(logging.WARNING, logger="stackreflex.audit")
    said = lambda: [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records]  # noqa: E731
    # (fails, pause before) per write: an outage; a failure just after it ended; one long after;
    # a lone failure long after that
    for fails, pause in ((3, 0), (1, 1.0), (2, AFTERSHOCK + 60), (1, AFTERSHOCK + 60)):
        clock.advance(pause)
        attempts = iter([True] * fails + [False])

        def flaky():
            if next(attempts):
                raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
            return "written"

        assert guard.run(flaky) == "written"
    assert said() == [
        "audit database unreachable",
        "audit database reachable again",
        "audit database unreachable",
        "audit database reachable again",
    ]
