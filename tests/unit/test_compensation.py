"""Saga compensation decisions: who compensates, in which order, and how a run ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from returns.result import Failure

from squidmesh_core import (
    COMPLETE,
    FAIL,
    InvalidWorkflowError,
    Retry,
    RunId,
    RunStatus,
    StepFailure,
    StepStatus,
    WorkflowDefinition,
    chain,
    error,
    manual,
    ok,
    step,
    workflow,
)
from squidmesh_core.protocol import (
    CancelRequested,
    JobDelivered,
    LeaseToken,
    Operator,
    ReplayRequested,
    SignalSent,
    Topic,
    decide,
)
from tests.unit.helpers import RUN, Driver, handler

FATAL = StepFailure(kind="declined", message="no", retryable=False)


def undo(data: object, ctx: object) -> dict[str, object]:
    return {"undone": True}


def order_flow(**kw: object) -> WorkflowDefinition:
    return workflow(
        "saga.order",
        triggers=[manual()],
        steps=[
            step("reserve", handler, compensate=undo),
            step("note", handler),
            step("charge", handler, compensate=undo, compensate_retry=Retry(max_attempts=2)),
            step("ship", handler),
        ],
        transitions=chain("reserve", "note", "charge", "ship"),
        **kw,  # type: ignore[arg-type]
    )


ORDER = order_flow()


def failed_at_ship(definition: WorkflowDefinition = ORDER) -> Driver:
    d = Driver(definition)
    for name in ("reserve", "note", "charge"):
        d.run_step(name, {name: 1})
        d.advance(timedelta(seconds=1))
    d.deliver("ship")
    d.fail("ship", FATAL)
    return d


def topics(d: Driver) -> list[str]:
    return [c.topic.value for c in d.decision.commands if hasattr(c, "topic")]


def test_a_failed_run_compensates_its_completed_steps_latest_first() -> None:
    d = failed_at_ship()
    assert d.status() is RunStatus.COMPENSATING
    assert d.state.compensation is not None
    assert d.state.compensation.plan == ("charge", "reserve")
    assert d.state.compensation.ends_as is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "declined"
    assert [j.step for j in d.state.jobs] == ["charge:compensate"]
    assert "compensation.started" in topics(d)
    assert d.state.current_steps == ("charge:compensate",)


def test_a_compensation_gets_the_step_its_input_output_and_the_cause() -> None:
    d = failed_at_ship()
    d.deliver("charge:compensate")
    started = d.decision.started
    assert started is not None and started.step == "charge:compensate"
    assert started.input["step"] == "charge"
    assert started.input["output"] == {"charge": 1}
    assert isinstance(started.input["error"], dict) and started.input["error"]["kind"] == "declined"


def test_compensations_run_one_at_a_time_and_the_run_ends_failed() -> None:
    d = failed_at_ship()
    d.run_step("charge:compensate")
    assert d.status() is RunStatus.COMPENSATING
    assert [j.step for j in d.state.jobs] == ["reserve:compensate"]
    d.run_step("reserve:compensate", {"undone": True})
    assert d.status() is RunStatus.FAILED
    assert d.state.compensation is not None and d.state.compensation.finished_at == d.now
    assert d.state.last_error is not None and d.state.last_error.kind == "declined"
    assert "compensation.finished" in topics(d)
    undone = d.state.step_run("reserve:compensate")
    assert undone is not None and undone.output == {"undone": True}


def test_a_compensation_retries_by_its_own_policy_without_touching_the_cause() -> None:
    d = failed_at_ship()
    d.deliver("charge:compensate")
    d.fail("charge:compensate", StepFailure(kind="io", message="refund api down"))
    assert d.status() is RunStatus.COMPENSATING
    assert d.scheduled()[0][:2] == ("charge:compensate", 2)
    assert d.state.last_error is not None and d.state.last_error.kind == "declined"


def test_a_compensation_that_gives_up_lets_the_others_run_then_ends_compensation_failed() -> None:
    d = failed_at_ship()
    for _ in range(2):
        d.deliver("charge:compensate")
        d.fail("charge:compensate", StepFailure(kind="io", message="refund api down"))
    assert "compensation.gave_up" in topics(d)
    assert [j.step for j in d.state.jobs] == ["reserve:compensate"]
    d.run_step("reserve:compensate")
    assert d.status() is RunStatus.COMPENSATION_FAILED and d.status().terminal
    error_ = d.state.last_error
    assert error_ is not None and error_.kind == "compensation_failed"
    assert "'charge'" in error_.message
    cause = error_.details["cause"]
    assert isinstance(cause, dict) and cause["kind"] == "declined"


def test_a_lost_compensation_runs_again_without_using_its_retries() -> None:
    d = failed_at_ship()
    d.deliver("charge:compensate")
    d.expire("charge:compensate")
    assert d.scheduled()[0][:2] == ("charge:compensate", 2)
    d.run_step("charge:compensate")
    assert [j.step for j in d.state.jobs] == ["reserve:compensate"]


def test_a_run_with_nothing_to_undo_fails_at_once() -> None:
    d = Driver(ORDER)
    d.deliver("reserve")
    d.fail("reserve", FATAL)
    assert d.status() is RunStatus.FAILED and d.state.compensation is None


def test_a_route_to_fail_compensates_too() -> None:
    flow = workflow(
        "saga.declined",
        triggers=[manual()],
        steps=[step("reserve", handler, compensate=undo), step("charge", handler)],
        transitions=[ok("reserve", "charge"), ok("charge", COMPLETE), error("charge", FAIL)],
    )
    d = Driver(flow)
    d.run_step("reserve")
    d.deliver("charge")
    d.fail("charge", FATAL)
    assert d.status() is RunStatus.COMPENSATING
    d.run_step("reserve:compensate")
    assert d.status() is RunStatus.FAILED


def test_a_missed_deadline_compensates() -> None:
    d = Driver(order_flow(deadline=timedelta(minutes=5)))
    d.run_step("reserve")
    d.advance(timedelta(minutes=6))
    d.deliver("__deadline__")
    assert d.status() is RunStatus.COMPENSATING
    assert d.state.last_error is not None and d.state.last_error.kind == "deadline_exceeded"
    d.run_step("reserve:compensate")
    assert d.status() is RunStatus.FAILED


def test_a_cancel_compensates_only_when_the_workflow_opts_in() -> None:
    by = Operator(actor="ops")
    plain = Driver(ORDER)
    plain.run_step("reserve")
    plain.accept(CancelRequested(by=by))
    plain.deliver("note")
    assert plain.status() is RunStatus.CANCELLED
    opted = Driver(order_flow(compensate_on_cancel=True))
    opted.run_step("reserve")
    opted.accept(CancelRequested(by=by))
    opted.deliver("note")
    assert opted.status() is RunStatus.COMPENSATING
    assert opted.state.compensation is not None
    assert opted.state.compensation.ends_as is RunStatus.CANCELLED
    opted.run_step("reserve:compensate")
    assert opted.status() is RunStatus.CANCELLED


def test_a_compensating_run_refuses_cancels_and_signals() -> None:
    d = failed_at_ship()
    refused = d.reject(CancelRequested(by=Operator(actor="ops")))
    assert refused.code == "invalid_transition"
    signal = d.reject(SignalSent(name="go", payload={}, by=Operator()))
    assert signal.code in ("run_not_active", "unknown_signal")


def test_a_forward_job_is_stale_once_the_run_compensates() -> None:
    d = Driver(ORDER)
    d.run_step("reserve")
    ship_job = d.job("note")
    d.deliver("note")
    d.fail("note", FATAL)
    refused = d.reject(JobDelivered(job_id=ship_job, lease_token=LeaseToken("late")))
    assert refused.code == "stale_delivery"


FANOUT = workflow(
    "saga.fanout",
    triggers=[manual()],
    steps=[
        step("a", handler, compensate=undo),
        step("b", handler, compensate=undo),
        step("c", handler, after=["a", "b"]),
    ],
)


def test_a_sibling_still_running_keeps_the_run_compensating_until_it_reports() -> None:
    d = Driver(FANOUT)
    d.deliver("a")
    d.deliver("b")
    d.fail("a", FATAL)  # nothing completed, but b may yet
    assert d.status() is RunStatus.COMPENSATING
    assert d.state.compensation is not None and list(d.state.compensation.plan) == []
    d.succeed("b")
    assert d.state.compensation is not None and list(d.state.compensation.plan) == ["b"]
    d.run_step("b:compensate")
    assert d.status() is RunStatus.FAILED


def test_a_sibling_that_fails_while_compensating_ends_the_run() -> None:
    d = Driver(FANOUT)
    d.deliver("a")
    d.deliver("b")
    d.fail("a", FATAL)
    d.fail("b", FATAL)
    assert d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "declined"


def test_the_run_waits_for_a_running_forward_attempt_before_it_ends() -> None:
    flow = workflow(
        "saga.wait",
        triggers=[manual()],
        steps=[
            step("a", handler, compensate=undo),
            step("b", handler, compensate=undo),
            step("d", handler),
            step("c", handler, after=["a", "b", "d"]),
        ],
    )
    d = Driver(flow)
    d.run_step("a")
    d.deliver("b")
    d.deliver("d")
    d.fail("d", FATAL)
    assert d.status() is RunStatus.COMPENSATING
    running = [j.step for j in d.state.jobs]
    assert running == ["b"]  # no compensation starts while b may still complete
    d.succeed("b")
    assert d.state.compensation is not None and d.state.compensation.plan == ("b", "a")
    d.run_step("b:compensate")  # b completed last: undone first
    d.run_step("a:compensate")
    assert d.status() is RunStatus.FAILED


def test_a_replay_of_a_compensated_run_starts_fresh() -> None:
    d = failed_at_ship()
    d.run_step("charge:compensate")
    d.run_step("reserve:compensate")
    replayed = decide(
        ORDER,
        d.state,
        ReplayRequested(new_run_id=RunId("1b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10")),
        now=d.now,
    ).unwrap()
    assert replayed.state.compensation is None and replayed.state.status is RunStatus.PENDING


def test_an_error_route_marked_for_recovery_is_recorded_and_reported() -> None:
    flow = workflow(
        "saga.marked",
        triggers=[manual()],
        steps=[step("charge", handler), step("refund", handler)],
        transitions=[
            ok("charge", FAIL),
            error("charge", "refund", recovery="compensation"),
            ok("refund", FAIL),
        ],
    )
    d = Driver(flow)
    d.deliver("charge")
    d.fail("charge", FATAL)
    failed = d.state.step_run("charge")
    assert failed is not None and failed.status is StepStatus.FAILED
    assert failed.recovery is not None and failed.recovery.target == "refund"
    assert failed.recovery.strategy.value == "compensation"
    assert Topic.STEP_COMPENSATION_ROUTED.value in topics(d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compensate": "nope"}, "compensate must be a callable"),
        ({"compensate": undo, "compensatable": False}, "compensatable=False"),
        ({"compensate_retry": Retry(max_attempts=2)}, "no compensate handler"),
        ({"compensate": undo, "compensate_retry": {"max_attempts": 0}}, "a:compensate"),
    ],
)
def test_validation_refuses_broken_compensations(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidWorkflowError, match=message):
        workflow("saga.bad", triggers=[manual()], steps=[step("a", handler, **kwargs)])  # type: ignore[arg-type]


def test_validation_refuses_a_recovery_marker_off_an_error_route() -> None:
    from squidmesh_core.definition import Outcome, TransitionSpec

    with pytest.raises(InvalidWorkflowError, match="recovery="):
        workflow(
            "saga.badroute",
            triggers=[manual()],
            steps=[step("a", handler), step("b", handler)],
            transitions=[TransitionSpec(from_step="a", on=Outcome.OK, to="b", recovery="undo")],
        )
    with pytest.raises(InvalidWorkflowError, match="recovery="):
        workflow(
            "saga.badmarker",
            triggers=[manual()],
            steps=[step("a", handler), step("b", handler)],
            transitions=[ok("a", "b"), error("a", "b", recovery="maybe")],
        )


def test_regression_a_compensation_job_id_parses_like_any_job_id() -> None:
    """Found by the core machine: a reclaimed compensation job's id did not parse."""
    from squidmesh_core.protocol import parse_job_id

    d = failed_at_ship()
    key = parse_job_id(d.job("charge:compensate")).unwrap()
    assert (key.step, key.attempt) == ("charge:compensate", 1)
    assert isinstance(parse_job_id(f"{RUN}/charge:undo/1"), Failure)


