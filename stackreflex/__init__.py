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

from typing import Any

from .core.logs import install_record_redaction

install_record_redaction()

__version__ = "0.1.0"
__all__ = ["Envelope", "RunContext", "__version__", "handler"]

#: What ``from stackreflex import X`` gives, imported on first use (so that the CLI's
#: ``--help`` does not import the SDKs a run context needs).
_LAZY = {"Envelope": ".core.envelope", "RunContext": ".handlers.context", "handler": ".core.registry"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stackreflex' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
