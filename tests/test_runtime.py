"""The runtime end to end: CLI → RabbitMQ → router → dramatiq → handler → audit log,
with real worker processes (killed for real where the test says so)."""

import json
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from kombu import Connection, Producer, Queue, binding
from kombu.utils.url import parse_url

from stackreflex.bus.connections import normalise_amqp_url
from stackreflex.bus.follow import NOTICE_PATTERNS
from stackreflex.bus.publisher import Publisher, topic_exchange
from stackreflex.core.envelope import Envelope
from stackreflex.core.errors import UnroutableError
from stackreflex.core.signing import Signer
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_envelopes, list_runs, run_with_steps

from .broker_proxy import BrokerProxy
from .conftest import make_settings, run_cli, wait_drained, wait_for


def runs_of(audit: AuditLog, envelope: Envelope) -> dict[str, dict]:
    return {r["handler"]: r for r in list_runs(audit, RunFilter(correlation_id=envelope.correlationid))}


def run_ends(audit: AuditLog, envelope: Envelope, handler: str, status: str, timeout: float = 30) -> dict:
    """Wait until ``handler``'s run of ``envelope`` has ``status``; returns the run."""
    wait_for(
        lambda: runs_of(audit, envelope).get(handler, {}).get("status") == status,
        timeout=timeout,
        message=f"{handler}'s run {status}",
    )
    return runs_of(audit, envelope)[handler]


