"""The handler bench/runtime.py's worker process serves: nothing to do, so what is measured is
the platform (routing, dispatch, the audit log)."""

from stackreflex import handler


@handler("bench.noop")
def noop(event, ctx) -> None:
    """Does nothing."""
