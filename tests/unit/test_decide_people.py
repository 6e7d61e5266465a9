"""Core decisions for parked steps and operator commands: every new event and refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from pydantic import BaseModel

from squidmesh_core import (
    COMPLETE,
    CommandLimit,
    IdempotencyKeyReused,
    InvalidOption,
    InvalidResume,
    InvalidReview,
    InvalidSignalPayload,
    InvalidStep,
    InvalidTransition,
    RunNotActive,
    RunStatus,
    StepStatus,
    UnknownSignal,
    UnknownStep,
    chain,
    error,
    manual,
    step,
    workflow,
)
from squidmesh_core._operator import MAX_AUDIT_ENTRIES, MAX_WAITING_SIGNALS
from squidmesh_core.dsl import approval, pause, wait_for_signal
from squidmesh_core.errors import RepeatedCommand, SignalNotAwaited
from squidmesh_core.protocol import (
    ApproveRequested,
    CancelJob,
    CancelRequested,
    JobDelivered,
    LeaseToken,
    Operator,
    RejectRequested,
    ReplayRequested,
    ScheduleJob,
    SignalSent,
    Topic,
    UnblockRequested,
)
from squidmesh_core.state import AuditEntry, OperatorCommand
from tests.unit.helpers import OTHER_RUN, T0, Driver, handler

ANA = Operator(actor="ana")


class Go(BaseModel):
    code: str


GATED = workflow(
    "people.gated",
    triggers=[manual()],
    steps=[pause("hold", output="hold"), approval("review"), step("ship", handler),
           step("refund", handler)],
    transitions=[*chain("hold", "review", "ship", COMPLETE), error("review", "refund"),
                 *chain("refund", COMPLETE)],
)  # fmt: skip
SIGNAL = workflow(
    "people.signal",
    triggers=[manual()],
    steps=[
        step("first", handler),
        wait_for_signal("wait", "go", payload=Go, timeout=timedelta(hours=1)),
        step("last", handler),
    ],
    transitions=chain("first", "wait", "last", COMPLETE),
)


def gated_at_review() -> Driver:
    d = Driver(GATED)
    d.accept(UnblockRequested(by=ANA))
    return d


def test_an_entry_pause_parks_the_new_run_with_no_job() -> None:
    d = Driver(GATED)
    assert d.status() is RunStatus.PAUSED
    assert d.state.jobs == () and not any(isinstance(c, ScheduleJob) for c in d.decision.commands)
    hold = d.state.step_run("hold")
    assert hold is not None and hold.status is StepStatus.PARKED and hold.parked is not None
    assert (hold.parked.ok_target, hold.parked.since) == ("review", T0)
    assert Topic.STEP_PARKED in [e.topic for e in d.decision.emitted]


def test_unblock_completes_the_pause_and_parks_at_the_next_step() -> None:
    d = gated_at_review()
    hold, review = d.state.step_run("hold"), d.state.step_run("review")
    assert hold is not None and hold.status is StepStatus.COMPLETED
    assert hold.output == {"hold": {"actor": "ana", "at": T0.isoformat(), "note": None}}
    assert review is not None and review.status is StepStatus.PARKED
    assert d.status() is RunStatus.PAUSED
    [entry] = d.state.audit
    assert entry.command is OperatorCommand.UNBLOCK
    assert entry.outcome == {"from": "paused", "to": "paused", "step": "hold"}


def test_approve_goes_on_and_reject_takes_the_error_route() -> None:
    approved = gated_at_review()
    approved.accept(ApproveRequested(by=ANA))
    assert [j.step for j in approved.state.jobs] == ["ship"]
    assert approved.status() is RunStatus.RUNNING
    rejected = gated_at_review()
    rejected.accept(RejectRequested(by=Operator(actor="bo", note="no")))
    review = rejected.state.step_run("review")
    assert review is not None and review.status is StepStatus.FAILED
    assert review.error is not None and review.error.kind == "rejected"
    assert [j.step for j in rejected.state.jobs] == ["refund"]
    assert rejected.state.context["review"]["decision"] == "rejected"  # type: ignore[index, call-overload]


def test_a_command_on_the_wrong_park_or_status_is_refused() -> None:
    d = Driver(GATED)
    assert isinstance(d.reject(ApproveRequested(by=ANA)), InvalidStep)
    d = gated_at_review()
    assert isinstance(d.reject(UnblockRequested(by=ANA)), InvalidStep)
    d.accept(ApproveRequested(by=ANA))
    refused = d.reject(ApproveRequested(by=ANA))
    assert refused == InvalidTransition(
        run_id=d.state.id, from_status="running", to_status="running"
    )


def test_actors_and_notes_are_checked() -> None:
    d = gated_at_review()
    assert d.reject(ApproveRequested(by=Operator())) == InvalidReview(
        field="actor", reason="is required"
    )
    assert isinstance(
        d.reject(ApproveRequested(by=Operator(actor="a", note="\x00"))), InvalidReview
    )
    assert isinstance(d.reject(UnblockRequested(by=Operator())), InvalidResume)
    assert isinstance(Driver(GATED).reject(UnblockRequested(by=Operator())), InvalidResume)
    assert isinstance(d.reject(CancelRequested(by=Operator(note=""))), InvalidOption)
    for forged in ("ana\x1b[31m", "ana\nsignal by root", "x\x85"):
        assert isinstance(d.reject(ApproveRequested(by=Operator(actor=forged))), InvalidReview)
    note = Operator(actor="ana", note="line one\n\tline two")
    d.accept(ApproveRequested(by=note))  # a note may span lines


def test_a_key_is_answered_with_its_first_receipt_and_cannot_change_command() -> None:
    d = Driver(GATED)
    keyed = Operator(actor="ana", idempotency_key="k")
    d.accept(UnblockRequested(by=keyed))
    first = d.state.audit[0]
    assert d.reject(UnblockRequested(by=keyed)) == RepeatedCommand(run_id=d.state.id, entry=first)
    assert d.reject(ApproveRequested(by=keyed)) == IdempotencyKeyReused(
        run_id=d.state.id, idempotency_key="k", command="unblock"
    )
    d.accept(CancelRequested(by=Operator(idempotency_key="c")))
    assert d.status() is RunStatus.CANCELLED
    assert isinstance(d.reject(CancelRequested(by=Operator(idempotency_key="c"))), RepeatedCommand)


def test_the_audit_trail_is_bounded() -> None:
    d = Driver(GATED)
    full = tuple(
        AuditEntry(command=OperatorCommand.SIGNAL, at=T0) for _ in range(MAX_AUDIT_ENTRIES)
    )
    d.state = replace(d.state, audit=full)
    assert isinstance(d.reject(CancelRequested()), CommandLimit)


def test_a_signal_before_the_wait_is_kept_then_taken_on_arrival() -> None:
    d = Driver(SIGNAL)
    d.accept(SignalSent(name="go", payload={"code": "early"}))
    assert d.state.signals[0].consumed_by is None and d.status() is RunStatus.PENDING
    d.run_step("first")
    wait = d.state.step_run("wait")
    assert wait is not None and wait.status is StepStatus.COMPLETED
    assert [s.consumed_by for s in d.state.signals] == ["wait"]
    assert d.state.context["wait"] == {"code": "early"}
    assert [j.step for j in d.state.jobs] == ["last"]  # no timer was ever set


def test_a_signal_during_the_wait_resumes_it_and_drops_its_timer() -> None:
    d = Driver(SIGNAL)
    d.run_step("first")
    [timer] = d.state.jobs
    assert timer.due_at == T0 + timedelta(hours=1)
    d.accept(SignalSent(name="go", payload={"code": "c"}, by=Operator(idempotency_key="s1")))
    assert CancelJob(job_id=timer.id) in d.decision.commands
    assert [j.step for j in d.state.jobs] == ["last"]
    assert d.state.audit[0].outcome["taken_by"] == "wait"


def test_the_timer_delivery_is_the_timeout() -> None:
    d = Driver(SIGNAL)
    d.run_step("first")
    [timer] = d.state.jobs
    d.advance(timedelta(hours=1))
    d.accept(JobDelivered(job_id=timer.id, lease_token=LeaseToken("t9")))
    assert d.decision.started is None and d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "signal_timeout"


def test_signals_are_checked() -> None:
    d = Driver(SIGNAL)
    assert d.reject(SignalSent(name="stop", payload={})) == UnknownSignal(
        workflow="people.signal", signal="stop"
    )
    assert isinstance(d.reject(SignalSent(name="go", payload={"code": 1})), InvalidSignalPayload)
    assert isinstance(d.reject(SignalSent(name="go", payload={"x": "y"})), InvalidSignalPayload)
    for _ in range(MAX_WAITING_SIGNALS):
        d.accept(SignalSent(name="go", payload={"code": "c"}))
    assert isinstance(d.reject(SignalSent(name="go", payload={"code": "c"})), CommandLimit)
    d.accept(CancelRequested())
    assert d.reject(SignalSent(name="go", payload={"code": "c"})) == RunNotActive(
        run_id=d.state.id, status="cancelled"
    )


def test_cancelling_a_parked_run_cancels_the_step_and_its_timer() -> None:
    d = Driver(SIGNAL)
    d.run_step("first")
    d.accept(CancelRequested(by=ANA))
    wait = d.state.step_run("wait")
    assert wait is not None and wait.status is StepStatus.CANCELLED
    assert d.state.jobs == () and d.status() is RunStatus.CANCELLED
    assert d.state.audit[-1].outcome == {"from": "paused", "to": "cancelled"}


def test_a_target_the_definition_no_longer_declares_is_refused() -> None:
    d = gated_at_review()
    redeployed = workflow(
        "people.gated",
        triggers=[manual()],
        steps=[pause("hold"), approval("review"), step("refund", handler)],
        transitions=[*chain("hold", "review", "refund", COMPLETE)],
    )
    d.definition = redeployed
    assert d.reject(ApproveRequested(by=ANA)) == UnknownStep(workflow="people.gated", step="ship")


def test_a_replay_is_audited_on_the_new_run_with_a_derived_key() -> None:
    d = Driver(GATED)
    source = d.state.id
    replay = ReplayRequested(new_run_id=OTHER_RUN, by=Operator(actor="ops", idempotency_key="r"))
    decision = d.accept(replay)
    [entry] = decision.state.audit
    assert entry.command is OperatorCommand.REPLAY and entry.actor == "ops"
    assert entry.outcome["replayed_from"] == source
    assert decision.state.idempotency_key == f"replay:{source}:r"
    assert decision.state.status is RunStatus.PAUSED  # its entry step parks it too


def test_a_key_used_for_one_signal_is_refused_for_another() -> None:
    two = workflow(
        "people.two_signals",
        triggers=[manual()],
        steps=[
            wait_for_signal("one", "one", payload=Go),
            wait_for_signal("two", "two", payload=Go),
        ],
        transitions=chain("one", "two", COMPLETE),
    )
    d = Driver(two)
    d.accept(SignalSent(name="one", payload={"code": "a"}, by=Operator(idempotency_key="s")))
    reused = d.reject(
        SignalSent(name="two", payload={"code": "b"}, by=Operator(idempotency_key="s"))
    )
    assert reused == IdempotencyKeyReused(run_id=d.state.id, idempotency_key="s", command="signal")
    again = d.reject(
        SignalSent(name="one", payload={"code": "a"}, by=Operator(idempotency_key="s"))
    )
    assert isinstance(again, RepeatedCommand)


def test_a_timed_out_wait_takes_no_signal_even_before_its_timer_runs() -> None:
    d = Driver(SIGNAL)
    d.run_step("first")
    d.advance(timedelta(hours=5))  # workers were down: the timer has not been delivered
    late = d.reject(SignalSent(name="go", payload={"code": "late"}))
    assert isinstance(late, SignalNotAwaited) and "timed out" in late.reason
    [timer] = d.state.jobs
    d.accept(JobDelivered(job_id=timer.id, lease_token=LeaseToken("t1")))
    assert d.status() is RunStatus.FAILED


def test_a_signal_no_step_ahead_waits_for_is_refused() -> None:
    d = Driver(SIGNAL)
    d.run_step("first")
    d.accept(SignalSent(name="go", payload={"code": "c"}))
    assert d.state.step_run("wait") is not None
    refused = d.reject(SignalSent(name="go", payload={"code": "again"}))
    assert isinstance(refused, SignalNotAwaited) and "may still reach" in refused.reason


def test_a_signal_payload_is_small() -> None:
    d = Driver(SIGNAL)
    big = d.reject(SignalSent(name="go", payload={"code": "x" * 20_000}))
    assert isinstance(big, InvalidSignalPayload)


def test_a_timeout_whose_target_a_redeploy_removed_fails_the_run() -> None:
    timing_out = workflow(
        "people.timeout_target",
        triggers=[manual()],
        steps=[
            wait_for_signal("wait", "go", payload=Go, timeout=timedelta(hours=1),
                            on_timeout="recover"),
            step("recover", handler),
            step("last", handler),
        ],
        transitions=[*chain("wait", "last", COMPLETE), *chain("recover", "last")],
    )  # fmt: skip
    d = Driver(timing_out)
    [timer] = d.state.jobs
    d.definition = workflow(
        "people.timeout_target",
        triggers=[manual()],
        steps=[wait_for_signal("wait", "go", payload=Go), step("last", handler)],
        transitions=chain("wait", "last", COMPLETE),
    )
    d.advance(timedelta(hours=1))
    d.accept(JobDelivered(job_id=timer.id, lease_token=LeaseToken("t1")))
    assert d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "unknown_step"


def test_a_redeploy_that_turns_a_retrying_step_into_an_approval_fails_the_run() -> None:
    from squidmesh_core import Fixed, Retry

    before = workflow(
        "people.kind_change",
        triggers=[manual()],
        steps=[
            step(
                "check",
                handler,
                retry=Retry(max_attempts=3, backoff=Fixed(delay=timedelta(seconds=5))),
            )
        ],
        transitions=chain("check", COMPLETE),
    )
    d = Driver(before)
    d.deliver("check")
    d.fail("check")
    d.definition = workflow(
        "people.kind_change",
        triggers=[manual()],
        steps=[approval("check")],
        transitions=chain("check", COMPLETE),
    )
    d.advance(timedelta(seconds=5))
    d.deliver("check")
    assert d.status() is RunStatus.FAILED
    assert d.state.last_error is not None and d.state.last_error.kind == "invalid_step"


def test_a_replay_key_already_used_on_the_source_is_refused() -> None:
    d = Driver(GATED)
    d.accept(CancelRequested(by=Operator(idempotency_key="k")))
    replay = ReplayRequested(new_run_id=OTHER_RUN, by=Operator(idempotency_key="k"))
    assert isinstance(d.reject(replay), IdempotencyKeyReused)
