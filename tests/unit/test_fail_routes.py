"""Routes that end a run as failed, and steps without routes."""

from __future__ import annotations

import pytest

from squidmesh_core import (
    COMPLETE,
    FAIL,
    InvalidWorkflowError,
    RunStatus,
    StepFailure,
    error,
    manual,
    ok,
    step,
    workflow,
)
from squidmesh_core.dsl import approval
from squidmesh_core.protocol import Operator, RejectRequested
from tests.unit.helpers import Driver, handler

DECLINING = workflow(
    "routes.declining",
    triggers=[manual()],
    steps=[step("charge", handler), step("notify_decline", handler), step("ship", handler)],
    transitions=[ok("charge", "ship"), error("charge", "notify_decline"),
                 ok("notify_decline", FAIL)],
)  # fmt: skip


def test_an_ok_route_to_fail_ends_the_run_failed_after_the_step() -> None:
    d = Driver(DECLINING)
    d.deliver("charge")
    d.fail("charge", StepFailure(kind="declined", message="card declined", retryable=False))
    assert d.state.status is RunStatus.RUNNING and d.state.last_error is None
    ended = d.run_step("notify_decline").state
    assert ended.status is RunStatus.FAILED
    assert ended.last_error is not None and ended.last_error.kind == "routed_to_fail"


def test_an_error_route_to_fail_keeps_the_steps_error() -> None:
    flow = workflow(
        "routes.direct",
        triggers=[manual()],
        steps=[step("charge", handler)],
        transitions=[ok("charge", COMPLETE), error("charge", FAIL)],
    )
    d = Driver(flow)
    d.deliver("charge")
    d.fail("charge", StepFailure(kind="declined", message="card declined", retryable=False))
    assert d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "declined"


def test_a_rejection_can_fail_the_run_through_its_route() -> None:
    flow = workflow(
        "routes.review",
        triggers=[manual()],
        steps=[approval("review"), step("ship", handler)],
        transitions=[ok("review", "ship"), error("review", FAIL)],
    )
    d = Driver(flow)
    d.accept(RejectRequested(by=Operator(actor="bo")))
    assert d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "rejected"


def test_a_step_without_routes_is_a_last_step() -> None:
    flow = workflow(
        "routes.last",
        triggers=[manual()],
        steps=[step("first", handler), step("last", handler)],
        transitions=[ok("first", "last")],
    )
    d = Driver(flow)
    d.run_step("first")
    d.run_step("last")
    assert d.status() is RunStatus.COMPLETED


def test_an_error_route_without_an_ok_route_is_still_refused() -> None:
    with pytest.raises(InvalidWorkflowError, match="has no ok transition"):
        workflow(
            "routes.half",
            triggers=[manual()],
            steps=[step("a", handler), step("b", handler)],
            transitions=[ok("a", "b"), error("b", FAIL)],
        )


def test_fail_is_a_reserved_step_name() -> None:
    with pytest.raises(InvalidWorkflowError, match="reserved name 'fail'"):
        workflow("routes.bad", triggers=[manual()], steps=[step("fail", handler)])
