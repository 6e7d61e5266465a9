"""Duplicate, stale, lost and forged deliveries, crashed workers and shutdown."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

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
    workflow,
)
from squidmesh_core.ports import Claim
from squidmesh_core.protocol import JobId, LeaseToken


class Gate:
    """A step that blocks on its first attempt until released (or forever)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.attempts: list[int] = []

    async def __call__(self, data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        self.attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            self.entered.set()
            await self.release.wait()
        return {"attempt": ctx.attempt}


def flow(gate: Gate, *, retries: int = 3, max_lost: int = 3) -> object:
    async def after(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {"after": True}

    return workflow(
        "faults.flow",
        triggers=[manual()],
        steps=[
            step("slow", gate, retry=Retry(max_attempts=retries), max_lost=max_lost),
            step("after", after),
        ],
        transitions=chain("slow", "after", COMPLETE),
    )


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def rt(gate: Gate) -> TimeSkippingRuntime:
    return TimeSkippingRuntime(workflows=[flow(gate)])  # type: ignore[list-item]


async def claim_one(rt: TimeSkippingRuntime) -> Claim:
    claims = await rt.store.claim_due(
        now=rt.now, limit=1, lease_for=rt.settings.lease, owner="test", mint=rt.ids.new_lease_token
    )
    assert len(claims) == 1
    return claims[0]


async def kill_mid_step(rt: TimeSkippingRuntime, gate: Gate) -> Claim:
    """Claim the next job, start its step, and kill the worker before it reports."""
    claim = await claim_one(rt)
    worker = asyncio.create_task(
        rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
    )
    await gate.entered.wait()
    worker.cancel()  # the process dies: no outcome is ever reported
    await asyncio.gather(worker, return_exceptions=True)
    return claim


async def test_a_duplicate_delivery_runs_the_step_once(rt: TimeSkippingRuntime, gate: Gate) -> None:
    gate.release.set()
    run = (await rt.start_run("faults.flow", {})).unwrap()
    claim = await claim_one(rt)
    first = await rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
    second = await rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
    assert (first, second) == (JobOutcome.SUCCEEDED, JobOutcome.STALE)
    assert gate.attempts == [1]
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED


async def test_concurrent_duplicates_start_one_attempt(rt: TimeSkippingRuntime, gate: Gate) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    claim = await claim_one(rt)
    first = asyncio.create_task(
        rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
    )
    await gate.entered.wait()
    assert (
        await rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
        is JobOutcome.STALE
    )
    gate.release.set()
    assert await first is JobOutcome.SUCCEEDED
    assert gate.attempts == [1]
    assert (await rt.run_until_complete(run.id)).status is RunStatus.COMPLETED


@pytest.mark.parametrize(
    "job_id",
    [
        "garbage",
        "00000000-0000-4000-8000-000000000001/slow/0",
        "00000000-0000-4000-8000-000000000777/slow/1",
    ],
)
async def test_forged_messages_change_nothing(rt: TimeSkippingRuntime, job_id: str) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    assert await rt.worker.execute_job(job_id, "any", heartbeat=False) is JobOutcome.FORGED
    assert (await rt.inspect_run(run.id)).unwrap() == run


async def test_a_job_that_is_not_live_is_stale(rt: TimeSkippingRuntime) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    assert (
        await rt.worker.execute_job(f"{run.id}/after/1", "t", heartbeat=False) is JobOutcome.STALE
    )
    assert (
        await rt.worker.execute_job(f"{run.id}/slow/1", "not-the-lease", heartbeat=False)
        is JobOutcome.STALE
    )
    assert (await rt.inspect_run(run.id)).unwrap() == run


async def test_a_lost_message_is_redelivered_after_the_lease(
    rt: TimeSkippingRuntime, gate: Gate
) -> None:
    gate.release.set()
    run = (await rt.start_run("faults.flow", {})).unwrap()
    await claim_one(rt)  # the message for this claim is lost
    assert await rt.run_due() == 0
    await rt.advance(rt.settings.lease)
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert gate.attempts == [1]
    assert done.history is not None
    assert [a.status for a in done.history[0].attempts] == [AttemptStatus.SUCCEEDED]


async def test_a_worker_crash_mid_step_is_a_lost_attempt_and_the_run_completes(
    rt: TimeSkippingRuntime, gate: Gate
) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    await kill_mid_step(rt, gate)
    assert (await rt.inspect_run(run.id)).unwrap().status is RunStatus.RUNNING
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.history is not None
    slow = done.history[0]
    assert [a.status for a in slow.attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    assert slow.attempts[0].error is not None and slow.attempts[0].error.kind == "worker_lost"
    assert rt.now - done.created_at == rt.settings.lease
    # The reclaiming delivery of attempt 1's job ran attempt 2 itself (no second claim).
    assert [(job.split("/")[1:], o.value) for job, o in rt.outcomes] == [
        (["slow", "1"], "succeeded"),
        (["after", "1"], "succeeded"),
    ]


async def test_the_late_outcome_of_a_reclaimed_attempt_is_discarded(
    rt: TimeSkippingRuntime, gate: Gate
) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    claim = await claim_one(rt)
    slow_worker = asyncio.create_task(
        rt.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
    )
    await gate.entered.wait()
    await rt.advance(rt.settings.lease)  # another worker reclaims and retries
    done = (await rt.inspect_run(run.id, include_history=True)).unwrap()
    assert done.status is RunStatus.COMPLETED
    gate.release.set()
    assert await slow_worker is JobOutcome.LEASE_LOST
    assert (await rt.inspect_run(run.id, include_history=True)).unwrap() == done


async def test_past_max_lost_a_lost_worker_fails_the_run(gate: Gate) -> None:
    rt = TimeSkippingRuntime(workflows=[flow(gate, retries=1, max_lost=0)])  # type: ignore[list-item]
    run = (await rt.start_run("faults.flow", {})).unwrap()
    await kill_mid_step(rt, gate)
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "worker_lost"


async def test_without_retries_a_lost_worker_runs_the_step_again(gate: Gate) -> None:
    rt = TimeSkippingRuntime(workflows=[flow(gate, retries=1)])  # type: ignore[list-item]
    run = (await rt.start_run("faults.flow", {})).unwrap()
    await kill_mid_step(rt, gate)
    gate.release.set()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED
    assert gate.attempts == [1, 2]


async def test_heartbeats_keep_a_long_step_leased(gate: Gate) -> None:
    from squidmesh_backends.runtime import RuntimeSettings

    settings = RuntimeSettings(
        lease=timedelta(seconds=0.3), heartbeat_every=timedelta(seconds=0.05)
    )
    rt = TimeSkippingRuntime(workflows=[flow(gate)], settings=settings)  # type: ignore[list-item]
    rt.fake_clock = rt.fake_clock  # the fake clock stays still; heartbeats use real sleeps
    run = (await rt.start_run("faults.flow", {})).unwrap()
    claim = await claim_one(rt)
    worker = asyncio.create_task(rt.worker.execute_job(claim.job_id, claim.lease_token))
    await gate.entered.wait()
    for _ in range(4):
        rt.fake_clock.advance(timedelta(seconds=0.2))
        await asyncio.sleep(0.12)
        assert (
            await rt.store.claim_due(
                now=rt.now,
                limit=1,
                lease_for=settings.lease,
                owner="x",
                mint=rt.ids.new_lease_token,
            )
            == []
        )
    gate.release.set()
    assert await worker is JobOutcome.SUCCEEDED
    assert (await rt.run_until_complete(run.id)).status is RunStatus.COMPLETED


async def test_release_on_shutdown_lets_another_worker_take_over(
    rt: TimeSkippingRuntime, gate: Gate
) -> None:
    run = (await rt.start_run("faults.flow", {})).unwrap()
    claim = await kill_mid_step(rt, gate)
    assert await rt.store.release(JobId(claim.job_id), LeaseToken(claim.lease_token))
    await rt.run_due()  # no need to wait for the lease
    done = (await rt.inspect_run(run.id, include_history=True)).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert rt.now == done.created_at
