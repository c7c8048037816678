"""Short, bounded waits inside a task; anything longer is a continuation (ctx.recheck)."""

from collections.abc import Callable
from typing import TypeVar

from ..core.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")


def wait_until(check: Callable[[], T], seconds: float, interval: float = 0.2, clock: Clock = SYSTEM_CLOCK) -> T:
    """Call ``check`` until it returns something true or ``seconds`` pass; returns its last answer.
    (A handler passes ``ctx.clock``, whose pauses end early when its process is stopping.)"""
    deadline = clock.monotonic() + seconds
    while True:
        answer = check()
        if answer or clock.monotonic() >= deadline or clock.stopped():
            return answer
        clock.sleep(interval)