def marks(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def publish(settings, envelope: Envelope) -> None:
    publisher = Publisher(settings)
    try:
        publisher.publish(envelope)
    finally:
        publisher.close()


def publish_all(settings, envelopes: list[Envelope]) -> None:
    publisher = Publisher(settings)
    try:
        for envelope in envelopes:
            publisher.publish(envelope)
    finally:
        publisher.close()


def publish_raw(settings, body: bytes, routing_key: str) -> None:
    with Connection(
        normalise_amqp_url(settings.broker_url.get_secret_value()), transport_options={"confirm_publish": True}
    ) as c:
        Producer(c).publish(
            body, exchange=topic_exchange(settings), routing_key=routing_key, content_type="application/json"
        )


def test_cli_publish_reaches_its_handler_and_the_audit_log_records_it(
    broker_url, database_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, database_url, namespace)
    workers(settings)
    mark = tmp_path / "marks"
    done = run_cli(
        settings,
        tmp_path,
        "publish",
        "test.record",
        "--subject",
        "node-7",
        "--data",
        json.dumps({"value": 42, "mark": str(mark)}),
        "--wait",
        "--timeout",
        "30",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "succeeded" in done.stdout
    runs = list_runs(AuditLog.open(database_url), RunFilter(handler="note"))
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["subject"] == "node-7"
    shown = json.loads(run_cli(settings, tmp_path, "audit", "show", runs[0]["id"][:8], "--json").stdout)
    assert shown["started_at"] <= shown["finished_at"] and shown["duration_s"] >= 0
    [step] = shown["steps"]
    assert (step["name"], step["target"], step["status"], step["detail"]) == (
        "note",
        "node-7",
        "succeeded",
        {"seen": 42},
    )
    assert shown["started_at"] <= step["started_at"] <= step["finished_at"] <= shown["finished_at"]
    assert len(marks(mark)) == 1
    listed = run_cli(settings, tmp_path, "audit", "runs", "--status", "succeeded", "--subject", "node-7")
    assert runs[0]["id"][:8] in listed.stdout


def test_the_same_envelope_published_twice_runs_once(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    workers(settings)
    mark = tmp_path / "marks"
    envelope = Envelope.new("test.record", subject="dup", data={"mark": str(mark), "sleep": 0.3})
    publish(settings, envelope)
    publish(settings, envelope)
    audit = AuditLog.open(sqlite_url)
    wait_for(lambda: len(list_envelopes(audit)) == 2, message="both copies received")
    wait_for(lambda: runs_of(audit, envelope).get("note", {}).get("status") == "succeeded", message="run done")
    wait_drained(settings.namespace)  # every delivery handled: a second run or execution would show now
    assert len(list_runs(audit, RunFilter())) == 1
    assert sorted(e["status"] for e in list_envelopes(audit)) == ["accepted", "duplicate"]
    assert len(marks(mark)) == 1


def test_two_handlers_on_one_type_run_independently_and_dead_runs_replay(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, sqlite_url, namespace)
    worker = workers(settings)
    mark, fix = tmp_path / "marks", tmp_path / "fixed"
    envelope = Envelope.new("test.mixed", subject="pair", data={"mark": str(mark), "fix": str(fix)})
    publish(settings, envelope)
    audit = AuditLog.open(sqlite_url)
    wait_for(lambda: runs_of(audit, envelope).get("fail_always", {}).get("status") == "dead", message="dead run")
    runs = runs_of(audit, envelope)
    assert runs["note"]["status"] == "succeeded"
    dead = runs["fail_always"]
    assert dead["attempts"] == 3 and "backend said no" in dead["error"] and "no retries left" in dead["error"]
    tries = [line for line in marks(mark) if line.startswith("fail_always")]
    assert len(tries) == 3
    attempt_times = [s["started_at"] for s in run_with_steps(audit, dead["id"])["steps"]]
    assert attempt_times == sorted(attempt_times) and len(attempt_times) == 3

    listed = wait_for(
        lambda: (r := run_cli(settings, tmp_path, "dlq", "list", "--json")).returncode == 0 and json.loads(r.stdout),
        message="dead letter listed",
    )
    [item] = [i for i in listed if i["kind"] == "dead"]
    assert item["handler"] == "fail_always" and item["envelope_id"] == envelope.id and item["run_id"] == dead["id"]
    said = worker.log_path.read_text()  # each failed attempt one line with its reason; no traceback
    assert said.count("retrying within") == 2 and "backend said no" in said and "Traceback" not in said
    fix.write_text("fixed")
    replayed = run_cli(settings, tmp_path, "dlq", "replay", dead["id"][:8])  # the run's first characters
    assert replayed.returncode == 0, replayed.stderr
    wait_for(lambda: runs_of(audit, envelope)["fail_always"]["status"] == "succeeded", message="replayed run")
    assert runs_of(audit, envelope)["note"]["attempts"] == 1
    assert json.loads(run_cli(settings, tmp_path, "dlq", "list", "--json").stdout or "[]") == []


def test_malformed_messages_are_rejected_with_reasons_and_the_worker_keeps_serving(
    broker_url, database_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, database_url, namespace)
    workers(settings)
    bad = [
        (b"this is not json", "not JSON"),
        (
            json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "data": {}}).encode(),
            "field 'type': Field required",
        ),
        (json.dumps({"type": "test.record", "id": "i", "time": 12, "subject": ["a"]}).encode(), "field 'subject'"),
        (json.dumps({"type": "test.record", "subject": "no id"}).encode(), "field 'id': Field required"),
        # NUL bytes, which a PostgreSQL text column refuses: refused before anything stores them, parked once
        (b"\x00garbage\x00", "contains a NUL byte"),
        (
            json.dumps({"specversion": "1.0", "id": "nul\u0000id", "data": {"x": "a\u0000b"}}).encode(),
            "contains a NUL character",
        ),
    ]
    for body, _ in bad:
        publish_raw(settings, body, "test.record")
    good = Envelope.new("test.record", subject="after-garbage")
    publish(settings, good)
    audit = AuditLog.open(database_url)
    wait_for(lambda: runs_of(audit, good).get("note", {}).get("status") == "succeeded", message="valid envelope served")
    rejected = wait_for(
        lambda: len(r := list_envelopes(audit, status="rejected")) == len(bad) and r, message="rejections"
    )
    wait_drained(namespace)  # nothing left looping through the router: each rejection was final
    reasons = " | ".join(r["reason"] for r in rejected)
    for _, reason in bad:
        assert reason in reasons
    listed = json.loads(run_cli(settings, tmp_path, "dlq", "list", "--json").stdout)
    assert sorted(i["reason"] for i in listed if i["kind"] == "rejected") == sorted(r["reason"] for r in rejected)
    unknown = run_cli(settings, tmp_path, "dlq", "replay", "nosuchkey")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no parked message has the key nosuchkey")


def test_a_worker_killed_mid_handler_hands_the_run_to_a_new_worker_exactly_once(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, sqlite_url, namespace)
    first = workers(settings)
    mark, release = tmp_path / "marks", tmp_path / "release"
    envelope = Envelope.new("test.block", subject="node-3", data={"mark": str(mark), "release": str(release)})
    publish(settings, envelope)
    wait_for(lambda: any(line.startswith("start") for line in marks(mark)), message="handler started")
    first.kill()
    workers(settings)
    release.write_text("go")
    audit = AuditLog.open(sqlite_url)
    wait_for(
        lambda: runs_of(audit, envelope).get("block_until_released", {}).get("status") == "succeeded",
        timeout=40,
        message="run finished by the second worker",
    )
    wait_drained(settings.namespace)
    run = runs_of(audit, envelope)["block_until_released"]
    assert run["attempts"] == 2
    assert [line.split()[0] for line in marks(mark)] == ["start", "start", "done"]
    steps = run_with_steps(audit, run["id"])["steps"]
    assert [(s["attempt"], s["status"]) for s in steps] == [(1, "interrupted"), (2, "succeeded")]
    assert len(list_runs(audit, RunFilter())) == 1


def test_a_continuation_survives_its_worker_being_killed_mid_wait(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    first = workers(settings)
    mark, path = tmp_path / "marks", tmp_path / "appears-later"
    envelope = Envelope.new("test.wait", subject="upload", data={"mark": str(mark), "path": str(path), "every": 0.5})
    publish(settings, envelope)
    audit = AuditLog.open(sqlite_url)
    wait_for(lambda: runs_of(audit, envelope).get("wait_for_file", {}).get("status") == "waiting", message="waiting")
    waiting = runs_of(audit, envelope)["wait_for_file"]
    assert waiting["waiting_for"] == "appears-later to appear" and waiting["wake_at"] and waiting["deadline"]
    first.kill()
    path.write_text("here")
    workers(settings)
    wait_for(
        lambda: runs_of(audit, envelope)["wait_for_file"]["status"] == "succeeded",
        timeout=40,
        message="run resumed by the new worker",
    )
    assert [line.split()[0] for line in marks(mark)][-1] == "found"
    assert marks(mark).count(next(line for line in marks(mark) if line.startswith("found"))) == 1


def test_two_worker_processes_share_a_stream_without_loss_or_doubles(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, sqlite_url, namespace)
    workers(settings, "--processes", "2", ready=2)
    mark = tmp_path / "marks"
    envelopes = [
        Envelope.new("test.share", subject=f"n{i}", data={"mark": str(mark), "sleep": 0.05}) for i in range(60)
    ]
    publisher = Publisher(settings)
    for e in envelopes:
        publisher.publish(e)
    publisher.close()
    audit = AuditLog.open(sqlite_url)
    wait_for(
        lambda: len(list_runs(audit, RunFilter(status=["succeeded"], limit=1000))) == 60,
        timeout=60,
        message="all runs succeeded",
    )
    lines = marks(mark)
    assert sorted(line.split()[1] for line in lines) == sorted(e.id for e in envelopes)
    assert len({line.split()[2] for line in lines}) == 2, "both worker processes did work"


def test_secrets_never_reach_the_audit_tables_or_the_logs(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace, log_level="DEBUG")
    worker = workers(settings)
    envelope = Envelope.new(
        "test.mixed",
        subject="secrets",
        data={
            "password": "hunter2-PW",
            "token": "gAAAA-TOKEN",
            "metadata_url": "http://192.0.2.5:8080/v1/AUTH_x/c/o?temp_url_sig=deadbeefSIG&temp_url_expires=2000000000",
        },
    )
    publish(settings, envelope)
    audit = AuditLog.open(sqlite_url)
    wait_for(lambda: runs_of(audit, envelope).get("fail_always", {}).get("status") == "dead", message="dead run")
    from sqlalchemy import text

    with audit.engine.connect() as c:
        tables = " ".join(
            str(row) for t in ("envelope", "run", "step") for row in c.execute(text(f"select * from {t}"))
        )
    cli = (
        run_cli(settings, tmp_path, "audit", "runs", "--json").stdout
        + run_cli(settings, tmp_path, "audit", "envelopes", "--json").stdout
    )
    worker.terminate()
    log = worker.log_path.read_text()
    assert "backend said no" in tables and "backend said no" in log
    for secret in ("hunter2-PW", "deadbeefSIG", "gAAAA-TOKEN"):
        assert secret not in tables, f"{secret} in audit tables"
        assert secret not in log, f"{secret} in worker log"
        assert secret not in cli, f"{secret} in CLI output"


def _dispatch_straight_to(settings, handler: str, envelope: dict) -> None:
    """What an attacker who can publish does to skip the router: a dramatiq message on the
    handler's own queue, through the default exchange."""
    message = {
        "queue_name": f"{settings.namespace}.{handler}",
        "actor_name": handler,
        "args": [envelope, 0],
        "kwargs": {},
        "options": {},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    with Connection(
        normalise_amqp_url(settings.broker_url.get_secret_value()), transport_options={"confirm_publish": True}
    ) as c:
        Producer(c).publish(
            json.dumps(message).encode(),
            exchange="",
            routing_key=message["queue_name"],
            content_type="application/json",
            content_encoding="utf-8",
        )


def test_with_a_signing_key_only_envelopes_signed_inside_the_window_act(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    """The campaign of #18: with a key set, a forged unsigned Heat event, an unsigned
    ``Command.*``, a message straight onto a handler's queue (new, or naming a real run with
    its data altered), a replay after ``audit prune`` and an envelope signed 400 days ago
    are each refused and recorded; a signed command runs, and so does one signed with the
    previous key of a rotating ring."""
    ring = {"old": "previous-team-key", "new": "team-secret-key"}
    settings = make_settings(broker_url, sqlite_url, namespace, signing_keys=ring, signing_key_id="new")
    workers(settings)
    audit = AuditLog.open(sqlite_url)
    ok = run_cli(settings, tmp_path, "publish", "command.test.do", "--subject", "signed", "--wait", "--timeout", "30")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    rotated = settings.model_copy(update={"signing_key_id": "old"})  # a publisher not yet moved to the new key
    publish(rotated, Envelope.new("command.test.do", subject="old-key"))

    unsigned = settings.model_copy(update={"signing_keys": {}, "signing_key_id": None})
    forged_heat = Envelope.new(
        "heat.resource.CREATE_IN_PROGRESS",
        subject="overcloud",
        data={"resource_type": "OS::Heat::DeployedServer", "role": "ControllerDeployedServer"},
    )
    capital = {**Envelope.new("command.test.do", subject="capital").to_dict(), "type": "Command.test.do"}
    publish_raw(settings, forged_heat.to_json().encode(), forged_heat.type)
    publish_raw(settings, json.dumps(capital).encode(), "command.test.do")
    signer = Signer({k: v.encode() for k, v in ring.items()}, "new")
    stale = signer.sign(Envelope.new("command.test.do", subject="stale"), now=datetime.now(UTC) - timedelta(days=400))
    publish_raw(settings, stale.to_json().encode(), stale.type)
    cli_unsigned = run_cli(
        unsigned, tmp_path, "publish", "command.test.do", "--subject", "cli-unsigned", "--wait", "--timeout", "30"
    )
    assert cli_unsigned.returncode == 2 and "unsigned command.test.do" in cli_unsigned.stderr
    signed_run = wait_for(
        lambda: {r["subject"]: r for r in list_runs(audit, RunFilter(handler="do_command"))}.get("old-key"),
        message="the old key's command ran",
    )
    # straight onto the handler's queue: a new envelope, and the signed run's envelope altered
    straight = Envelope.new("command.test.do", subject="straight").to_dict()
    _dispatch_straight_to(settings, "do_command", straight)
    [kept] = [e for e in list_envelopes(audit, status="accepted") if e["subject"] == "signed"]
    altered = {**json.loads(kept["payload"]), "data": {"n": 1000}}
    _dispatch_straight_to(settings, "do_command", altered)

    reasons = wait_for(lambda: len(r := list_envelopes(audit, status="rejected")) == 6 and r, message="refusals")
    by_id = {r["envelope_id"]: r["reason"] for r in reasons}
    assert "unsigned heat.resource.CREATE_IN_PROGRESS" in by_id[forged_heat.id]
    assert "unsigned command.test.do" in by_id[capital["id"]]
    assert "stale command.test.do" in by_id[stale.id]
    assert "not authenticated" in by_id[straight["id"]] and "not authenticated" in by_id[altered["id"]]

    # a replay, after pruning everything prune may take, is a duplicate: nothing runs again
    replayed = signer.sign(Envelope.new("command.test.do", subject="replayed"))
    publish_raw(settings, replayed.to_json().encode(), replayed.type)
    wait_for(lambda: runs_of(audit, replayed).get("do_command", {}).get("status") == "succeeded", message="ran once")
    assert run_cli(settings, tmp_path, "audit", "prune", "--older-than", "0d").returncode == 0
    publish_raw(settings, replayed.to_json().encode(), replayed.type)
    wait_drained(namespace)
    assert [e["status"] for e in list_envelopes(audit) if e["envelope_id"] == replayed.id] == ["duplicate", "accepted"]
    subjects = sorted(r["subject"] for r in list_runs(audit, RunFilter(handler="do_command")))
    assert subjects == ["old-key", "replayed", "signed"] and signed_run["status"] == "succeeded"
    stored = json.dumps(list_envelopes(audit, limit=100))
    assert "team-secret-key" not in stored and "previous-team-key" not in stored


def test_runs_are_announced_on_the_bus_when_followed_or_when_every_run_is(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    """Notices cost a message per run: by default only an envelope published with ``notify``
    (what --wait does) gets them; with run_notices=all, every run is announced."""
    settings = make_settings(broker_url, sqlite_url, namespace)
    audit = AuditLog.open(sqlite_url)
    exchange = topic_exchange(settings)
    listener = Queue(
        f"{namespace}.listener",
        exchange,
        exclusive=True,
        auto_delete=True,
        bindings=[binding(exchange, routing_key=p) for p in NOTICE_PATTERNS],
    )
    with Connection(normalise_amqp_url(broker_url)) as c:
        channel = c.channel()
        listener(channel).declare()

        def heard() -> dict[str, set[str]]:
            """Notice types received, by the envelope they are about."""
            found: dict[str, set[str]] = {}
            while (message := listener(channel).get(no_ack=True)) is not None:
                notice = json.loads(message.body)
                found.setdefault(notice["data"]["envelope_id"], set()).add(notice["type"])
            return found

        for run_notices in ("followed", "all"):
            worker = workers(settings, env={"STACKREFLEX_RUN_NOTICES": run_notices})
            quiet = Envelope.new("test.record", subject=f"quiet-{run_notices}")
            followed = Envelope.new("test.record", subject=f"followed-{run_notices}", notify=True)
            publish_all(settings, [quiet, followed])
            wait_for(
                lambda: all(runs_of(audit, e).get("note", {}).get("status") == "succeeded" for e in (quiet, followed)),
                message="both runs done",
            )
            time.sleep(0.5)  # notices are not confirmed: give the last ones time to arrive
            notices = heard()
            assert notices[followed.id] == {"envelope.routed", "run.progress", "run.finished"}
            if run_notices == "followed":
                assert quiet.id not in notices
            else:
                assert notices[quiet.id] == notices[followed.id]
            assert worker.terminate() == 0


def test_a_worker_whose_broker_connections_break_reconnects_and_loses_nothing(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    """The relay between the worker and the broker cuts every connection (the router's and
    dramatiq's) twice: the worker reconnects by itself, and every envelope published
    meanwhile, straight to the broker, runs exactly once."""
    parts = parse_url(normalise_amqp_url(broker_url))
    proxy = BrokerProxy((parts["hostname"], parts["port"] or 5672))
    try:
        through_relay = make_settings(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", sqlite_url, namespace)
        worker = workers(through_relay)
        settings = make_settings(broker_url, sqlite_url, namespace)
        audit = AuditLog.open(sqlite_url)
        batches = [[Envelope.new("test.record", subject=f"cut{n}-{i}") for i in range(5)] for n in range(3)]
        for n, batch in enumerate(batches):
            if n:
                proxy.cut()
            publish_all(settings, batch)
            wait_for(
                lambda: all(runs_of(audit, e).get("note", {}).get("status") == "succeeded" for e in batch),
                timeout=40,
                message=f"batch {n} served",
            )
        assert len(list_runs(audit, RunFilter(limit=1000))) == 15
        assert worker.log_path.read_text().count("router lost the broker connection") >= 2
    finally:
        proxy.close()


def test_predicates_filter_envelopes_within_a_pattern(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    workers(settings)
    mark = tmp_path / "marks"
    go, stay = (Envelope.new("test.pred.x", data={"go": v, "mark": str(mark)}) for v in (True, False))
    publish(settings, stay)
    publish(settings, go)
    audit = AuditLog.open(sqlite_url)
    wait_for(lambda: runs_of(audit, go).get("only_when_go", {}).get("status") == "succeeded", message="go ran")
    assert runs_of(audit, stay) == {} and len(marks(mark)) == 1


def test_a_type_nobody_subscribes_to_is_recorded_and_reported_not_dropped(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    """Before any router declared where such envelopes go, the broker returns them to the
    publisher; after, the exchange's alternate takes them to the router, which records and parks
    them, whoever published them, and tells a CLI that follows."""
    settings = make_settings(broker_url, sqlite_url, namespace)
    with pytest.raises(UnroutableError, match=r"no queue is bound to receive nobody\.listens"):
        publish(settings, Envelope.new("nobody.listens"))
    workers(settings)
    stray = Envelope.new("nobody.listens", subject="a third party's")
    publish_raw(settings, stray.to_json().encode(), stray.type)  # not mandatory: nobody would know
    cli = run_cli(settings, tmp_path, "publish", "nobody.listens", "--wait", "--timeout", "30")
    assert cli.returncode == 1 and cli.stderr.strip().startswith("error: no queue is bound to receive nobody.listens")
    audit = AuditLog.open(sqlite_url)
    rejected = wait_for(lambda: len(r := list_envelopes(audit, status="rejected")) == 2 and r, message="recorded")
    assert all("no queue is bound to receive nobody.listens" in r["reason"] for r in rejected)
    assert stray.id in {r["envelope_id"] for r in rejected}
    listed = json.loads(run_cli(settings, tmp_path, "dlq", "list", "--json").stdout)
    assert stray.id in {i["envelope_id"] for i in listed}
    for notice in ("run.finished", "envelope.routed"):  # advisory, followed by nobody any more: let go
        publish_raw(settings, Envelope.new(notice).to_json().encode(), notice)
    wait_drained(namespace)
    assert len(list_envelopes(audit, status="rejected")) == 2


def test_sigterm_lets_the_running_handler_finish_then_exits_cleanly(
    broker_url, sqlite_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, sqlite_url, namespace)
    worker = workers(settings)
    mark, release = tmp_path / "marks", tmp_path / "release"
    envelope = Envelope.new("test.block", subject="node-9", data={"mark": str(mark), "release": str(release)})
    publish(settings, envelope)
    wait_for(lambda: marks(mark), message="handler started")
    os.killpg(worker.proc.pid, signal.SIGTERM)
    time.sleep(1.0)
    assert worker.proc.poll() is None, "the worker waits for its running handler"
    release.write_text("go")
    assert worker.terminate(timeout=40) == 0
    run = runs_of(AuditLog.open(sqlite_url), envelope)["block_until_released"]
    assert (run["status"], run["attempts"]) == ("succeeded", 1)
    assert "worker stopped" in worker.log_path.read_text()


def test_a_handler_past_its_time_limit_is_interrupted_and_retried(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    workers(settings)
    mark = tmp_path / "marks"
    envelope = Envelope.new("test.slow", subject="slow", data={"mark": str(mark)})
    publish(settings, envelope)
    audit = AuditLog.open(sqlite_url)
    run = run_ends(audit, envelope, "too_slow", "dead")
    assert run["attempts"] == 2 and "TimeLimitExceeded" in run["error"]
    assert run["duration_s"] < 5, "the handler was interrupted, not left to finish its sleep"
    assert [s["status"] for s in run_with_steps(audit, run["id"])["steps"]] == ["failed", "failed"]


def test_a_backlog_is_routed_in_batches_with_nothing_lost_doubled_or_left_unacknowledged(
    broker_url, database_url, namespace, workers, tmp_path
):
    """Envelopes that pile up while no worker runs arrive together: the router takes them in
    batches (one audit transaction, one wait for the broker's confirms), and a batch mixes
    valid envelopes, a copy of one of them and garbage."""
    settings = make_settings(broker_url, database_url, namespace, log_level="DEBUG")
    workers(settings).terminate()  # the router's queue now exists and keeps what comes
    mark = tmp_path / "marks"
    envelopes = [Envelope.new("test.record", subject=f"b{i}", data={"mark": str(mark)}) for i in range(150)]
    publish_all(settings, [*envelopes[:75], envelopes[10]])  # and the same envelope again
    publish_raw(settings, b"not an envelope", "test.record")
    publish_all(settings, envelopes[75:])

    worker = workers(settings)
    audit = AuditLog.open(database_url)
    # A batch whose confirms went astray would hold its envelopes for the 30 s confirm timeout.
    wait_for(
        lambda: len(list_runs(audit, RunFilter(status=["succeeded"], limit=1000))) == 150,
        timeout=20,
        message="every envelope's run succeeded",
    )
    wait_drained(settings.namespace)  # a doubled run or execution would show now
    assert sorted(line.split()[1] for line in marks(mark)) == sorted(e.id for e in envelopes)
    statuses = [e["status"] for e in list_envelopes(audit, limit=1000)]
    assert (statuses.count("accepted"), statuses.count("duplicate"), statuses.count("rejected")) == (150, 1, 1)
    batches = [
        int(line.rsplit(" ", 2)[-2])
        for line in worker.log_path.read_text().splitlines()
        if "routing a batch of" in line
    ]
    assert max(batches) > 1 and sum(batches) == 152

    # A stream from three publishers while the worker runs: batches form and are confirmed
    # while the next are routed.
    stream = [Envelope.new("test.record", subject=f"s{i}", data={"mark": str(mark)}) for i in range(600)]
    threads = [threading.Thread(target=publish_all, args=(settings, stream[n::3])) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(
        lambda: len(list_runs(audit, RunFilter(status=["succeeded"], limit=1000))) == 750,
        timeout=25,
        message="every streamed envelope's run succeeded",
    )
    wait_drained(settings.namespace)
    assert sorted(line.split()[1] for line in marks(mark)) == sorted(e.id for e in envelopes + stream)
    worker.terminate()  # what the router left unacknowledged would now be back in its queue
    with Connection(normalise_amqp_url(broker_url)) as c:
        _, left, _ = c.default_channel.queue_declare(f"{namespace}.router", passive=True)
    assert left == 0


def test_a_batch_the_audit_log_refuses_parks_each_valid_envelope_once_and_the_garbage_only_once(
    broker_url, postgres_url, namespace, workers, tmp_path
):
    """The database refuses to record accepted envelopes (a trigger raises): the batch falls
    back to one message at a time, each valid envelope is tried twice and parked with the
    error, and the garbage that validation parked is not parked a second time."""
    settings = make_settings(broker_url, postgres_url, namespace)
    workers(settings).terminate()  # schema migrated, the router's queue declared
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("""CREATE FUNCTION refuse() RETURNS trigger AS $$
                      BEGIN RAISE EXCEPTION 'disk quota exceeded (staged by the test)'; END $$ LANGUAGE plpgsql""")
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON envelope FOR EACH ROW "
            "WHEN (NEW.status <> 'rejected') EXECUTE FUNCTION refuse()"
        )
    envelopes = [Envelope.new("test.record", subject=f"q{i}") for i in range(3)]
    publish_raw(settings, b"garbage, not JSON", "test.record")
    publish_all(settings, envelopes)
    workers(settings)

    def parked():
        listed = run_cli(settings, tmp_path, "dlq", "list", "--json")
        return listed.returncode == 0 and json.loads(listed.stdout or "[]")

    wait_for(lambda: len(p := parked() or []) >= 4 and p, timeout=40, message="four parked messages")
    wait_drained(settings.namespace)  # nothing left to route: a second parking of the garbage would show now
    reasons = sorted(i["reason"] for i in parked())
    assert len(reasons) == 4, reasons
    assert sum("not JSON" in r for r in reasons) == 1
    assert sum("router failed on it twice" in r and "disk quota exceeded" in r for r in reasons) == 3
    audit = AuditLog.open(postgres_url)
    assert len(list_envelopes(audit, status="rejected")) == 4 and list_runs(audit, RunFilter()) == []
