"""The time-skipping kit's fault hooks: what a user's test can do to prove idempotency."""

from __future__ import annotations

from datetime import timedelta

from squidmesh_backends.runtime import JobOutcome, TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    AttemptStatus,
    Retry,
    RunStatus,
    StepContext,
    chain,
    manual,
    step,
    wait,
    workflow,
)

CHARGES: list[tuple[str, int]] = []


async def charge(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    CHARGES.append((ctx.idempotency_key, ctx.attempt))
    return {"charged": True}


async def receipt(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"sent": True}


PAYMENT = workflow(
    "faults.payment",
    triggers=[manual()],
    steps=[step("charge", charge, retry=Retry(max_attempts=3)), step("receipt", receipt)],
    transitions=chain("charge", "receipt", COMPLETE),
)


def runtime() -> TimeSkippingRuntime:
    CHARGES.clear()
    return TimeSkippingRuntime(workflows=[PAYMENT])


async def test_a_killed_worker_makes_the_step_run_again_under_the_same_key() -> None:
    rt = runtime()
    rt.faults.kill_worker_during("charge")
    run = (await rt.start_run(PAYMENT, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    # The side effect happened twice, with one idempotency key: what a step must absorb.
    assert [attempt for _, attempt in CHARGES] == [1, 2]
    assert len({key for key, _ in CHARGES}) == 1
    assert done.history is not None
    attempts = done.history[0].attempts
    assert [a.status for a in attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    assert rt.faults.killed == [f"{run.id}/charge/1"]
    # The reclaiming delivery ran the retry itself (it did not queue it again).
    charged = [outcome for job, outcome in rt.outcomes if job.endswith("/charge/1")]
    assert charged == [JobOutcome.LEASE_LOST, JobOutcome.SUCCEEDED]


async def test_a_step_delivered_twice_runs_once() -> None:
    rt = runtime()
    rt.faults.deliver_twice("charge")
    run = (await rt.start_run(PAYMENT, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert [attempt for _, attempt in CHARGES] == [1]
    outcomes = [outcome for job, outcome in rt.outcomes if job.endswith("/charge/1")]
    assert sorted(outcomes) == sorted([JobOutcome.SUCCEEDED, JobOutcome.STALE])
    assert rt.faults.duplicated == [f"{run.id}/charge/1"]


async def test_version_conflicts_are_decided_again_without_running_a_step_twice() -> None:
    rt = runtime()
    run = (await rt.start_run(PAYMENT, {})).unwrap()
    rt.faults.conflict_next_commit(3)
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert rt.faults.conflicts == 3
    assert [attempt for _, attempt in CHARGES] == [1]


async def nap(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


NAPPING = workflow(
    "faults.napping",
    triggers=[manual()],
    steps=[wait("hour", timedelta(hours=1)), step("after", nap)],
    transitions=chain("hour", "after", COMPLETE),
)


async def test_clock_jumps_run_what_fell_due_and_survive_going_back() -> None:
    rt = TimeSkippingRuntime(workflows=[NAPPING])
    run = (await rt.start_run(NAPPING, {})).unwrap()
    await rt.run_due()
    start = rt.now
    assert rt.faults.jump_clock(timedelta(minutes=-30)) == start - timedelta(minutes=30)
    assert await rt.run_due() == 0  # going back makes nothing due
    rt.faults.jump_clock(timedelta(hours=2))
    await rt.run_due()
    done = (await rt.inspect_run(run.id)).unwrap()
    assert done.status is RunStatus.COMPLETED
