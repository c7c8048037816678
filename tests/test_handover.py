"""A scaled-down worker hands its running runs over: SIGTERM mid-wait parks the run at once
(its continuation dispatched), another worker of the namespace finishes it, nothing is done
twice and the stopping worker exits 0 long before its grace is over."""

import os
import signal
import time

import pytest
from sqlmodel import select

from stackreflex.bus.publisher import Publisher
from stackreflex.core.envelope import Envelope
from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs, run_with_steps
from stackreflex.models.tables import Run
from stackreflex.runtime import SHUTDOWN_GRACE

from .conftest import make_settings, wait_for


def lease_owner(audit: AuditLog, envelope: Envelope) -> str | None:
    with audit.session() as s:
        run = s.exec(select(Run).where(Run.envelope_id == envelope.id)).first()
        return run.lease_owner if run is not None and run.status == "running" else None


@pytest.mark.timeout(180)  # two worker processes: slow to start on a loaded machine
def test_a_sigtermed_worker_hands_its_waiting_run_to_another_worker(
    broker_url, postgres_url, namespace, workers, tmp_path
):
    settings = make_settings(broker_url, postgres_url, namespace)
    first, second = workers(settings), workers(settings)
    pids = {first.proc.pid: first, second.proc.pid: second}
    mark, path = tmp_path / "marks", tmp_path / "go"
    envelope = Envelope.new("test.handover", subject="node-1", data={"mark": str(mark), "path": str(path)})
    publisher = Publisher(settings)
    try:
        publisher.publish(envelope)
    finally:
        publisher.close()
    audit = AuditLog.open(postgres_url)

    # step 1 is done and the run waits in place (ctx.wait, inline for up to 60 s) on one worker
    wait_for(lambda: mark.exists() and "step1" in mark.read_text(), message="step 1 done")
    owner = wait_for(lambda: lease_owner(audit, envelope), message="the run held by a worker")
    holder_pid = int(owner.split(":")[1])  # the owner token is host:pid:...
    holder = pids[holder_pid]
    other = second if holder is first else first

    started = time.monotonic()
    os.killpg(holder.proc.pid, signal.SIGTERM)
    assert holder.terminate(timeout=SHUTDOWN_GRACE + 10) == 0
    stopped_in = time.monotonic() - started
    assert stopped_in < SHUTDOWN_GRACE / 2, f"the holder took {stopped_in:.1f}s to stop: it waited instead of parking"

    run = list_runs(audit, RunFilter(correlation_id=envelope.correlationid))[0]
    assert run["status"] in ("waiting", "running"), run
    # parked with its continuation dispatched: the other worker takes it and waits in place again
    taken = wait_for(lambda: lease_owner(audit, envelope), message="the run taken by the other worker")
    assert int(taken.split(":")[1]) == other.proc.pid

    path.write_text("here")
    wait_for(
        lambda: list_runs(audit, RunFilter(correlation_id=envelope.correlationid))[0]["status"] == "succeeded",
        timeout=30,
        message="the run succeeded on the other worker",
    )
    done = run_with_steps(audit, run["id"])
    assert (done["attempts"], done["wakes"]) == (1, 1), "handed over as a continuation, not a retry"
    steps = {s["name"]: s for s in done["steps"]}
    assert [s["name"] for s in done["steps"]] == ["step 1", "step 2"]
    assert steps["step 1"]["detail"]["pid"] == holder_pid
    assert steps["step 2"]["detail"]["pid"] == other.proc.pid, "the other worker finished the run"
    lines = mark.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["step1", "step2"], "step 1 ran exactly once"
    assert lines[1].split()[2] == str(other.proc.pid)
    assert other.proc.poll() is None
