"""The one clock: timezone-aware UTC, so stored and compared times never mix zones."""

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