def test_a_replay_from_a_step_cannot_reuse_a_compensated_step() -> None:
    d = failed_at_ship()
    d.run_step("charge:compensate")
    d.run_step("reserve:compensate")
    new_id = RunId("1b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10")
    refused = decide(
        ORDER, d.state, ReplayRequested(new_run_id=new_id, from_step="ship"), now=d.now
    )
    assert isinstance(refused, Failure) and refused.failure().code == "invalid_option"
    assert "compensates 'reserve', 'charge'" in refused.failure().describe()
    pseudo = decide(
        ORDER, d.state, ReplayRequested(new_run_id=new_id, from_step="charge:compensate"), now=d.now
    )
    assert isinstance(pseudo, Failure) and pseudo.failure().code == "unknown_step"


def test_regression_a_redeploy_that_removes_a_compensation_ends_compensation_failed() -> None:
    """Review of issue 16: the removed compensation's step could not move to failed."""
    d = failed_at_ship()
    redeployed = workflow(
        "saga.order",
        triggers=[manual()],
        steps=[
            step("reserve", handler, compensate=undo),
            step("note", handler),
            step("charge", handler),  # its compensation is gone
            step("ship", handler),
        ],
        transitions=chain("reserve", "note", "charge", "ship"),
    )
    d.definition = redeployed
    d.deliver("charge:compensate")
    gone = d.state.step_run("charge:compensate")
    assert gone is not None and gone.status is StepStatus.FAILED
    assert gone.error is not None and gone.error.kind == "unknown_step"
    d.run_step("reserve:compensate")
    assert d.status() is RunStatus.COMPENSATION_FAILED


