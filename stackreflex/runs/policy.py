"""A handler's retry and time policy, and the retry decision, which belongs to the run.

dramatiq's ``Retries`` applies the decision (it re-enqueues the message with its backoff, or
dead-letters it); the decision itself reads the run's row: the budget is counted in attempts
across wake-ups, not per message, since every wake-up is a new message.
"""

from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.records import RunRecord

#: The policy keys an operator may override per handler (``handler_overrides``).
OVERRIDABLE = ("max_retries", "min_backoff", "max_backoff", "time_limit")


@dataclass(frozen=True)
class RetryPolicy:
    """Durations in seconds."""

    max_retries: int
    min_backoff: float
    max_backoff: float
    time_limit: float

    def may_retry(self, run: RunRecord) -> bool:
        """Whether the execution of ``run`` that just failed gets another: ``max_retries`` failed
        executions are tried again (counted since the run's budget began), the next one is not."""
        return run.attempts - run.retry_base <= self.max_retries

    def retry_due_within(self, retries: int) -> float:
        """The longest dramatiq waits before the retry after ``retries`` earlier ones (its
        backoff doubles from ``min_backoff`` and adds up to as much again as jitter)."""
        return min(2 * self.min_backoff * (1 << min(retries, 32)), self.max_backoff)

    def actor_options(self) -> dict[str, Any]:
        """The policy as dramatiq's actor options (milliseconds)."""
        return {
            "max_retries": self.max_retries,
            "min_backoff": _ms(self.min_backoff),
            "max_backoff": _ms(self.max_backoff),
            "time_limit": _ms(self.time_limit),
        }


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def policy_for(handler: Any, overrides: dict[str, dict[str, float]]) -> RetryPolicy:
    """``handler``'s own policy with the operator's overrides for it applied."""
    mine = overrides.get(handler.name, {})
    unknown = set(mine) - set(OVERRIDABLE)
    if unknown:
        raise ConfigError(f"handler_overrides.{handler.name}: unknown keys {', '.join(sorted(unknown))}")
    values = {key: mine.get(key, getattr(handler, key)) for key in OVERRIDABLE}
    return RetryPolicy(
        max_retries=int(values["max_retries"]),
        min_backoff=float(values["min_backoff"]),
        max_backoff=float(values["max_backoff"]),
        time_limit=float(values["time_limit"]),
    )
