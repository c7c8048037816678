"""The handler registry: what each handler reacts to and how it is retried.

>>> @handler("command.demo.#", max_retries=2)
... def hello(event, ctx): ...
"""

import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..bus.envelope import Envelope
from ..bus.topics import topic_matches, validate_pattern
from ..errors import HandlerLoadError

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


@dataclass(frozen=True)
class Handler:
    """A function subscribed to envelope types, with its retry and time policy."""

    name: str
    patterns: tuple[str, ...]
    fn: Callable = field(repr=False)
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
            raise HandlerLoadError(f"handler name {new.name!r} is used twice: by {_origin(existing.fn)} "
                                   f"and {_origin(new.fn)}; pass name=... to one of them")
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


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


#: The registry that ``@handler`` adds to and that workers serve.
registry = Registry()


def handler(*patterns: str, when: Predicate | None = None, name: str | None = None,
            max_retries: int = DEFAULT_MAX_RETRIES, min_backoff: float = DEFAULT_MIN_BACKOFF,
            max_backoff: float = DEFAULT_MAX_BACKOFF, time_limit: float = DEFAULT_TIME_LIMIT,
            compensate: Compensation | None = None, into: Registry | None = None) -> Callable:
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

    def register(fn: Callable) -> Callable:
        handler_name = name or fn.__name__
        if not NAME_PATTERN.match(handler_name):
            raise HandlerLoadError(f"handler name {handler_name!r} must be letters, digits, '_' or '-'")
        if len(inspect.signature(fn).parameters) != 2:
            raise HandlerLoadError(f"handler {handler_name!r} must take (event, ctx)")
        (into if into is not None else registry).add(Handler(handler_name, tuple(patterns), fn, when, max_retries,
                                                             min_backoff, max_backoff, time_limit, compensate))
        return fn

    return register


def load_handlers(spec: str) -> None:
    """Import a handler module (``pkg.module``) or file (``path/to/handlers.py``), registering its handlers."""
    try:
        if spec.endswith(".py") or "/" in spec:
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise HandlerLoadError(f"handler file {spec} does not exist")
            module_name = f"stackreflex_user_handlers.{path.stem}"
            if module_name in sys.modules:
                return
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except HandlerLoadError:
        raise
    except Exception as exc:
        raise HandlerLoadError(f"cannot load handlers from {spec}: {type(exc).__name__}: {exc}") from None
