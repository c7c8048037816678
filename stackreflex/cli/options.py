"""Options every command of the operator runbooks shares."""

from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..core.errors import StackreflexError

Order = TypeVar("Order", bound=BaseModel)

DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")]
Wait = Annotated[bool, typer.Option("--wait", "-w", help="Follow live progress; exit 1 unless it succeeded.")]
Timeout = Annotated[
    float,
    typer.Option(
        help=(
            "Seconds --wait follows before giving up (with a broker the run goes on in the workers; embedded, "
            "what is left is listed with the command that resumes it)."
        )
    ),
]
Deadline = Annotated[
    float,
    typer.Option(
        min=1,
        help=(
            "Seconds the run waits for each long operation (stop, snapshot, image, copy) before failing "
            "with a timeout error."
        ),
    ),
]


def order_from(model: type[Order], **fields: Any) -> Order:
    """A command's data from the options, or one clear line naming what is wrong."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise StackreflexError("; ".join(_said(e) for e in exc.errors())) from None


def _said(error: ErrorDetails) -> str:
    """A validator's own message as it is; pydantic's generic ones name the option they are about."""
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
