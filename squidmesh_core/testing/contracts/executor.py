"""``ExecutorContract``: the executable copy of the ``Executor`` docstring."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import Executor


class Recorder:
    def __init__(self, *, block: bool = False) -> None:
        self.seen: list[tuple[str, str]] = []
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def __call__(self, job_id: JobId, lease_token: LeaseToken) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
            self.seen.append((job_id, lease_token))
        finally:
            self.running -= 1


async def settle(condition: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]  # a zero-argument predicate
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class ExecutorContract:
    """Every Executor passes these. Subclass and provide an ``executor`` fixture."""

    async def test_submitted_jobs_reach_the_handler_with_their_ids(
        self, executor: Executor
    ) -> None:
        recorder = Recorder()
        await executor.start(recorder)
        await executor.submit(JobId("j1"), LeaseToken("t1"))
        await executor.submit(JobId("j2"), LeaseToken("t2"))
        await settle(lambda: len(recorder.seen) == 2)
        assert sorted(recorder.seen) == [("j1", "t1"), ("j2", "t2")]
        assert await executor.stop(timeout=timedelta(seconds=1)) == []

    async def test_concurrency_is_bounded(self, executor: Executor) -> None:
        capacity = executor.capacity
        recorder = Recorder(block=True)
        await executor.start(recorder)
        for n in range(capacity + 3):
            await executor.submit(JobId(f"j{n}"), LeaseToken(f"t{n}"))
        await settle(lambda: recorder.running == capacity)
        await asyncio.sleep(0.05)
        assert recorder.running == capacity
        assert executor.free_slots <= 0
        recorder.release.set()
        await settle(lambda: len(recorder.seen) == capacity + 3)
        assert recorder.peak == capacity
        await settle(lambda: executor.free_slots == capacity)
        await executor.stop(timeout=timedelta(seconds=1))

    async def test_stop_returns_the_jobs_that_did_not_finish(self, executor: Executor) -> None:
        recorder = Recorder(block=True)
        await executor.start(recorder)
        await executor.submit(JobId("slow"), LeaseToken("t"))
        await settle(lambda: recorder.running == 1)
        unfinished = await executor.stop(timeout=timedelta(milliseconds=50))
        assert list(unfinished) == [("slow", "t")]

    async def test_stop_waits_for_running_jobs(self, executor: Executor) -> None:
        recorder = Recorder(block=True)
        await executor.start(recorder)
        await executor.submit(JobId("j"), LeaseToken("t"))
        await settle(lambda: recorder.running == 1)
        asyncio.get_running_loop().call_later(0.05, recorder.release.set)
        assert await executor.stop(timeout=timedelta(seconds=5)) == []
        assert recorder.seen == [("j", "t")]

    async def test_no_work_is_accepted_after_stop(self, executor: Executor) -> None:
        await executor.start(Recorder())
        await executor.stop(timeout=timedelta(seconds=1))
        assert executor.free_slots == 0
        with pytest.raises(RuntimeError):
            await executor.submit(JobId("late"), LeaseToken("t"))

    async def test_a_crashing_handler_does_not_stop_the_executor(self, executor: Executor) -> None:
        seen: list[str] = []

        async def flaky(job_id: JobId, lease_token: LeaseToken) -> None:
            if job_id == "bad":
                raise ValueError("boom")
            seen.append(job_id)

        await executor.start(flaky)
        await executor.submit(JobId("bad"), LeaseToken("t"))
        await executor.submit(JobId("good"), LeaseToken("t"))
        await settle(lambda: seen == ["good"])
        await executor.stop(timeout=timedelta(seconds=1))
