"""Copies of an image to Glance stores (edge sites) with the copy-image import.

A copy is done only when Glance lists the store in the image's ``stores``; it failed when
the store shows up in ``os_glance_failed_import``. Another import holding the image's lock
(409) is waited out, not reported. Nothing here ever deletes an image or a store's copy.
"""

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.errors import StackreflexError
from ..core.registry import handler
from ..tasks.images import (
    CENTRAL,
    CopyRefused,
    ImageLocked,
    ImageStores,
    check_stores,
    find_image,
    image_now,
    start_copy,
)
from .context import RunContext
from .orders import read_order

#: Default give-up time for a copy (seconds), and the pause before asking again for a held lock.
COPY_DEADLINE, LOCK_RETRY = 3600.0, 2.0


class CopyOrder(BaseModel):
    """The data of ``command.image.copy``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)
    stores: list[str] = Field(default_factory=list)
    all_stores: bool = False
    deadline: float = Field(default=COPY_DEADLINE, gt=0)

    @model_validator(mode="after")
    def _targets(self) -> Self:
        if bool(self.stores) == self.all_stores:
            raise ValueError("give either stores or all_stores")
        return self


@handler("command.image.copy", max_retries=5, min_backoff=2, max_backoff=60, time_limit=60)
def copy_image(event: Envelope, ctx: RunContext) -> None:
    """Copy an active image to Glance stores and wait until every target store has it or failed."""
    order = read_order(CopyOrder, event, ctx)
    if "image" not in ctx.state:
        try:
            image = find_image(ctx.cloud, order.image)
        except StackreflexError as exc:
            ctx.fail(str(exc))
        ctx.state["image"] = {"id": image.id, "name": image.name}
    copy_to_stores(ctx, ctx.state["image"]["id"], None if order.all_stores else order.stores, deadline=order.deadline)


def copy_to_stores(
    ctx: RunContext, image_id: str, stores: list[str] | None, *, deadline: float, slot: str = "copy"
) -> None:
    """Copy ``image_id`` to ``stores`` (None: every store it is not in yet) and wait for the outcome
    of each; fails naming the stores Glance reports failed. Its state lives in ``ctx.state[slot]``."""
    state = ctx.state.setdefault(slot, {})
    conn = ctx.cloud
    if "targets" not in state:
        _plan(ctx, state, image_id, stores)
    targets, results = state["targets"], state["results"]
    label = state["label"]
    if targets and "sent" not in state:
        try:
            start_copy(conn, image_now(conn, image_id), targets)
        except ImageLocked:
            state["lock_waits"] = state.get("lock_waits", 0) + 1
            ctx.recheck(
                LOCK_RETRY,
                waiting_for=f"the import lock of {label} (another import is running)",
                key=f"{slot}: import lock",
                deadline=deadline,
            )
        except CopyRefused as exc:
            ctx.fail(str(exc))
        state["sent"] = utcnow().isoformat()
        ctx.checkpoint()  # the import is started: a resumed run only follows it

    def settled() -> ImageStores | None:
        now = image_now(conn, image_id)
        for store in targets:
            if store in results:
                continue
            if store in now.stores:
                results[store] = "copied"
                _record(ctx, state, image_id, store)
            elif store in now.failed and store not in now.importing:
                results[store] = "failed"
                _record(ctx, state, image_id, store, error=f"Glance lists {store} in os_glance_failed_import")
        failed = sum(r == "failed" for r in results.values())
        note = f"{len(results) - failed}/{len(targets)} stores copied" + (f", {failed} failed" if failed else "")
        if note != state.get("reported"):
            ctx.progress(len(results), len(targets), note)
            state["reported"] = note
            ctx.checkpoint()
        return now if len(results) == len(targets) else None

    now = ctx.wait(
        settled, waiting_for=f"{label} to be copied to {', '.join(targets)}", key=f"{slot}: copy", deadline=deadline
    )
    if state["had_central"]:
        with ctx.step("central copy kept", target=CENTRAL) as detail:
            detail.update(image_id=image_id, stores=sorted(now.stores))
            if CENTRAL not in now.stores:
                raise StackreflexError(f"{label} is no longer in the {CENTRAL} store")
    failed = sorted(s for s, r in results.items() if r == "failed")
    if failed:
        copied = sorted(s for s, r in results.items() if r == "copied")
        ctx.fail(
            f"copy of {label} failed to {', '.join(failed)} (Glance lists them in os_glance_failed_import); "
            f"copied to: {', '.join(copied) or 'none'}"
        )


def _plan(ctx: RunContext, state: dict[str, Any], image_id: str, stores: list[str] | None) -> None:
    try:
        known = check_stores(ctx.cloud, stores or [])
    except StackreflexError as exc:
        ctx.fail(str(exc))
    asked = list(stores) if stores is not None else known
    image = image_now(ctx.cloud, image_id)
    if image.status != "active":
        ctx.fail(f"{image.label} is {image.status}, not active: only an active image is copied")
    state.update(
        label=image.label, targets=sorted(set(asked) - image.stores), results={}, had_central=CENTRAL in image.stores
    )
    for store in sorted(set(asked) & image.stores):
        ctx.record(
            "copy image",
            target=store,
            started_at=utcnow(),
            detail={"image_id": image_id, "store": store, "note": "already in this store"},
        )
    ctx.checkpoint()


def _record(ctx: RunContext, state: dict[str, Any], image_id: str, store: str, error: str | None = None) -> None:
    started = datetime.fromisoformat(state["sent"])
    ctx.record(
        "copy image",
        target=store,
        started_at=started,
        status="failed" if error else "succeeded",
        detail={
            "image_id": image_id,
            "store": store,
            "lock_waits": state.get("lock_waits", 0),
            "duration_s": round((utcnow() - started).total_seconds(), 3),
        },
        error=error,
    )
