"""Handlers the tests run inside real worker processes. Each leaves evidence outside the
audit log too (lines appended to a file named in the envelope), so tests can count
what really happened, not only what was recorded."""

import os
import time
from pathlib import Path

from stackreflex import Envelope, RunContext, handler


def mark(event: Envelope, what: str) -> None:
    path = (event.data or {}).get("mark")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {event.id} {os.getpid()}\n")


@handler("test.record", "test.mixed", "test.share", max_retries=2, min_backoff=0.1, max_backoff=0.3)
def note(event: Envelope, ctx: RunContext) -> None:
    with ctx.step("note", target=event.subject) as detail:
        detail["seen"] = (event.data or {}).get("value")
        time.sleep(float((event.data or {}).get("sleep", 0)))
    mark(event, "note")
    ctx.progress(1, 1, "noted")


@handler("test.mixed", "test.fail", max_retries=2, min_backoff=0.1, max_backoff=0.3)
def fail_always(event: Envelope, ctx: RunContext) -> None:
    mark(event, "fail_always")
    fix = (event.data or {}).get("fix")
    with ctx.step("try", target=event.subject):
        if not (fix and Path(fix).exists()):
            url = (event.data or {}).get("metadata_url", "https://swift:8080/v1/AUTH_x/o?temp_url_sig=abc")
            raise RuntimeError(f"backend said no: GET {url} X-Auth-Token: {(event.data or {}).get('token', 'tok')}")


@handler("test.block", max_retries=3, min_backoff=0.1, max_backoff=0.3, time_limit=60)
def block_until_released(event: Envelope, ctx: RunContext) -> None:
    mark(event, "start")
    release = Path(event.data["release"])
    with ctx.step("blocking call", target=event.subject):
        deadline = time.monotonic() + 50
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    mark(event, "done")


@handler("test.wait", max_retries=2, min_backoff=0.1, max_backoff=0.3)
def wait_for_file(event: Envelope, ctx: RunContext) -> None:
    ctx.state["checks"] = ctx.state.get("checks", 0) + 1
    mark(event, "check")
    path = Path(event.data["path"])
    if not path.exists():
        ctx.recheck(
            float(event.data.get("every", 0.3)),
            waiting_for=f"{path.name} to appear",
            deadline=float(event.data.get("deadline", 60)),
        )
    with ctx.step("found", target=path.name) as detail:
        detail["checks"] = ctx.state["checks"]
    mark(event, "found")


@handler("test.pred.*", when=lambda e: (e.data or {}).get("go") is True)
def only_when_go(event: Envelope, ctx: RunContext) -> None:
    mark(event, "go")


@handler("command.test.do", max_retries=0)
def do_command(event: Envelope, ctx: RunContext) -> None:
    with ctx.step("do", target=event.subject):
        pass
    mark(event, "do")


@handler("test.slow", max_retries=1, min_backoff=0.1, max_backoff=0.2, time_limit=1)
def too_slow(event: Envelope, ctx: RunContext) -> None:
    mark(event, "slow")
    with ctx.step("slow call", target=event.subject):
        for _ in range(100):  # Python code polling: interruptible (a single blocking C call is not)
            time.sleep(0.05)


@handler("test.stepwait", max_retries=1, min_backoff=0.1, max_backoff=0.2)
def wait_in_step(event: Envelope, ctx: RunContext) -> None:
    """Waits inside its step twice, then succeeds."""
    with ctx.step("look", target=event.subject) as detail:
        detail["looks"] = ctx.state["looks"] = ctx.state.get("looks", 0) + 1
        if ctx.state["looks"] < 3:
            ctx.recheck(0.2, waiting_for=f"look {ctx.state['looks']} of 3")
    mark(event, "done")


@handler("test.flaky", max_retries=1, min_backoff=0.1, max_backoff=0.2)
def fail_after_each_wake(event: Envelope, ctx: RunContext) -> None:
    """Waits; once woken, fails; its retry waits again; once woken again, fails again."""
    path = Path(event.data["mark"])
    booms = sum(line.startswith("boom") for line in (path.read_text().splitlines() if path.exists() else []))
    looks = ctx.state.get("looks", 0)
    if looks > booms:
        mark(event, "boom")
        raise RuntimeError(f"boom {booms + 1}")
    ctx.state["looks"] = looks + 1
    ctx.recheck(0.2, waiting_for="the next look")


@handler("test.handover", max_retries=0)
def step_then_wait(event: Envelope, ctx: RunContext) -> None:
    """Does step 1 once (its state says so across executions), then waits in place for a file:
    the shape of a run a scaled-down worker must hand over, not cut."""
    if not ctx.state.get("step 1 done"):
        with ctx.step("step 1", target=event.subject) as detail:
            detail["pid"] = os.getpid()
            mark(event, "step1")
        ctx.state["step 1 done"] = True
        ctx.checkpoint()
    path = Path(event.data["path"])
    ctx.wait(path.exists, waiting_for=f"{path.name} to appear", inline=60, every=0.1, recheck_after=0.2)
    with ctx.step("step 2", target=event.subject) as detail:
        detail["pid"] = os.getpid()
    mark(event, "step2")
