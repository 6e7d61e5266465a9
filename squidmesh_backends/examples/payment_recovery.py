"""Example workflow: recover a failed payment.

load invoice -> wait for settlement -> log -> check the gateway over HTTP
(retried with exponential backoff) -> notify the customer -> complete. A gateway
that keeps failing routes to ``issue_credit`` instead of failing the run.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from returns.result import Failure, Result, Success

from squidmesh_backends.tools import HttpTool, invoke
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


class Recovery(BaseModel):
    """What a caller supplies to start a recovery."""

    account_id: str
    invoice_id: str
    gateway_url: str = "http://127.0.0.1:9/status"


class GatewayCheck(BaseModel):
    """The part of the run's input the gateway check needs."""

    invoice_id: str
    gateway_url: str


async def load_invoice(data: Recovery, ctx: StepContext) -> dict[str, object]:
    return {"invoice_id": data.invoice_id, "amount_cents": 4200, "currency": "EUR"}


GATEWAY = HttpTool(name="gateway", idempotency_header="Idempotency-Key", default_timeout=2.0)
"""The payment gateway, through the HTTP tool: one pooled client, no hidden retries."""


async def check_gateway(
    data: GatewayCheck, ctx: StepContext
) -> Result[dict[str, object], StepFailure]:
    """Ask the payment gateway for the invoice's status; 5xx and timeouts are retried."""
    outcome = await invoke(
        GATEWAY,
        {"method": "GET", "url": data.gateway_url, "params": {"invoice": data.invoice_id}},
        context=ctx,
    )
    match outcome:
        case Failure(problem):
            return Failure(problem.to_failure())
        case Success(result):
            body = result.value["body"]
            status = body.get("status") if isinstance(body, dict) else None
            if not isinstance(status, str):
                return Failure(
                    StepFailure(
                        kind="invalid_response",
                        message="the gateway answer has no status",
                        retryable=False,
                    )
                )
            return Success({"status": status, "checked_on_attempt": ctx.attempt})
    raise AssertionError(outcome)


async def issue_credit(data: Recovery, ctx: StepContext) -> dict[str, object]:
    return {"credited": True}


async def notify_customer(data: Recovery, ctx: StepContext) -> dict[str, object]:
    return {"channel": "email", "to": data.account_id}


payment_recovery = workflow(
    "billing.payment_recovery",
    triggers=[manual("payment_recovery", payload=Recovery)],
    steps=[
        step("load_invoice", load_invoice, output="invoice"),
        wait("wait_for_settlement", timedelta(seconds=2)),
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