def test_regression_a_deadline_during_a_running_step_undoes_in_completion_order() -> None:
    """Review of issue 16: earlier steps were undone while a later one still ran."""
    d = Driver(order_flow(deadline=timedelta(minutes=5)))
    d.run_step("reserve")
    d.run_step("note")
    d.deliver("charge")
    d.advance(timedelta(minutes=6))
    d.deliver("__deadline__")
    assert d.status() is RunStatus.COMPENSATING
    assert [j.step for j in d.state.jobs] == ["charge"]  # waits for the charge
    d.succeed("charge")
    assert [j.step for j in d.state.jobs] == ["charge:compensate"]
    d.run_step("charge:compensate")
    d.run_step("reserve:compensate")
    assert d.status() is RunStatus.FAILED
    assert [s.step for s in d.state.steps][-2:] == ["charge:compensate", "reserve:compensate"]


def test_regression_a_replay_from_a_step_of_a_compensating_run_is_refused() -> None:
    """Review of issue 16: it reused steps the source was about to undo."""
    d = failed_at_ship()
    assert d.status() is RunStatus.COMPENSATING
    new_id = RunId("1b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10")
    refused = decide(
        ORDER, d.state, ReplayRequested(new_run_id=new_id, from_step="ship"), now=d.now
    )
    assert isinstance(refused, Failure) and refused.failure().code == "invalid_option"
