"""The handler registry: what each handler reacts to and how it is retried.

>>> @handler("command.demo.#", max_retries=2)
... def hello(event, ctx): ...
>>> registry = Registry()
>>> load_handlers("my_pkg.handlers", registry)

``@handler`` only marks a function; a :class:`Registry` is filled by :func:`load_handlers`
(or ``into=``) and handed to whatever serves it. There is no process-wide registry, so what a
process serves never depends on what happened to be imported before.
"""

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .envelope import Envelope
from .errors import HandlerLoadError
from .topics import topic_matches, validate_pattern

#: Retries after the first attempt before a run is declared dead.
DEFAULT_MAX_RETRIES = 5
#: First retry delay (seconds); each later one doubles, up to the maximum.
DEFAULT_MIN_BACKOFF = 5.0
DEFAULT_MAX_BACKOFF = 300.0
#: One attempt may take this long before it is interrupted (seconds).
DEFAULT_TIME_LIMIT = 600.0

#: Handler names become queue and actor names.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

Predicate = Callable[[Envelope], bool]
#: ``compensate(event, ctx, reason) -> str``: undo what a cancelled run did where it can, and say
#: what was undone and what is left as it is.
Compensation = Callable[..., str | None]
#: A function ``@handler`` marks, given back as it was.
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Handler:
    """A function subscribed to envelope types, with its retry and time policy."""

    name: str
    patterns: tuple[str, ...]
    fn: Callable[..., Any] = field(repr=False)
    when: Predicate | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    min_backoff: float = DEFAULT_MIN_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    time_limit: float = DEFAULT_TIME_LIMIT
    compensate: Compensation | None = field(default=None, repr=False)

    def subscribes_to(self, envelope_type: str) -> bool:
        return any(topic_matches(p, envelope_type) for p in self.patterns)

    def matches(self, envelope: Envelope) -> bool:
        """True if the type matches a pattern and the predicate (if any) accepts the envelope."""
        return self.subscribes_to(envelope.type) and (self.when is None or bool(self.when(envelope)))


class Registry:
    """Handlers by name; the router asks it which handlers an envelope goes to."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, new: Handler) -> Handler:
        existing = self._handlers.get(new.name)
        if existing is not None and existing.fn is not new.fn and _origin(existing.fn) != _origin(new.fn):
            raise HandlerLoadError(
                f"handler name {new.name!r} is used twice: by {_origin(existing.fn)} "
                f"and {_origin(new.fn)}; pass name=... to one of them"
            )
        self._handlers[new.name] = new
        return new

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)

    def patterns(self) -> set[str]:
        return {p for h in self for p in h.patterns}


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


#: The attribute ``@handler`` marks a function with: its :class:`Handler`.
MARK = "__stackreflex_handler__"


def handler_of(fn: Callable[..., Any]) -> Handler | None:
    """The handler ``@handler`` made of ``fn`` (None for a plain function)."""
    found = getattr(fn, MARK, None)
    return found if isinstance(found, Handler) else None


def handler(
    *patterns: str,
    when: Predicate | None = None,
    name: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    min_backoff: float = DEFAULT_MIN_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    time_limit: float = DEFAULT_TIME_LIMIT,
    compensate: Compensation | None = None,
    into: Registry | None = None,
) -> Callable[[_F], _F]:
    """Subscribe a function ``f(event: Envelope, ctx: RunContext) -> None`` to envelope types.

    ``patterns`` are AMQP topic patterns (``*`` one word, ``#`` any); ``when`` further
    filters envelopes; durations are in seconds. ``max_retries`` counts the failed executions
    of a run that are tried again, across its waits. ``compensate(event, ctx, reason)`` runs
    when an operator cancels the run (``stackreflex runs cancel``), with the run's state; it
    returns what it undid and what it left.
    """
    if not patterns:
        raise HandlerLoadError("@handler needs at least one envelope type pattern")
    for p in patterns:
        try:
            validate_pattern(p)
        except ValueError as exc:
            raise HandlerLoadError(str(exc)) from None

    def register(fn: _F) -> _F:
        handler_name = name or fn.__name__
        if not NAME_PATTERN.match(handler_name):
            raise HandlerLoadError(f"handler name {handler_name!r} must be letters, digits, '_' or '-'")
        if len(inspect.signature(fn).parameters) != 2:
            raise HandlerLoadError(f"handler {handler_name!r} must take (event, ctx)")
        made = Handler(
            handler_name, tuple(patterns), fn, when, max_retries, min_backoff, max_backoff, time_limit, compensate
        )
        setattr(fn, MARK, made)
        if into is not None:
            into.add(made)
        return fn

    return register


def load_handlers(spec: str, into: Registry) -> None:
    """Add the handlers of a module (``pkg.module``) or file (``path/to/handlers.py``) to ``into``.

    A file is run as a module of its own each time (it is not put in ``sys.modules``), so two
    registries loading one file hold handlers of their own.
    """
    module = import_spec(spec, "handlers", HandlerLoadError)
    for value in list(vars(module).values()):
        found = handler_of(value) if callable(value) else None
        if found is not None:
            into.add(found)


def import_spec(spec: str, what: str, error: type[Exception]) -> ModuleType:
    """The module ``pkg.module``, or the file ``path/to/file.py`` run as a module of its own (not
    put in ``sys.modules``); a failure is ``error`` saying what could not be loaded from where."""
    try:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise error(f"{what} file {spec} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"stackreflex_{what}_{path.stem}", path)
            if module_spec is None or module_spec.loader is None:
                raise error(f"cannot load {what} from {spec}: not a Python file")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except error:
        raise
    except Exception as exc:
        raise error(f"cannot load {what} from {spec}: {type(exc).__name__}: {exc}") from None
