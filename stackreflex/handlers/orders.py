"""A command's data, read into its pydantic model: the one way every command handler validates input."""

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ..core.envelope import Envelope
from .context import RunContext

Order = TypeVar("Order", bound=BaseModel)


def read_order(model: type[Order], event: Envelope, ctx: RunContext) -> Order:
    """The command's data, validated; a malformed command fails with the field and the problem."""
    try:
        return model.model_validate(event.data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        ctx.fail(f"invalid {event.type}: {problems}")
