"""stackreflex: event-driven runbooks for OpenStack/TripleO operators.

Write a handler, and the platform routes, runs, retries and audits it:

>>> from stackreflex import handler, Envelope, RunContext
>>> @handler("command.demo.hello")
... def hello(event: Envelope, ctx: RunContext) -> None:
...     with ctx.step("greet", target=event.subject):
...         pass
"""

from .core.envelope import Envelope
from .handlers.context import RunContext
from .core.registry import handler

__version__ = "0.1.0"
__all__ = ["Envelope", "RunContext", "handler", "__version__"]
