"""stackreflex: event-driven runbooks for OpenStack/TripleO operators.

Write a handler, and the platform routes, runs, retries and audits it:

>>> from stackreflex import handler, Envelope, RunContext
>>> @handler("command.demo.hello")
... def hello(event: Envelope, ctx: RunContext) -> None:
...     with ctx.step("greet", target=event.subject):
...         pass

Importing stackreflex redacts the log records of stackreflex and of the libraries it drives
(keystoneauth, openstacksdk, paramiko, kombu, dramatiq…), whoever configured logging and however:
see :mod:`stackreflex.core.logs`.
"""

from .core.logs import install_record_redaction

install_record_redaction()

from .core.envelope import Envelope  # noqa: E402  (after the redaction: their imports may log)
from .handlers.context import RunContext  # noqa: E402
from .core.registry import handler  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Envelope", "RunContext", "handler", "__version__"]
