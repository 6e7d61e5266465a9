"""Run deadlines: a run not finished in time fails with deadline_exceeded."""

from __future__ import annotations

from datetime import timedelta

from squidmesh_backends import TimeSkippingRuntime
from squidmesh_core import (
    InvalidOption,
    RunStatus,
    StepStatus,
    approval,
    chain,
    manual,
    step,
    wait,
    workflow,
)


def ship(data: dict[str, object]) -> dict[str, object]:
    return {"shipped": True}


REVIEWED = workflow(
    "deadlines.reviewed",
    triggers=[manual()],
    steps=[approval("review"), step("ship", ship)],
    transitions=chain("review", "ship"),
    deadline=timedelta(hours=4),
)


async def test_a_run_waiting_for_a_person_past_its_deadline_fails() -> None:
    rt = TimeSkippingRuntime(workflows=[REVIEWED])
    run = (await rt.start_run(REVIEWED, {})).unwrap()
    assert [(j.step, j.purpose) for j in run.jobs] == [("__deadline__", "deadline")]
    explained = (await rt.explain_run(run.id)).unwrap()
    assert explained.reason == "paused_for_approval"
    assert explained.evidence["deadline"] == (rt.now + timedelta(hours=4)).isoformat()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "deadline_exceeded"
    review = next(s for s in done.history or () if s.step == "review")
    assert review.status is StepStatus.CANCELLED
    assert (await rt.approve_run(run.id, actor="late")).failure().code == "invalid_transition"


async def test_a_run_that_finishes_in_time_drops_its_deadline() -> None:
    rt = TimeSkippingRuntime(workflows=[REVIEWED])
    run = (await rt.start_run(REVIEWED, {})).unwrap()
    (await rt.approve_run(run.id, actor="ana")).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED and done.jobs == ()


async def test_a_deadline_per_start_overrides_the_workflows() -> None:
    slow = workflow(
        "deadlines.slow",
        triggers=[manual()],
        steps=[wait("nap", timedelta(hours=2)), step("ship", ship)],
        transitions=chain("nap", "ship"),
    )
    rt = TimeSkippingRuntime(workflows=[slow])
    quick = (await rt.start_run(slow, {}, deadline=timedelta(hours=1))).unwrap()
    done = await rt.run_until_complete(quick.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "deadline_exceeded"
    roomy = (await rt.start_run(slow, {}, deadline=timedelta(hours=3))).unwrap()
    assert (await rt.run_until_complete(roomy.id)).status is RunStatus.COMPLETED
    bad = await rt.start_run(slow, {}, deadline=timedelta(0))
    assert isinstance(bad.failure(), InvalidOption)


async def test_a_replay_from_a_step_of_a_run_that_missed_its_deadline_gets_a_fresh_one() -> None:
    slow = workflow(
        "deadlines.replayed",
        triggers=[manual()],
        steps=[step("first", ship), wait("nap", timedelta(hours=2)), step("last", ship)],
        transitions=chain("first", "nap", "last"),
        deadline=timedelta(hours=1),
    )
    rt = TimeSkippingRuntime(workflows=[slow])
    run = (await rt.start_run(slow, {})).unwrap()
    missed = await rt.run_until_complete(run.id)
    assert missed.last_error is not None and missed.last_error.kind == "deadline_exceeded"
    again = (await rt.replay_run(run.id, from_step="nap")).unwrap()
    assert again.current_steps == ("nap",)  # the deadline timer is not a current step
    assert [j.purpose for j in again.jobs] == ["step", "deadline"]
    assert again.receipt is not None and again.receipt.entry.outcome["reused"] == ["first"]
