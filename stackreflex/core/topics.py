"""AMQP topic patterns: ``*`` matches one dotted word, ``#`` zero or more.

The broker applies the same rule to bindings; the router applies it again to pick
the handlers for an envelope that arrived on a queue bound with many patterns.

>>> topic_matches("heat.resource.*", "heat.resource.CREATE_IN_PROGRESS")
True
>>> topic_matches("command.#", "command")
True
"""

from functools import lru_cache


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _match(rest, words[1:])


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """True if ``routing_key`` matches the AMQP topic ``pattern``."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def validate_pattern(pattern: str) -> str:
    """Reject patterns the broker would accept but that cannot mean what was intended."""
    words = pattern.split(".")
    if not pattern or any(w == "" for w in words):
        raise ValueError(f"topic pattern {pattern!r} has an empty word")
    for w in words:
        if w not in ("*", "#") and ("*" in w or "#" in w):
            raise ValueError(f"topic pattern {pattern!r}: wildcards must be whole words")
    return pattern
