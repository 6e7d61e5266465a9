"""Pause, approval and signal steps, and audited, idempotent operator commands, end to end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from squidmesh_backends.runtime.testing import TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    RunStatus,
    StepContext,
    StepStatus,
    chain,
    error,
    manual,
    step,
    workflow,
)
from squidmesh_core.dsl import approval, pause, wait, wait_for_signal
from squidmesh_core.errors import (
    IdempotencyKeyReused,
    InvalidOption,
    InvalidReview,
    InvalidSignalPayload,
    InvalidStep,
    InvalidTransition,
    RunNotActive,
    UnknownSignal,
    UnknownStep,
)
from squidmesh_core.protocol import Topic
from squidmesh_core.state import OperatorCommand
from squidmesh_core.views import Run


class Order(BaseModel):
    order_id: str


class Shipped(BaseModel):
    carrier: str
    tracking: str


def prepare(data: dict[str, object]) -> dict[str, object]:
    return {"prepared": data["order_id"]}


def ship(data: dict[str, object]) -> dict[str, object]:
    return {"shipped": True}


def refund(data: dict[str, object]) -> dict[str, object]:
    return {"refunded": True}


REVIEWED = workflow(
    "people.reviewed",
    triggers=[manual("order", payload=Order)],
    steps=[step("prepare", prepare), approval("review"), step("ship", ship), step("refund", refund)],
    transitions=[*chain("prepare", "review", "ship", COMPLETE), error("review", "refund"),
                 *chain("refund", COMPLETE)],
)  # fmt: skip
STRICT = workflow(
    "people.strict",
    triggers=[manual("order", payload=Order)],
    steps=[approval("review", output="verdict"), step("ship", ship)],
    transitions=chain("review", "ship", COMPLETE),
)
PAUSED = workflow(
    "people.paused",
    triggers=[manual("order", payload=Order)],
    steps=[step("prepare", prepare), wait("cool", timedelta(hours=1)), pause("hold"),
           step("ship", ship)],
    transitions=chain("prepare", "cool", "hold", "ship", COMPLETE),
)  # fmt: skip
SIGNALLED = workflow(
    "people.signalled",
    triggers=[manual("order", payload=Order)],
    steps=[
        step("prepare", prepare),
        wait_for_signal("shipment", "shipped", payload=Shipped, timeout=timedelta(days=2)),
        step("ship", ship),
        step("refund", refund),
    ],
    transitions=[*chain("prepare", "shipment", "ship", COMPLETE), error("shipment", "refund"),
                 *chain("refund", COMPLETE)],
)  # fmt: skip
TIMING_OUT = workflow(
    "people.timing_out",
    triggers=[manual("order", payload=Order)],
    steps=[
        wait_for_signal(
            "shipment", "shipped", payload=Shipped, timeout=timedelta(hours=1), on_timeout="ship"
        ),
        step("ship", ship),
    ],
    transitions=chain("shipment", "ship", COMPLETE),
)
FLOWS = [REVIEWED, STRICT, PAUSED, SIGNALLED, TIMING_OUT]


@pytest.fixture
def rt() -> TimeSkippingRuntime:
    return TimeSkippingRuntime(workflows=FLOWS)


async def parked(rt: TimeSkippingRuntime, flow: object, order: str = "o-1") -> Run:
    run = (await rt.start_run(flow, {"order_id": order})).unwrap()  # type: ignore[arg-type]
    return await rt.run_until_parked(run.id)


async def test_an_approved_run_follows_its_ok_route_and_records_the_decision(
    rt: TimeSkippingRuntime,
) -> None:
    run = await parked(rt, REVIEWED)
    assert run.status is RunStatus.PAUSED and run.parked_step == "review"
    assert run.jobs == ()  # no worker, no lease, no timer
    approved = (await rt.approve_run(run.id, actor="ana", note="looks fine")).unwrap()
    assert approved.receipt is not None and not approved.receipt.repeated
    entry = approved.receipt.entry
    assert (entry.command, entry.actor, entry.note) == (
        OperatorCommand.APPROVE,
        "ana",
        "looks fine",
    )
    assert entry.outcome == {"from": "paused", "to": "running", "step": "review"}
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    decision = done.context["review"]
    assert isinstance(decision, dict)
    assert decision["decision"] == "approved" and decision["actor"] == "ana"
    assert decision["note"] == "looks fine" and decision["at"] == entry.at.isoformat()
    assert done.history is not None
    assert [s.step for s in done.history] == ["prepare", "review", "ship"]
    assert done.audit is not None and [e.command for e in done.audit] == [OperatorCommand.APPROVE]


async def test_a_rejected_run_takes_its_error_route(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, REVIEWED)
    (await rt.reject_run(run.id, actor="bo", note="fraud")).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.context["refunded"] is True
    review = next(s for s in done.history or () if s.step == "review")
    assert review.status is StepStatus.FAILED
    assert review.error is not None and review.error.kind == "rejected"
    assert "fraud" in review.error.message
    assert done.last_error is None


async def test_a_rejection_without_an_error_route_fails_the_run_naming_the_step(
    rt: TimeSkippingRuntime,
) -> None:
    run = await parked(rt, STRICT)
    failed = (await rt.reject_run(run.id, actor="bo")).unwrap()
    assert failed.status is RunStatus.FAILED
    assert failed.failed_step == "review"
    assert failed.last_error is not None and failed.last_error.kind == "rejected"
    verdict = failed.context["verdict"]
    assert isinstance(verdict, dict) and verdict["decision"] == "rejected"


async def test_reviews_need_an_actor_and_the_right_kind_of_step(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, REVIEWED)
    for actor in ("", "   ", "a\x00b", "x" * 201):
        refused = await rt.approve_run(run.id, actor=actor)
        assert isinstance(refused.failure(), InvalidReview), actor
    assert isinstance((await rt.reject_run(run.id, actor="a", note="")).failure(), InvalidReview)
    wrong = (await rt.unblock_run(run.id, actor="ana")).failure()
    assert isinstance(wrong, InvalidStep)
    assert (wrong.waiting_for, wrong.step) == ("approval", "review")
    signal = (await rt.send_signal(run.id, "shipped", {})).failure()
    assert isinstance(signal, UnknownSignal)
    again = (await rt.inspect_run(run.id, include_history=True)).unwrap()
    assert again.status is RunStatus.PAUSED and again.audit == ()  # nothing half-written


async def test_the_same_key_has_one_effect_and_returns_the_first_receipt(
    rt: TimeSkippingRuntime,
) -> None:
    run = await parked(rt, REVIEWED)
    first = (await rt.approve_run(run.id, actor="ana", idempotency_key="k-1")).unwrap()
    await rt.run_until_complete(run.id)
    again = (await rt.approve_run(run.id, actor="someone else", idempotency_key="k-1")).unwrap()
    assert again.receipt is not None and again.receipt.repeated
    assert first.receipt is not None and again.receipt.entry == first.receipt.entry
    assert again.status is RunStatus.COMPLETED
    reused = (await rt.reject_run(run.id, actor="ana", idempotency_key="k-1")).failure()
    assert isinstance(reused, IdempotencyKeyReused) and reused.command == "approve"
    late = (await rt.approve_run(run.id, actor="ana", idempotency_key="k-2")).failure()
    assert isinstance(late, InvalidTransition)  # terminal runs absorb every command
    done = (await rt.inspect_run(run.id, include_history=True)).unwrap()
    assert done.audit is not None and len(done.audit) == 1


async def test_a_pause_after_a_wait_parks_when_due_and_unblocks(rt: TimeSkippingRuntime) -> None:
    run = (await rt.start_run(PAUSED, {"order_id": "o-1"})).unwrap()
    await rt.run_due()
    waiting = (await rt.inspect_run(run.id)).unwrap()
    assert waiting.status is RunStatus.RUNNING
    assert [(j.step, j.purpose) for j in waiting.jobs] == [("hold", "step")]
    paused = await rt.run_until_parked(run.id)
    assert paused.parked_step == "hold" and paused.jobs == ()
    with pytest.raises(AssertionError, match="nothing left to run"):
        await rt.run_until_complete(run.id)
    (await rt.unblock_run(run.id, actor="ops", note="stock arrived")).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED and done.context["shipped"] is True


async def test_a_signal_resumes_the_wait_with_its_payload(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, SIGNALLED)
    assert [(j.step, j.purpose) for j in run.jobs] == [("shipment", "timeout")]
    bad = (await rt.send_signal(run.id, "shipped", {"carrier": "dhl"})).failure()
    assert isinstance(bad, InvalidSignalPayload) and "tracking" in bad.reason
    unknown = (await rt.send_signal(run.id, "delivered", {})).failure()
    assert isinstance(unknown, UnknownSignal)
    sent = await rt.send_signal(run.id, "shipped", {"carrier": "dhl", "tracking": "T1"})
    assert sent.unwrap().receipt is not None
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.context["shipment"] == {"carrier": "dhl", "tracking": "T1"}
    assert done.signals is not None and done.signals[0].consumed_by == "shipment"
    finished = (
        await rt.send_signal(run.id, "shipped", {"carrier": "x", "tracking": "y"})
    ).failure()
    assert isinstance(finished, RunNotActive) and finished.status == "completed"


async def test_a_signal_sent_before_the_wait_is_kept_and_taken_on_arrival(
    rt: TimeSkippingRuntime,
) -> None:
    run = (await rt.start_run(SIGNALLED, {"order_id": "o-1"})).unwrap()
    kept = (await rt.send_signal(run.id, "shipped", {"carrier": "ups", "tracking": "U"})).unwrap()
    assert kept.receipt is not None and kept.receipt.entry.outcome["taken_by"] is None
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.context["shipment"] == {"carrier": "ups", "tracking": "U"}
    assert "refunded" not in done.context


async def test_a_signal_timeout_is_a_durable_timer_routed_like_an_error(
    rt: TimeSkippingRuntime,
) -> None:
    run = await parked(rt, SIGNALLED)
    start = rt.now
    done = await rt.run_until_complete(run.id)
    assert rt.now - start == timedelta(days=2)
    assert done.status is RunStatus.COMPLETED and done.context["refunded"] is True
    shipment = next(s for s in done.history or () if s.step == "shipment")
    assert shipment.error is not None and shipment.error.kind == "signal_timeout"


async def test_a_timeout_can_go_to_a_named_step(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, TIMING_OUT)
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED and done.context["shipped"] is True


async def test_cancelling_a_parked_run_ends_it_and_its_timer(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, SIGNALLED)
    cancelled = (await rt.cancel_run(run.id, actor="ops", note="customer left")).unwrap()
    assert cancelled.status is RunStatus.CANCELLED and cancelled.jobs == ()
    assert cancelled.receipt is not None
    assert cancelled.receipt.entry.outcome == {"from": "paused", "to": "cancelled"}
    refused = (await rt.cancel_run(run.id, actor="ops")).failure()
    assert isinstance(refused, InvalidTransition)
    bad = (await rt.cancel_run(run.id, actor="")).failure()
    assert isinstance(bad, InvalidOption)


async def test_replays_are_audited_on_the_new_run_and_idempotent(rt: TimeSkippingRuntime) -> None:
    run = await parked(rt, STRICT)
    (await rt.reject_run(run.id, actor="bo")).unwrap()
    first = (await rt.replay_run(run.id, actor="ops", note="retry", idempotency_key="r1")).unwrap()
    again = (await rt.replay_run(run.id, actor="ops", idempotency_key="r1")).unwrap()
    assert again.id == first.id and again.receipt is not None and again.receipt.repeated
    assert first.receipt is not None
    assert first.receipt.entry.outcome["replayed_from"] == run.id
    other = (await rt.replay_run(run.id)).unwrap()
    assert other.id != first.id
    refused = await rt.start_run(STRICT, {"order_id": "x"}, idempotency_key="replay:x")
    assert isinstance(refused.failure(), InvalidOption)


async def test_a_parked_run_keeps_its_persisted_targets_across_a_redeploy() -> None:
    rt = TimeSkippingRuntime(workflows=[REVIEWED])
    run = await parked(rt, REVIEWED)
    redeployed = workflow(
        "people.reviewed",
        triggers=[manual("order", payload=Order)],
        steps=[step("prepare", prepare), approval("review"), step("refund", refund)],
        transitions=[*chain("prepare", "review", "refund", COMPLETE)],
    )
    later = TimeSkippingRuntime(workflows=[redeployed])
    later.memory._runs = rt.memory._runs  # the same stored run, new code
    later.memory._jobs = rt.memory._jobs
    refused = (await later.approve_run(run.id, actor="ana")).failure()
    assert refused == UnknownStep(workflow="people.reviewed", step="ship")
    explained = (await later.explain_run(run.id)).unwrap()
    assert explained.reason == "paused_with_invalid_resume_target"
    assert [a.action for a in explained.next_actions] == ["cancel_run"]


async def test_events_carry_their_time_and_the_runs_status() -> None:
    seen: list[object] = []

    class Sink:
        def publish(self, event: object) -> None:
            seen.append(event)

    rt = TimeSkippingRuntime(workflows=FLOWS, sinks=[Sink()])
    run = await parked(rt, REVIEWED)
    (await rt.approve_run(run.id, actor="ana")).unwrap()
    parked_events = [e for e in seen if getattr(e, "topic", None) is Topic.STEP_PARKED]
    assert len(parked_events) == 1
    assert parked_events[0].run_status == "paused"  # type: ignore[attr-defined]
    accepted = [e for e in seen if getattr(e, "topic", None) is Topic.COMMAND_ACCEPTED]
    assert accepted[0].at == rt.now  # type: ignore[attr-defined]
    assert accepted[0].attributes["command"] == "approve"  # type: ignore[attr-defined]


def _narrow(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    payload, context = ctx.payload, ctx.context
    with pytest.raises(TypeError):
        payload["order_id"] = "changed"  # type: ignore[index]
    nested: Any = context["deep"]
    with pytest.raises(TypeError):
        nested["list"][0] = 9
    with pytest.raises(AttributeError):
        nested["list"].append(9)
    assert nested == {"list": [1, {"x": 2}]} and nested["list"][1]["x"] == 2
    return {"seen": [sorted(data), payload["order_id"], context.get("prepared")]}


def _deep(data: dict[str, object]) -> dict[str, object]:
    return {"deep": {"list": [1, {"x": 2}]}}


async def test_a_step_reads_the_whole_payload_and_context_whatever_its_input() -> None:
    flow = workflow(
        "people.narrow",
        triggers=[manual("order", payload=Order)],
        steps=[
            step("prepare", prepare),
            step("deep", _deep),
            step("narrow", _narrow, input=["prepared"]),
        ],
        transitions=chain("prepare", "deep", "narrow", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {"order_id": "o-9"})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.context["seen"] == [["prepared"], "o-9", "o-9"]


async def test_a_recovered_step_leaves_no_last_error() -> None:
    calls: list[int] = []

    def flaky(data: object) -> dict[str, object]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return {}

    from squidmesh_core import Fixed, Retry

    retry = Retry(max_attempts=3, backoff=Fixed(delay=timedelta(seconds=10)))
    flow = workflow(
        "people.flaky",
        triggers=[manual()],
        steps=[step("flaky", flaky, retry=retry), wait("cool", timedelta(hours=1)),
               step("after", ship)],
        transitions=chain("flaky", "cool", "after", COMPLETE),
    )  # fmt: skip
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    await rt.run_due()
    retrying = (await rt.inspect_run(run.id)).unwrap()
    assert retrying.status is RunStatus.RETRYING and retrying.last_error is not None
    await rt.advance(timedelta(seconds=10))  # the retry succeeds; the wait runs
    recovered = (await rt.inspect_run(run.id)).unwrap()
    assert recovered.status is RunStatus.RUNNING and recovered.last_error is None


async def test_an_output_that_fails_its_model_names_the_field() -> None:
    def wrong(data: object) -> Shipped:
        return {"carrier": "dhl"}  # type: ignore[return-value]

    flow = workflow(
        "people.wrong",
        triggers=[manual()],
        steps=[step("wrong", wrong)],
        transitions=chain("wrong", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.last_error is not None and "tracking" in done.last_error.message
