"""``explain`` for every state a run can be in, each asserted by reason and evidence."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from squidmesh_core import (
    COMPLETE,
    Fixed,
    Retry,
    RunStatus,
    chain,
    error,
    manual,
    step,
    wait,
    workflow,
)
from squidmesh_core.dsl import approval, pause, wait_for_signal
from squidmesh_core.explain import Explanation, LeaseInfo, Reason, explain
from squidmesh_core.protocol import ApproveRequested, CancelRequested, Operator
from tests.unit.helpers import T0, Driver, handler

S = timedelta(seconds=1)


class Go(BaseModel):
    ok: bool


FLOW = workflow(
    "explain.flow",
    triggers=[manual()],
    steps=[
        step("charge", handler, retry=Retry(max_attempts=3, backoff=Fixed(delay=60 * S))),
        wait("cool", timedelta(hours=2)),
        approval("review"),
        pause("hold"),
        wait_for_signal("go", "go", payload=Go, timeout=timedelta(hours=1)),
        step("ship", handler),
    ],
    transitions=chain("charge", "cool", "review", "hold", "go", "ship", COMPLETE),
)
FAN = workflow(
    "explain.fan",
    triggers=[manual()],
    steps=[step("a", handler), step("b", handler), step("join", handler, after=["a", "b"])],
)
ONCE = workflow(
    "explain.once",
    triggers=[manual()],
    steps=[step("only", handler)],
    transitions=chain("only", COMPLETE),
)


def explained(d: Driver, **leases: LeaseInfo) -> Explanation:
    return explain(d.definition, d.state, now=d.now, leases={v.job_id: v for v in leases.values()})


def actions(e: Explanation) -> list[str]:
    return [a.action for a in e.next_actions]


def at_review() -> Driver:
    d = Driver(FLOW)
    d.run_step("charge")
    d.run_step("cool")
    d.advance(timedelta(hours=2))
    d.deliver("review")  # a parking step due after a wait parks on its delivery
    return d


def test_a_job_due_now_waits_for_a_worker() -> None:
    d = Driver(FLOW)
    e = explained(d)
    assert (e.reason, e.step) == (Reason.STEP_SCHEDULED, "charge")
    assert e.details == {"attempt": 1, "due_at": T0.isoformat()}
    assert actions(e) == ["wait_for_worker", "cancel_run"]
    assert e.evidence["run"]["status"] == "pending"  # type: ignore[index, call-overload]


def test_a_running_attempt_names_its_lease_holder_and_expiry() -> None:
    d = Driver(FLOW)
    job = d.deliver("charge")
    lease = LeaseInfo(job_id=job, owner="worker-7", expires_at=T0 + 30 * S)
    e = explained(d, charge=lease)
    assert e.reason is Reason.STEP_RUNNING and e.step == "charge"
    assert e.details["lease_owner"] == "worker-7"
    assert e.details["lease_expires_at"] == (T0 + 30 * S).isoformat()
    assert "worker-7" in e.summary
    assert e.evidence["jobs"][0]["lease_owner"] == "worker-7"  # type: ignore[index, call-overload]


def test_an_expired_lease_awaits_a_reclaim() -> None:
    d = Driver(FLOW)
    job = d.deliver("charge")
    d.advance(31 * S)
    e = explained(d, charge=LeaseInfo(job_id=job, owner="w", expires_at=T0 + 30 * S))
    assert e.reason is Reason.LEASE_EXPIRED
    assert actions(e) == ["wait_for_reclaim", "cancel_run"]
    assert "ago" in e.summary


def test_a_scheduled_retry_names_the_attempt_due_time_and_error() -> None:
    d = Driver(FLOW)
    d.deliver("charge")
    d.fail("charge")
    e = explained(d)
    assert e.status is RunStatus.RETRYING and e.reason is Reason.WAITING_FOR_RETRY
    assert e.details["next_attempt"] == 2
    assert e.details["due_at"] == (T0 + 60 * S).isoformat()
    assert e.details["last_error"]["message"] == "boom"  # type: ignore[index, call-overload]
    assert "in 1m00s" in e.summary


def test_a_timer_names_its_due_time() -> None:
    d = Driver(FLOW)
    d.run_step("charge")
    d.run_step("cool")
    e = explained(d)
    assert (e.reason, e.step) == (Reason.WAITING_FOR_TIMER, "review")
    assert e.details["due_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert "in 2h00m" in e.summary


def test_an_approval_offers_approve_reject_and_cancel() -> None:
    e = explained(at_review())
    assert (e.reason, e.step) == (Reason.PAUSED_FOR_APPROVAL, "review")
    assert e.details["approval_targets"] == {"ok": "hold", "error": None}
    assert actions(e) == ["approve_run", "reject_run", "cancel_run"]
    approve = e.next_actions[0]
    assert approve.call is not None and approve.call.startswith("approve_run(")
    assert approve.command is not None and approve.command.startswith("squidmesh run approve ")


def test_a_pause_offers_unblock() -> None:
    d = at_review()
    d.accept(ApproveRequested(by=Operator(actor="ana")))
    e = explained(d)
    assert (e.reason, e.step) == (Reason.PAUSED_FOR_MANUAL_ACTION, "hold")
    assert e.details["resume_target"] == "go"
    assert actions(e) == ["unblock_run", "cancel_run"]
    assert e.evidence["last_command"]["actor"] == "ana"  # type: ignore[index, call-overload]


def test_a_signal_wait_names_the_signal_and_its_timeout() -> None:
    from squidmesh_core.protocol import UnblockRequested

    d = at_review()
    d.accept(ApproveRequested(by=Operator(actor="ana")))
    d.accept(UnblockRequested(by=Operator(actor="ana")))
    e = explained(d)
    assert (e.reason, e.step) == (Reason.WAITING_FOR_SIGNAL, "go")
    assert e.details["signal"] == "go"
    assert e.details["timeout_at"] == (d.now + timedelta(hours=1)).isoformat()
    assert actions(e) == ["send_signal", "cancel_run"]


def test_dependencies_pending_are_named() -> None:
    d = Driver(FAN)
    d.run_step("a")
    e = explained(d)
    assert (e.reason, e.step) == (Reason.WAITING_FOR_DEPENDENCIES, "join")
    assert e.details["waiting_on"] == ["b"]
    assert e.details["dependency_statuses"] == {"a": "completed", "b": "scheduled"}


def test_a_failed_run_names_the_step_and_error() -> None:
    d = Driver(ONCE)
    d.deliver("only")
    d.fail("only")
    e = explained(d)
    assert (e.reason, e.step) == (Reason.STEP_FAILED, "only")
    assert e.details["last_error"]["message"] == "boom"  # type: ignore[index, call-overload]
    assert actions(e) == ["replay_run"]


def test_a_run_that_used_every_retry_is_retry_exhausted() -> None:
    d = Driver(FLOW)
    for _ in range(3):
        d.deliver("charge")
        d.fail("charge")
        d.advance(60 * S)
    e = explained(d)
    assert e.reason is Reason.RETRY_EXHAUSTED
    assert (e.details["max_attempts"], e.details["attempts"]) == (3, 3)


def test_cancelling_waits_for_the_running_attempt() -> None:
    d = Driver(FLOW)
    d.deliver("charge")
    d.accept(CancelRequested())
    e = explained(d)
    assert (e.reason, e.step) == (Reason.CANCELLING, "charge")
    assert actions(e) == ["wait_for_cancellation"]


def test_completed_and_cancelled_runs_offer_a_replay() -> None:
    d = Driver(ONCE)
    d.run_step("only")
    assert explained(d).reason is Reason.COMPLETED
    c = Driver(ONCE)
    c.accept(CancelRequested())
    e = explained(c)
    assert e.reason is Reason.CANCELLED and actions(e) == ["replay_run"]


def test_a_run_of_an_unknown_workflow_asks_for_the_workflow() -> None:
    d = at_review()
    e = explain(None, d.state, now=d.now)
    assert e.reason is Reason.PAUSED_WITH_UNAVAILABLE_WORKFLOW
    assert e.evidence["workflow_definition"] == {"available": False}
    assert actions(e) == ["register_workflow"]  # no command can act on it here
    finished = Driver(ONCE)
    finished.run_step("only")
    assert actions(explain(None, finished.state, now=finished.now)) == ["register_workflow"]


def test_a_claimed_job_names_the_worker_starting_it() -> None:
    d = Driver(FLOW)
    job = d.job("charge")
    e = explained(d, charge=LeaseInfo(job_id=job, owner="w-2", expires_at=T0 + 30 * S))
    assert e.reason is Reason.STEP_SCHEDULED and e.details["lease_owner"] == "w-2"
    assert "claimed by worker 'w-2'" in e.summary
    assert "now" in explained(d).summary


def test_the_signal_action_names_the_signal() -> None:
    from squidmesh_core.protocol import UnblockRequested

    d = at_review()
    d.accept(ApproveRequested(by=Operator(actor="ana")))
    d.accept(UnblockRequested(by=Operator(actor="ana")))
    send = explained(d).next_actions[0]
    assert send.command == f"squidmesh run signal {d.state.id} go --payload JSON"


def test_an_unknown_error_target_still_lets_a_reviewer_approve() -> None:
    flow = workflow(
        "explain.routes",
        triggers=[manual()],
        steps=[approval("review"), step("ship", handler), step("refund", handler)],
        transitions=[*chain("review", "ship", COMPLETE), error("review", "refund"),
                     *chain("refund", COMPLETE)],
    )  # fmt: skip
    d = Driver(flow)
    d.definition = workflow(
        "explain.routes",
        triggers=[manual()],
        steps=[approval("review"), step("ship", handler)],
        transitions=chain("review", "ship", COMPLETE),
    )
    e = explained(d)
    assert e.reason is Reason.PAUSED_FOR_APPROVAL
    assert e.details["approval_targets"] == {"ok": "ship", "error": "refund", "unknown": "refund"}


def test_error_routes_are_shown_as_approval_targets() -> None:
    flow = workflow(
        "explain.routes",
        triggers=[manual()],
        steps=[approval("review"), step("ship", handler), step("refund", handler)],
        transitions=[*chain("review", "ship", COMPLETE), error("review", "refund"),
                     *chain("refund", COMPLETE)],
    )  # fmt: skip
    e = explained(Driver(flow))
    assert e.details["approval_targets"] == {"ok": "ship", "error": "refund"}
