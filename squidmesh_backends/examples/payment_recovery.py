"""Example workflow: recover a failed payment.

load invoice -> wait for settlement -> log -> check the gateway (retried with
backoff) -> notify the customer -> complete. A gateway check that keeps failing
routes to ``issue_credit`` instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel
from returns.result import Failure, Result, Success

from squidmesh_core import (
    COMPLETE,
    Exponential,
    Retry,
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


class Recovery(BaseModel):
    """What a caller supplies to start a recovery."""

    account_id: str
    invoice_id: str
    gateway_url: str = "http://127.0.0.1:0/status"


def load_invoice(data: Mapping[str, object], ctx: object) -> dict[str, object]:
    return {"invoice_id": data["invoice_id"], "amount_cents": 4200, "currency": "EUR"}


def check_gateway(
    data: Mapping[str, object], ctx: object
) -> Result[dict[str, object], StepFailure]:
    attempt = getattr(ctx, "attempt", 1)
    if attempt == 1:
        return Failure(
            StepFailure(kind="http", message="gateway answered 503", details={"status": 503})
        )
    return Success({"status": "settled", "checked_on_attempt": attempt})


def issue_credit(data: Mapping[str, object], ctx: object) -> dict[str, object]:
    return {"credited": True}


def notify_customer(data: Mapping[str, object], ctx: object) -> dict[str, object]:
    return {"channel": "email", "to": data["account_id"]}


payment_recovery = workflow(
    "billing.payment_recovery",
    triggers=[manual("payment_recovery", payload=Recovery)],
    steps=[
        step("load_invoice", load_invoice, output="invoice"),
        wait("wait_for_settlement", timedelta(seconds=5)),
        log("log_attempt", "invoice loaded, checking the gateway"),
        step(
            "check_gateway",
            check_gateway,
            output="gateway",
            retry=Retry(
                max_attempts=5,
                backoff=Exponential(min=timedelta(seconds=1), max=timedelta(seconds=30)),
            ),
        ),
        step("notify_customer", notify_customer, output="notification"),
        step("issue_credit", issue_credit, output="credit"),
    ],
    transitions=[
        chain(
            "load_invoice",
            "wait_for_settlement",
            "log_attempt",
            "check_gateway",
            "notify_customer",
            COMPLETE,
        ),
        error("check_gateway", "issue_credit"),
        ok("issue_credit", COMPLETE),
    ],
)
