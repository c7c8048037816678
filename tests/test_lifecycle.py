"""The run lifecycle on its own, without a broker: the handler test kit drives the real
lifecycle, dramatiq's own Retries middleware and a real audit log (SQLite in memory, and
PostgreSQL), on a clock that jumps instead of sleeping."""

import logging

import pytest

from stackreflex import Envelope, handler
from stackreflex.cli.report import render_report
from stackreflex.core.errors import WaitTimedOut
from stackreflex.core.registry import Registry
from stackreflex.models.timeline import Scope, timeline
from stackreflex.runs.policy import policy_for
from stackreflex.testing import HandlerKit

local = Registry()
#: What each handler really did, by envelope id (the audit log is what is checked against it).
did: dict[str, list[str]] = {}


def note(event: Envelope, what: str) -> None:
    did.setdefault(event.id, []).append(what)


@handler("test.life.step", max_retries=1, min_backoff=1, into=local)
def waits_inside_a_step(event, ctx):
    with ctx.step("look", target=event.subject) as detail:
        detail["looks"] = ctx.state["looks"] = ctx.state.get("looks", 0) + 1
        if ctx.state["looks"] < 3:
            ctx.recheck(30, waiting_for=f"look {ctx.state['looks']} of 3")
    note(event, "done")


@handler("test.life.flaky", max_retries=1, min_backoff=1, into=local)
def fails_after_each_wake(event, ctx):
    """Waits; once woken, fails; its retry waits again; once woken again, fails again."""
    looks, failures = ctx.state.get("looks", 0), did.get(event.id, []).count("boom")
    if looks > failures:
        note(event, "boom")
        raise RuntimeError(f"boom {failures + 1}")
    ctx.state["looks"] = looks + 1
    ctx.recheck(10, waiting_for="the next look")


@handler("test.life.always", max_retries=2, min_backoff=1, into=local)
def waits_then_fails_every_time(event, ctx):
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.checkpoint()  # what it counted survives its failure
    note(event, "execution")
    if ctx.state["n"] % 2:
        ctx.recheck(5, waiting_for="a while")
    raise RuntimeError("still broken")


@handler("test.life.deadline", into=local)
def waits_with_changing_words(event, ctx):
    ctx.state["looks"] = ctx.state.get("looks", 0) + 1
    note(event, "look")
    ctx.recheck(60, waiting_for=f"{ctx.state['looks']} look(s) so far", deadline=300)


@handler("test.life.two_waits", into=local)
def waits_for_two_things(event, ctx):
    first = ctx.state.setdefault("first", 0)
    if first < 3:
        ctx.state["first"] = first + 1
        ctx.recheck(100, waiting_for="the first thing", key="first", deadline=250)
    ctx.state["second"] = ctx.state.get("second", 0) + 1
    if ctx.state["second"] < 3:
        ctx.recheck(100, waiting_for="the second thing", key="second", deadline=250)


@handler("test.life.inline", into=local)
def waits_in_place(event, ctx):
    ready = event.data["ready_after"]
    ctx.wait(lambda: ctx.clock.monotonic() >= ready, waiting_for="the clock", inline=5, every=1, deadline=100)
    with ctx.step("after the wait"):
        pass


@handler("test.life.abandons", into=local)
def leaves_a_waiting_step_behind(event, ctx):
    if not ctx.state.get("waited"):
        ctx.state["waited"] = True
        with ctx.step("first try"):
            ctx.recheck(1, waiting_for="a second")
    with ctx.step("another way"):
        pass


def undo(event, ctx, reason):
    note(event, f"undo: {reason} after {ctx.state.get('looks', 0)} look(s)")
    with ctx.step("put back", target=event.subject):
        pass
    return f"put back after {ctx.state.get('looks', 0)} look(s)"


