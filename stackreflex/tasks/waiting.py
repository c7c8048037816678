"""Short, bounded waits inside a task; anything longer is a continuation (ctx.recheck)."""

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], seconds: float, interval: float = 0.2) -> T:
    """Call ``check`` until it returns something true or ``seconds`` pass; returns its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(interval)
