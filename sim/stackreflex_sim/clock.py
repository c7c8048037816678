"""Simulated time: a speed factor so a story that takes minutes on a real cloud takes seconds."""

import threading
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The real time, in UTC, as the services stamp their records."""
    return datetime.now(UTC)


@dataclass
class SimClock:
    """``speed`` simulated seconds pass per real second."""

    speed: float = 1.0

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.speed

    def later(self, simulated: float, action, *args) -> threading.Timer:
        """Run ``action(*args)`` after ``simulated`` seconds of simulated time."""
        timer = threading.Timer(self.real_seconds(simulated), action, args=args)
        timer.daemon = True
        timer.start()
        return timer
