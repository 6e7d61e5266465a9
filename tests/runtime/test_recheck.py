"""Deferred re-checks: "not yet, look again in N" without using a retry."""

from __future__ import annotations

from datetime import timedelta

from squidmesh_backends import TimeSkippingRuntime
from squidmesh_core import (
    AttemptStatus,
    Recheck,
    Retry,
    RunStatus,
    StepContext,
    manual,
    step,
    workflow,
)

checks: list[int] = []


async def settled(data: dict[str, object], ctx: StepContext) -> object:
    checks.append(ctx.attempt)
    if ctx.attempt < 4:
        return Recheck(after=timedelta(minutes=10), reason="payment still pending")
    return {"settled": True}


FLOW = workflow(
    "recheck.poll",
    triggers=[manual()],
    steps=[step("settled", settled, retry=Retry(max_attempts=1))],
)


async def test_a_step_polls_without_using_its_retries() -> None:
    checks.clear()
    rt = TimeSkippingRuntime(workflows=[FLOW])
    run = (await rt.start_run(FLOW, {})).unwrap()
    await rt.run_due()
    waiting = (await rt.explain_run(run.id)).unwrap()
    assert waiting.reason == "waiting_for_recheck"
    assert waiting.details["reason"] == "payment still pending"
    assert "looks again" in waiting.summary
    start = rt.now
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED  # a policy of one attempt, four runs
    assert checks == [1, 2, 3, 4]
    assert rt.now - start == timedelta(minutes=30)
    assert done.history is not None
    statuses = [a.status for a in done.history[0].attempts]
    assert statuses == [AttemptStatus.DEFERRED] * 3 + [AttemptStatus.SUCCEEDED]
    note = done.history[0].attempts[0].error
    assert note is not None and note.kind == "deferred" and note.message == "payment still pending"


async def test_a_step_that_never_settles_fails_at_max_rechecks() -> None:
    async def never(data: dict[str, object]) -> object:
        return Recheck(after=timedelta(seconds=1))

    flow = workflow(
        "recheck.never", triggers=[manual()], steps=[step("never", never, max_rechecks=2)]
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "recheck_limit"
