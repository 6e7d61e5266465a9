"""The real runtime: dispatcher, in-process executor and real time, on both embedded stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from squidmesh_backends.runtime import InProcessExecutor, Runtime, RuntimeSettings, compose
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

FAST = RuntimeSettings(
    poll_interval=timedelta(milliseconds=50),
    lease=timedelta(seconds=2),
    heartbeat_every=timedelta(milliseconds=200),
    shutdown_timeout=timedelta(milliseconds=300),
)


async def quick(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    if ctx.attempt == 1 and ctx.step == "flaky":
        raise ConnectionError("first try fails")
    return {ctx.step: ctx.attempt}


LIVE = workflow(
    "live.flow",
    triggers=[manual()],
    steps=[
        step("first", quick),
        wait("pause", timedelta(milliseconds=150)),
        step("flaky", quick, retry=Retry(max_attempts=3)),
    ],
    transitions=chain("first", "pause", "flaky", COMPLETE),
)


@pytest.fixture(params=["memory", "sqlite"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory" if request.param == "memory" else f"sqlite:{tmp_path}/live.db"


async def test_runs_complete_on_the_real_runtime(store_spec: str) -> None:
    runtime = compose(workflows=[LIVE], store=store_spec, settings=FAST)
    async with runtime:
        ids = [(await runtime.start_run(LIVE, {})).unwrap().id for _ in range(5)]
        finished = [
            (await runtime.wait_for(i, timeout=timedelta(seconds=20))).unwrap() for i in ids
        ]
    for run in finished:
        assert run.status is RunStatus.COMPLETED
        assert run.context == {"first": 1, "flaky": 2}
        assert run.history is not None
        pause = run.history[1].attempts[0]
        flaky = run.history[2].attempts[0]
        assert pause.finished_at is not None
        assert flaky.started_at - pause.finished_at >= timedelta(milliseconds=150)


async def test_stop_lets_short_steps_finish_and_releases_long_ones() -> None:
    release = asyncio.Event()

    async def slow(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        if ctx.attempt == 1:
            await release.wait()
        return {"attempt": ctx.attempt}

    wf = workflow(
        "live.slow",
        triggers=[manual()],
        steps=[step("slow", slow, retry=Retry(max_attempts=2))],
        transitions=chain("slow", COMPLETE),
    )
    store_runtime = compose(workflows=[wf], settings=FAST)
    async with store_runtime:
        run = (await store_runtime.start_run(wf, {})).unwrap()
        for _ in range(100):
            seen = (await store_runtime.inspect_run(run.id)).unwrap()
            if seen.status is RunStatus.RUNNING:
                break
            await asyncio.sleep(0.02)
    # stopped: the step outlived the shutdown timeout, so its lease was released
    claims = await store_runtime.store.claim_due(
        now=store_runtime.clock.now(),
        limit=5,
        lease_for=FAST.lease,
        owner="next",
        mint=store_runtime.ids.new_lease_token,
    )
    assert [c.job_id for c in claims] == [f"{run.id}/slow/1"]
    await store_runtime.store.release(claims[0].job_id, claims[0].lease_token)
    release.set()
    successor = Runtime(
        store=store_runtime.store, workflows=[wf], settings=FAST, executor=InProcessExecutor()
    )
    async with successor:
        done = (await successor.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert done.history is not None
    assert [a.status for a in done.history[0].attempts] == [
        AttemptStatus.LOST,
        AttemptStatus.SUCCEEDED,
    ]


def test_the_blocking_facade_runs_a_workflow(tmp_path: Path) -> None:
    runtime = compose(workflows=[LIVE], store=f"sqlite:{tmp_path}/sync.db", settings=FAST)
    with runtime.sync() as rt:
        run = rt.start_run("live.flow", {}).unwrap()
        done = rt.wait_for(run.id, timeout=timedelta(seconds=20)).unwrap()
        assert done.status is RunStatus.COMPLETED
        assert [r.id for r in rt.list_runs().unwrap()] == [run.id]
        assert rt.inspect_run(run.id).unwrap().status is RunStatus.COMPLETED
        replay = rt.replay_run(run.id).unwrap()
        assert replay.replayed_from == run.id
        assert rt.cancel_run(run.id).failure().code == "invalid_transition"


def test_the_blocking_facade_can_be_entered_again(store_spec: str) -> None:
    # Each `with` runs a new event loop: nothing may stay bound to the first one.
    runtime = compose(workflows=[LIVE], store=store_spec, settings=FAST)
    for _ in range(3):
        with runtime.sync() as rt:
            run = rt.start_run("live.flow", {}).unwrap()
            done = rt.wait_for(run.id, timeout=timedelta(seconds=20)).unwrap()
            assert done.status is RunStatus.COMPLETED