@handler("test.life.undoable", compensate=undo, into=local)
def waits_until_cancelled(event, ctx):
    ctx.state["looks"] = ctx.state.get("looks", 0) + 1
    if (event.data or {}).get("cancel_while_running"):  # as an operator's `runs cancel` would, meanwhile
        ctx.cancel_run(ctx.run_id, "asked while it ran")
    ctx.checkpoint()
    note(event, "past the checkpoint")
    ctx.recheck(600, waiting_for="an operator")


@handler("test.life.plain", into=local)
def waits_forever(event, ctx):
    ctx.progress(1, 3, "one of three")
    ctx.recheck(600, waiting_for="ever")


@handler("test.life.block", max_retries=3, min_backoff=1, into=local)
def starts_a_step(event, ctx):
    with ctx.step("long call", target=event.subject):
        note(event, "call")


@handler("test.life.parent", into=local)
def waits_for_its_child(event, ctx):
    """Publishes one envelope, then waits (ten minutes between looks) for its run to succeed."""
    if "child" not in ctx.state:
        ctx.state["child"] = ctx.publish("test.life.child", key="child").id
    runs = ctx.outcomes([ctx.state["child"]])[ctx.state["child"]]
    if not runs or runs[0].status != "succeeded":
        ctx.recheck(600, waiting_for="its child")
    note(event, "child done")


@handler("test.life.child", into=local)
def the_child(event, ctx):
    note(event, "child")


@pytest.fixture(params=["sqlite-memory", "postgresql"])
def kit(request, postgres_url):
    did.clear()
    return HandlerKit(database_url="sqlite://" if request.param == "sqlite-memory" else postgres_url)


def h(fn):
    return next(x for x in local if x.fn is fn)


def test_a_wait_inside_a_step_is_no_failure_and_the_step_ends_with_its_true_outcome(kit):
    event = Envelope.new("test.life.step", subject="node-1")
    waiting = kit.run(h(waits_inside_a_step), event, until_waiting=True)
    assert waiting.status == "waiting" and [s["status"] for s in waiting.steps] == ["waiting"]
    assert waiting.steps[0]["finished_at"] is None and waiting.run.waiting_for == "look 1 of 3"

    done = kit.go_on(waiting.run.id)
    assert (done.status, done.run.attempts, done.run.wakes) == ("succeeded", 1, 2)
    [step] = done.steps
    assert (step["status"], step["error"], step["detail"]) == ("succeeded", None, {"looks": 3})
    assert step["started_at"] == waiting.steps[0]["started_at"] and step["duration_s"] >= 60
    assert did[event.id] == ["done"]
    report = render_report(timeline(kit.audit, Scope(correlation_id=event.correlationid)), "t")
    assert "<h2>Failures (0)</h2>\n<p>None.</p>" in report, "nothing failed, so nothing is listed under Failures"


def test_the_retry_budget_is_the_runs_across_wakes(kit):
    """max_retries=1: the first failed execution is retried; the second ends the run, although a
    wake came between them (each wake-up is a new dramatiq message, with no retries of its own)."""
    event = Envelope.new("test.life.flaky")
    result = kit.run(h(fails_after_each_wake), event)
    assert did[event.id] == ["boom", "boom"]
    assert (result.status, result.run.attempts, result.run.wakes) == ("dead", 2, 2)
    assert "boom 2" in result.run.error and "no retries left after 2 attempt(s)" in result.run.error


def test_attempts_count_failures_not_wakes(kit):
    event = Envelope.new("test.life.always")
    result = kit.run(h(waits_then_fails_every_time), event)
    # execution 1 waits, 2 fails (attempt 1), 3 waits, 4 fails (attempt 2), 5 waits, 6 fails (attempt 3): dead
    assert did[event.id].count("execution") == 6
    assert (result.status, result.run.attempts, result.run.wakes) == ("dead", 3, 3)


