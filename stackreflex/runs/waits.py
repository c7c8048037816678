"""How an execution ends early without failing: it waits (a continuation), it is cancelled, or
it lost its lease to another execution.

These derive from ``BaseException``, as ``KeyboardInterrupt`` does, so a handler's
``except Exception`` around a wait cannot swallow one by mistake.
"""

import sys
from datetime import datetime


class RunInterrupt(BaseException):
    """An execution ends here; what happens to its run is the lifecycle's to decide."""


class Suspend(RunInterrupt):
    """Park the run and run its handler again in ``after`` seconds, holding no message.

    ``key`` names the wait: its deadline counts from the first of consecutive waits with
    the same key, whatever ``waiting_for`` (the text shown to operators) says each time.
    """

    def __init__(self, after: float, waiting_for: str, key: str, deadline: datetime):
        super().__init__(waiting_for)
        self.after, self.waiting_for, self.key, self.deadline = after, waiting_for, key, deadline


class RunCancelled(RunInterrupt):
    """An operator cancelled the run (``stackreflex runs cancel``); it stops at this safe point."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LeaseLost(RunInterrupt):
    """Another execution took the run over (this one's lease lapsed): record nothing more."""


#: Modules whose frames are plumbing around a wait, skipped when naming its call site.
_PLUMBING = frozenset({__name__, "stackreflex.runs.execution", "stackreflex.handlers.context"})


def call_site_key(depth: int = 1) -> str:
    """A wait's default key: where the handler waits (module, function and line), never the text
    it shows, which may carry counts that change from one look to the next."""
    frame = sys._getframe(depth)
    while frame.f_back is not None and frame.f_globals.get("__name__") in _PLUMBING:
        frame = frame.f_back
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_qualname}:{frame.f_lineno}"
