"""Free slots of the Taskiq executor: none is left idle by a fast delivery.

Regression: ``submit`` counted a publish only after the broker's send returned.
A message received before that (a fast broker, a worker that publishes to
itself) left a count nobody took off, so a worker with one slot saw no free
slot for two seconds after every job and started a run only every 2.0 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import timedelta

import pytest
from taskiq import AsyncBroker, BrokerMessage

from squidmesh_backends.errors import BackendUnavailableError
from squidmesh_backends.taskiq import TaskiqExecutor
from squidmesh_core.ids import JobId, LeaseToken


class EagerQueueBroker(AsyncBroker):
    """An in-process queue whose reader gets each message before ``kick`` returns."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def kick(self, message: BrokerMessage) -> None:
        await self.queue.put(message.message)
        for _ in range(50):  # the reader and the handler run before the send "returns"
            await asyncio.sleep(0)

    async def listen(self) -> AsyncGenerator[bytes, None]:
        while True:
            yield await self.queue.get()


async def test_a_job_received_before_its_publish_returned_frees_its_slot() -> None:
    executor = TaskiqExecutor(EagerQueueBroker(), concurrency=1)
    handled: list[str] = []
    freed: list[None] = []

    async def handler(job_id: JobId, lease_token: LeaseToken) -> None:
        handled.append(job_id)

    await executor.start(handler, slot_freed=lambda: freed.append(None))
    try:
        await executor.submit(JobId("j1"), LeaseToken("t1"))
        for _ in range(100):
            if freed:
                break
            await asyncio.sleep(0.01)
        assert handled == ["j1"]
        assert freed  # the dispatcher is woken when a local job ends
        assert executor.free_slots == 1  # was 0 for PUBLISH_HORIZON seconds
    finally:
        await executor.stop(timeout=timedelta(seconds=1))


async def test_a_failed_publish_gives_its_slot_back() -> None:
    class Down(EagerQueueBroker):
        async def kick(self, message: BrokerMessage) -> None:
            raise ConnectionError("broker down")

    executor = TaskiqExecutor(Down(), concurrency=1)

    async def handler(job_id: JobId, lease_token: LeaseToken) -> None:
        return None

    await executor.start(handler)
    try:
        with pytest.raises(BackendUnavailableError, match="cannot publish to the broker"):
            await executor.submit(JobId("j1"), LeaseToken("t1"))
        assert executor.free_slots == 1
    finally:
        await executor.stop(timeout=timedelta(seconds=1))