def test_a_deadline_counts_from_the_first_wait_whatever_the_waiting_text_says(kit):
    event = Envelope.new("test.life.deadline")
    result = kit.run(h(waits_with_changing_words), event)
    assert result.status == "failed" and "gave up waiting for 6 look(s) so far" in result.run.error
    # looks at 0, 60, …, 300 s: the 300 s deadline ran from the first look, not from each new text
    assert did[event.id].count("look") == 6


def test_each_wait_key_has_its_own_deadline(kit):
    result = kit.run(h(waits_for_two_things), Envelope.new("test.life.two_waits"))
    # 300 s on the first thing, then 200 s on the second: each within its own 250 s
    assert result.status == "succeeded", result.run.error
    assert (result.run.wakes, result.run.attempts) == (5, 1)


def test_an_inline_wait_advances_the_clock_and_parks_when_it_takes_longer(kit):
    quick = kit.run(h(waits_in_place), Envelope.new("test.life.inline", data={"ready_after": 3}))
    assert (quick.status, quick.run.wakes) == ("succeeded", 0)
    slow = kit.run(h(waits_in_place), Envelope.new("test.life.inline", data={"ready_after": 30}))
    assert slow.status == "succeeded" and slow.run.wakes >= 1
    assert kit.clock.monotonic() >= 30


def test_a_step_the_handler_never_comes_back_to_ends_interrupted(kit):
    result = kit.run(h(leaves_a_waiting_step_behind), Envelope.new("test.life.abandons"))
    assert result.status == "succeeded"
    assert [(s["name"], s["status"]) for s in result.steps] == [
        ("first try", "interrupted"),
        ("another way", "succeeded"),
    ]
    assert "without coming back to this step" in result.steps[0]["error"]


def test_a_cancelled_run_runs_its_compensation_and_says_what_was_left(kit):
    event = Envelope.new("test.life.undoable", subject="compute-9")
    waiting = kit.run(h(waits_until_cancelled), event, until_waiting=True)
    kit.cancel(waiting.run.id, "window closed")
    done = kit.go_on(waiting.run.id)
    assert done.status == "cancelled" and done.run.cancel_reason == "window closed"
    assert done.run.error == "cancelled: window closed; put back after 1 look(s)"
    assert did[event.id] == ["past the checkpoint", "undo: window closed after 1 look(s)"]
    assert [(s["name"], s["status"]) for s in done.steps] == [("put back", "succeeded"), ("cancel", "succeeded")]
    assert done.steps[-1]["detail"] == {"reason": "window closed", "left": "put back after 1 look(s)"}


def test_a_cancel_asked_for_while_running_stops_the_run_at_its_next_safe_point(kit):
    event = Envelope.new("test.life.undoable", data={"cancel_while_running": True})
    done = kit.run(h(waits_until_cancelled), event)
    assert (done.status, done.run.wakes) == ("cancelled", 0)
    assert did[event.id] == ["undo: asked while it ran after 1 look(s)"], "it stopped at its checkpoint"


def test_a_handler_without_compensation_is_cancelled_saying_it_undid_nothing(kit):
    waiting = kit.run(h(waits_forever), Envelope.new("test.life.plain"), until_waiting=True)
    kit.cancel(waiting.run.id, "no longer needed")
    done = kit.go_on(waiting.run.id)
    assert done.status == "cancelled"
    assert done.run.error.startswith("cancelled: no longer needed; waits_forever undoes nothing when cancelled")
    assert "(it was at: one of three)" in done.run.error and done.run.progress_note is None


def test_the_reconciler_sends_on_a_waiting_run_whose_wake_up_was_lost(kit):
    event = Envelope.new("test.life.step", subject="node-2")
    waiting = kit.run(h(waits_inside_a_step), event, until_waiting=True)
    assert kit.lose_messages() == 1  # the process that parked it exited
    kit.clock.advance(30 + 30)
    assert kit.reconcile(grace=60) == [], "not overdue by the grace yet"
    kit.clock.advance(31)
    [sent] = kit.reconcile(grace=60)
    assert sent.id == waiting.run.id and kit.reconcile(grace=60) == [], "one message per grace, not one per pass"
    kit.go_on(waiting.run.id, until_waiting=True)
    kit.lose_messages()
    kit.clock.advance(200)
    kit.reconcile(grace=60)
    done = kit.go_on(waiting.run.id)
    assert (done.status, done.run.attempts, done.run.wakes) == ("succeeded", 1, 2)


