"""Example workflow: an order a person approves, shipped when the warehouse says so.

reserve stock -> a reviewer approves (or rejects: release the stock) -> wait for
the warehouse's ``shipped`` signal (or give up after ``shipment_timeout``:
release the stock) -> notify the customer -> complete. No worker is held while
the run waits for the reviewer or the warehouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel

from squidmesh_core import (
    COMPLETE,
    StepContext,
    WorkflowDefinition,
    approval,
    chain,
    error,
    manual,
    step,
    wait_for_signal,
    workflow,
)


class Order(BaseModel):
    """What a caller supplies to start an order."""

    order_id: str
    amount: int


class Shipped(BaseModel):
    """What the warehouse sends with its ``shipped`` signal."""

    carrier: str
    tracking: str


async def reserve(data: Order, ctx: StepContext) -> dict[str, object]:
    return {"reserved": {"order_id": data.order_id, "amount": data.amount}}


async def notify(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    shipment = ctx.context.get("shipment")
    tracking = shipment.get("tracking") if isinstance(shipment, Mapping) else None
    return {"notified": {"order_id": ctx.payload["order_id"], "tracking": tracking}}


async def release(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"released": ctx.payload["order_id"]}


def order_approval(shipment_timeout: timedelta = timedelta(days=3)) -> WorkflowDefinition:
    """The example workflow, with the warehouse given ``shipment_timeout`` to ship."""
    return workflow(
        "examples.order_approval",
        triggers=[manual("order", payload=Order)],
        steps=[
            step("reserve", reserve),
            approval("review"),
            wait_for_signal("shipment", "shipped", payload=Shipped, timeout=shipment_timeout),
            step("notify", notify),
            step("release", release),
        ],
        transitions=[
            *chain("reserve", "review", "shipment", "notify", COMPLETE),
            error("review", "release"),
            error("shipment", "release"),
            *chain("release", COMPLETE),
        ],
    )


ORDER_APPROVAL = order_approval()
