"""Workflows shared by the runtime tests."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from pydantic import BaseModel
from returns.result import Failure, Result, Success

from squidmesh_core import (
    COMPLETE,
    Exponential,
    Retry,
    StepContext,
    StepFailure,
    chain,
    error,
    log,
    manual,
    ok,
    step,
    wait,
    workflow,
)


class Order(BaseModel):
    order_id: str
    amount: int = 100


class Calls:
    """Counts calls per (run, step) so handlers can fail on chosen attempts."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        self.fail_first: dict[str, int] = {}
        self.contexts: list[StepContext] = []

    def hit(self, ctx: StepContext) -> int:
        self.count[(ctx.run_id, ctx.step)] += 1
        self.contexts.append(ctx)
        return self.count[(ctx.run_id, ctx.step)]


def order_flow(calls: Calls, *, max_attempts: int = 4) -> object:
    async def reserve(data: Order, ctx: StepContext) -> dict[str, object]:
        calls.hit(ctx)
        return {"reserved": data.order_id}

    def charge(data: dict[str, object], ctx: StepContext) -> Result[dict[str, object], StepFailure]:
        n = calls.hit(ctx)
        if n <= calls.fail_first.get("charge", 0):
            return Failure(StepFailure(kind="http", message=f"gateway busy ({n})"))
        return Success({"charged": data["amount"]})

    async def ship(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        calls.hit(ctx)
        return {"shipped": True}

    async def refund(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        calls.hit(ctx)
        return {"refunded": True}

    return workflow(
        "shop.order",
        triggers=[manual("order", payload=Order)],
        steps=[
            step("reserve", reserve, output="reservation"),
            wait("cool_off", timedelta(hours=6)),
            log("note", "charging the order"),
            step(
                "charge",
                charge,
                retry=Retry(
                    max_attempts=max_attempts,
                    backoff=Exponential(min=timedelta(seconds=10), max=timedelta(minutes=5)),
                ),
            ),
            step("ship", ship),
            step("refund", refund),
        ],
        transitions=[
            chain("reserve", "cool_off", "note", "charge", "ship", COMPLETE),
            error("charge", "refund"),
            ok("refund", COMPLETE),
        ],
    )
