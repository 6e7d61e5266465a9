"""Workflows and drivers the decide tests share."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from squidmesh_core import (
    COMPLETE,
    Retry,
    WorkflowDefinition,
    chain,
    log,
    manual,
    step,
    wait,
    workflow,
)
from squidmesh_core.protocol import (
    Emit,
)
from tests.unit.helpers import Driver, handler

S = timedelta(seconds=1)


class Charge(BaseModel):
    account_id: str
    amount: int = 10


def linear(*, retry: Retry | None = None) -> WorkflowDefinition:
    return workflow(
        "billing.charge",
        triggers=[manual("charge", payload=Charge), manual("manual_retry", payload=Charge)],
        steps=[
            step("load", handler, output="invoice"),
            wait("settle", timedelta(hours=6)),
            log("note", "charging"),
            step("charge", handler, retry=retry, input=["account_id", "invoice"]),
        ],
        transitions=chain("load", "settle", "note", "charge", COMPLETE),
    )


def topics(driver: Driver) -> list[str]:
    return [c.topic.value for c in driver.decision.commands if isinstance(c, Emit)]


def new(retry: Retry | None = None) -> Driver:
    return Driver(linear(retry=retry), {"account_id": "acc-1"})
