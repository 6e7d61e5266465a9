"""Per-step timeouts: a hung handler no longer holds its run."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from squidmesh_backends import RuntimeSettings, TimeSkippingRuntime, compose
from squidmesh_core import (
    AttemptStatus,
    Retry,
    RunStatus,
    StepContext,
    manual,
    step,
    workflow,
)

hung: list[int] = []


async def hangs_first(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    hung.append(ctx.attempt)
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    return {"done": ctx.attempt}


def sync_hangs_first(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    hung.append(ctx.attempt)
    if ctx.attempt == 1:
        time.sleep(1.0)  # a thread cannot be stopped: its late result is dropped
    return {"done": ctx.attempt}


def flow(handler: object, *, attempts: int = 2) -> object:
    return workflow(
        "timeouts.flow",
        triggers=[manual()],
        steps=[
            step(
                "slow",
                handler,  # type: ignore[arg-type]
                timeout=timedelta(milliseconds=200),
                retry=Retry(max_attempts=attempts),
            )
        ],
    )


async def test_a_hung_async_step_is_stopped_recorded_timed_out_and_retried() -> None:
    hung.clear()
    definition = flow(hangs_first)
    rt = compose(workflows=[definition], store="memory",  # type: ignore[list-item]
                 settings=RuntimeSettings(poll_interval=timedelta(milliseconds=20)))  # fmt: skip
    async with rt:
        run = (await rt.start_run("timeouts.flow", {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert done.status is RunStatus.COMPLETED and hung == [1, 2]
    assert done.history is not None
    first, second = done.history[0].attempts
    assert first.status is AttemptStatus.FAILED and first.error is not None
    assert first.error.kind == "timed_out" and first.timeout_at is not None
    assert second.status is AttemptStatus.SUCCEEDED


async def test_a_hung_thread_is_abandoned_and_its_late_result_dropped() -> None:
    hung.clear()
    definition = flow(sync_hangs_first, attempts=1)
    rt = compose(workflows=[definition], store="memory",  # type: ignore[list-item]
                 settings=RuntimeSettings(poll_interval=timedelta(milliseconds=20)))  # fmt: skip
    async with rt:
        run = (await rt.start_run("timeouts.flow", {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
        await asyncio.sleep(1.2)  # the thread finishes; nothing it returns is committed
        after = (await rt.inspect_run(run.id, include_history=True)).unwrap()
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "timed_out"
    assert after.version == done.version


async def test_an_outcome_reported_after_the_timeout_is_a_timed_out_failure() -> None:
    clock: list[TimeSkippingRuntime] = []

    async def stalls(data: dict[str, object]) -> dict[str, object]:
        clock[0].faults.jump_clock(timedelta(seconds=6))  # the worker stalls past 5 s
        return {"ok": True}

    definition = workflow(
        "timeouts.late",
        triggers=[manual()],
        steps=[step("late", stalls, timeout=timedelta(seconds=5))],
    )
    rt = TimeSkippingRuntime(workflows=[definition])
    clock.append(rt)
    run = (await rt.start_run(definition, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "timed_out"
