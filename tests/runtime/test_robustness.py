"""Hostile input and awkward lifecycles: each case returns a typed refusal or keeps working."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime import (
    InProcessExecutor,
    JobOutcome,
    Runtime,
    RuntimeSettings,
    TimeSkippingRuntime,
    compose,
)
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_core import (
    COMPLETE,
    InvalidOption,
    RunStatus,
    StepContext,
    UnknownWorkflow,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.protocol import JobId, LeaseToken

FAST = RuntimeSettings(
    poll_interval=timedelta(milliseconds=50),
    lease=timedelta(seconds=1),
    heartbeat_every=timedelta(milliseconds=100),
    shutdown_timeout=timedelta(milliseconds=200),
)


async def done(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"ok": True}


SIMPLE = workflow(
    "robust.simple", triggers=[manual()], steps=[step("a", done)], transitions=chain("a", COMPLETE)
)


@pytest.mark.parametrize("key", [123, "", "x" * 201, "nul\x00", "\ud800"])
async def test_bad_idempotency_keys_are_refused(key: object) -> None:
    rt = TimeSkippingRuntime(workflows=[SIMPLE])
    result = await rt.start_run(SIMPLE, {}, idempotency_key=key)  # type: ignore[arg-type]
    assert isinstance(result.failure(), InvalidOption)
    assert (await rt.list_runs()).unwrap() == ()


@pytest.mark.parametrize("workflow_arg", [[], 42, None])
async def test_a_workflow_that_is_not_a_name_is_unknown(workflow_arg: object) -> None:
    rt = TimeSkippingRuntime(workflows=[SIMPLE])
    assert isinstance((await rt.start_run(workflow_arg, {})).failure(), UnknownWorkflow)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["\ud800", "nul\x00", ""])
async def test_listing_with_an_unstorable_workflow_name_is_refused(
    name: str, tmp_path: Path
) -> None:
    rt = compose(workflows=[SIMPLE], store=f"sqlite:{tmp_path}/l.db")
    assert isinstance((await rt.list_runs(workflow=name)).failure(), InvalidOption)


async def test_a_runtime_can_be_started_again_after_stopping() -> None:
    rt = compose(workflows=[SIMPLE], settings=FAST)
    async with rt:
        first = (await rt.start_run(SIMPLE, {})).unwrap()
        assert (
            await rt.wait_for(first.id, timeout=timedelta(seconds=5))
        ).unwrap().status is RunStatus.COMPLETED
    async with rt:
        second = (await rt.start_run(SIMPLE, {})).unwrap()
        assert (
            await rt.wait_for(second.id, timeout=timedelta(seconds=5))
        ).unwrap().status is RunStatus.COMPLETED


async def test_a_full_executor_does_not_spin_the_dispatcher() -> None:
    gate = asyncio.Event()

    async def blocked(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await gate.wait()
        return {}

    wf = workflow(
        "robust.blocked",
        triggers=[manual()],
        steps=[step("a", blocked)],
        transitions=chain("a", COMPLETE),
    )
    store = MemoryRunStore()
    calls = 0
    original = store.next_due_at

    async def counting() -> object:
        nonlocal calls
        calls += 1
        return await original()

    store.next_due_at = counting  # type: ignore[method-assign,assignment]  # a counting spy
    rt = Runtime(
        store=store, workflows=[wf], settings=FAST, executor=InProcessExecutor(concurrency=1)
    )
    async with rt:
        ids = [(await rt.start_run(wf, {})).unwrap().id for _ in range(3)]
        await asyncio.sleep(0.5)
        assert calls < 50
        gate.set()
        for run_id in ids:
            assert (
                await rt.wait_for(run_id, timeout=timedelta(seconds=5))
            ).unwrap().status is RunStatus.COMPLETED


async def test_a_failing_heartbeat_keeps_trying() -> None:
    attempts: list[int] = []

    async def slow(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        attempts.append(ctx.attempt)
        await asyncio.sleep(1.5)
        return {}

    wf = workflow(
        "robust.slow",
        triggers=[manual()],
        steps=[step("a", slow)],
        transitions=chain("a", COMPLETE),
    )
    store = MemoryRunStore()
    original = store.heartbeat
    failures = 0

    async def flaky(job_id: JobId, token: LeaseToken, *, until: object) -> bool:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise ConnectionError("store hiccup")
        return await original(job_id, token, until=until)  # type: ignore[arg-type]

    store.heartbeat = flaky  # type: ignore[method-assign,assignment]  # a failing spy
    rt = Runtime(store=store, workflows=[wf], settings=FAST)
    async with rt:
        run = (await rt.start_run(wf, {})).unwrap()
        finished = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert finished.status is RunStatus.COMPLETED
    assert attempts == [1]


async def test_jobs_of_unregistered_workflows_are_released(tmp_path: Path) -> None:
    async with SqliteRunStore(tmp_path / "shared.db") as store:
        owner = Runtime(store=store, workflows=[SIMPLE], settings=FAST)
        run = (await owner.start_run(SIMPLE, {})).unwrap()
        stranger = Runtime(store=store, workflows=[], settings=FAST)
        [claim] = await store.claim_due(
            now=stranger.clock.now(),
            limit=1,
            lease_for=FAST.lease,
            owner="s",
            mint=stranger.ids.new_lease_token,
        )
        assert (
            await stranger.worker.execute_job(claim.job_id, claim.lease_token, heartbeat=False)
            is JobOutcome.STALE
        )
        assert (await owner.store.next_due_at()) is not None
        async with owner:
            assert (
                await owner.wait_for(run.id, timeout=timedelta(seconds=5))
            ).unwrap().status is RunStatus.COMPLETED


def test_the_blocking_facade_needs_its_context_manager() -> None:
    rt = compose(workflows=[SIMPLE])
    with pytest.raises(RuntimeError, match="context manager"):
        rt.sync().list_runs()


class MaybeModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    n: int = 1


async def test_misshaped_handlers_fail_once_and_clearly() -> None:
    class NoRun:
        def __call__(self, data: object, ctx: object) -> None:
            return None

    async def keyword_ctx(data: dict[str, object], *, ctx: StepContext) -> dict[str, object]:
        return {}

    for handler, text in (
        (NoRun, "needs a run(input, ctx) method"),
        (keyword_ctx, "cannot be called"),
    ):
        wf = workflow(
            "robust.shape",
            triggers=[manual()],
            steps=[step("a", handler)],
            transitions=chain("a", COMPLETE),
        )
        rt = TimeSkippingRuntime(workflows=[wf])
        run = (await rt.start_run(wf, {})).unwrap()
        finished = await rt.run_until_complete(run.id)
        assert finished.last_error is not None
        assert finished.last_error.kind == "invalid_step"
        assert text in finished.last_error.message
        assert finished.last_error.retryable is False


async def test_optional_model_inputs_are_validated() -> None:
    seen: list[object] = []

    async def handler(data: MaybeModel | None, ctx: StepContext) -> dict[str, object]:
        seen.append(data)
        return {}

    wf = workflow(
        "robust.optional",
        triggers=[manual()],
        steps=[step("a", handler)],
        transitions=chain("a", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[wf])
    run = (await rt.start_run(wf, {})).unwrap()
    await rt.run_until_complete(run.id)
    assert seen == [MaybeModel(n=1)]


async def test_first_use_of_a_fresh_sqlite_file_from_many_tasks(tmp_path: Path) -> None:
    for trial in range(10):
        store = SqliteRunStore(tmp_path / f"race{trial}.db")
        results = await asyncio.gather(*(store.next_due_at() for _ in range(8)))
        assert results == [None] * 8
        await store.close()