def test_a_run_whose_worker_died_is_taken_over_as_a_new_attempt_and_the_old_execution_is_fenced(kit):
    event = Envelope.new("test.life.block", subject="node-3")
    served = kit.serve(h(starts_a_step))
    [_accepted] = kit.audit.accept_many([(event, [served.name])])
    policy = policy_for(served, {})
    stalled = kit.lifecycle.begin(served, policy, event.to_dict(), 0)  # claims, then its worker stalls
    stalled.start_step("long call", "node-3")
    kit.clock.advance(kit.settings.lease_seconds + 61)
    [sent] = kit.reconcile(grace=60)
    assert sent.status == "running"
    done = kit.go_on(sent.id)
    assert (done.status, done.run.attempts) == ("succeeded", 2)
    assert [(s["attempt"], s["status"]) for s in done.steps] == [(1, "interrupted"), (2, "succeeded")]

    # the stalled execution comes back and tries to record its end: nothing changes
    stalled.outcome = None
    kit.lifecycle.end(stalled, RuntimeError("late"), retry=True)
    after = kit.result(sent.id)
    assert (after.status, after.run.attempts, after.run.error) == ("succeeded", 2, None)


def test_a_duplicate_or_stale_message_is_skipped_without_a_second_execution(kit, caplog):
    event = Envelope.new("test.life.block")
    result = kit.run(h(starts_a_step), event)
    kit.dispatcher.dispatch("starts_a_step", event)  # a redelivered copy
    with caplog.at_level(logging.INFO, logger="stackreflex.run"):
        kit.go_on(result.run.id)
        kit.process_next()
    assert did[event.id] == ["call"]
    assert "not started by this message: finished" in caplog.text


def test_a_run_whose_envelope_carried_a_secret_is_reported_not_re_dispatched(kit, caplog):
    event = Envelope.new("test.life.step", data={"password": "hunter2"})
    waiting = kit.run(h(waits_inside_a_step), event, until_waiting=True)
    kit.lose_messages()
    kit.clock.advance(1000)
    with caplog.at_level(logging.WARNING, logger="stackreflex.run"):
        assert kit.reconcile(grace=60) == []
    assert "cannot be re-dispatched: its envelope" in caplog.text and "hunter2" not in caplog.text
    assert kit.audit.get_run(waiting.run.id).status == "waiting"


def test_wait_timed_out_is_a_failure_with_the_deadline(kit):
    assert issubclass(WaitTimedOut, Exception)
    result = kit.run(h(waits_forever), Envelope.new("test.life.plain"), max_messages=3)
    assert result.status == "waiting" and result.messages == 3
    kit.clock.advance(3600)
    done = kit.go_on(result.run.id)
    assert done.status == "failed" and "gave up waiting for ever: deadline passed" in done.run.error


def test_a_waiting_run_looks_again_as_soon_as_a_run_it_published_ends(kit):
    """A coordinator holds no thread while its children work and polls nothing: the end of a
    child's run wakes it at once, ten minutes before its own next look."""
    parent = kit.run(waits_for_its_child, Envelope.new("test.life.parent"), until_waiting=True)
    assert parent.status == "waiting" and parent.run.waiting_for == "its child"
    [child] = parent.published
    since = kit.clock.now()
    assert kit.run(the_child, child).status == "succeeded"
    done = kit.go_on(parent.run.id)
    assert done.status == "succeeded" and did[parent.run.envelope_id] == ["child done"]
    assert (done.run.finished_at - since).total_seconds() < 60
