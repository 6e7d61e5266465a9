"""Example workflow: an order that undoes itself when it cannot be delivered (a saga).

reserve stock -> charge the card -> book a courier. When no courier can take the
order, the run fails, and before it ends ``failed`` it compensates what it did,
latest first: the charge is refunded, then the stock released. Each
compensation is a durable job with its own retries and idempotency key (pass
``ctx.idempotency_key`` to the payment provider so a retried refund is one
refund).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from squidmesh_core import (
    Fixed,
    NonRetryableError,
    Retry,
    StepContext,
    WorkflowDefinition,
    chain,
    manual,
    step,
    workflow,
)


class Order(BaseModel):
    """What a caller supplies to start an order."""

    order_id: str
    amount: int
    courier: str = "any"
    """``none`` makes the courier booking fail (to see the compensation)."""


async def reserve_stock(data: Order, ctx: StepContext) -> dict[str, object]:
    return {"reservation": f"R-{data.order_id}"}


async def release_stock(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"released": data["output"]}


async def charge_card(data: Order, ctx: StepContext) -> dict[str, object]:
    return {"charge": {"amount": data.amount, "key": ctx.idempotency_key}}


async def refund_card(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"refunded": data["output"], "refund_key": ctx.idempotency_key}


async def book_courier(data: Order, ctx: StepContext) -> dict[str, object]:
    if data.courier == "none":  # retrying will not help: fail for good
        raise NonRetryableError(f"no courier can deliver order {data.order_id}", code="no_courier")
    return {"courier": data.courier}


def order_saga() -> WorkflowDefinition:
    """The example workflow."""
    patient = Retry(max_attempts=5, backoff=Fixed(delay=timedelta(seconds=1)))
    return workflow(
        "examples.order_saga",
        triggers=[manual("order", payload=Order)],
        steps=[
            step("reserve_stock", reserve_stock, compensate=release_stock),
            step("charge_card", charge_card, compensate=refund_card, compensate_retry=patient),
            step("book_courier", book_courier),
        ],
        transitions=chain("reserve_stock", "charge_card", "book_courier"),
    )


ORDER_SAGA = order_saga()
