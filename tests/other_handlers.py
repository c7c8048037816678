"""Handlers that only a second worker serves: routing must not depend on which worker's
router took an envelope."""

from stackreflex import Envelope, RunContext, handler


@handler("test.elsewhere.ping", max_retries=0)
def elsewhere(event: Envelope, ctx: RunContext) -> None:
    with ctx.step("pong", target=event.subject):
        pass


def wanted(event: Envelope) -> bool:
    return bool((event.data or {}).get("go"))


@handler("test.elsewhere.filtered", when=wanted, max_retries=0)
def elsewhere_filtered(event: Envelope, ctx: RunContext) -> None:
    with ctx.step("go", target=event.subject):
        pass
