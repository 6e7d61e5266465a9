"""A worker on a real Redis stream shrugs off whatever a stranger writes to it.

Regressions: malformed entries used to echo their whole payload into the log
(one 8 MiB entry made one 8 MiB line), log tracebacks and ERRORs, and entries
without a ``data`` field (or with a bad ``ack_type``) stayed pending forever.
Now each gets one bounded WARNING line, a count and an event, and is
acknowledged; the worker goes on running real jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from chaos.hostile import HOSTILE, message
from squidmesh_backends.probe import REFUSED, STALE, Counters
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_backends.taskiq import TaskiqExecutor
from squidmesh_backends.taskiq.brokers import GROUP, redis_stream_broker
from squidmesh_core import COMPLETE, RunStatus, StepContext, chain, manual, step, workflow
from squidmesh_core.commands import Emit, Topic

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


async def done(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"done": True}


FLOW = workflow(
    "hostile.flow", triggers=[manual()], steps=[step("a", done)], transitions=chain("a", COMPLETE)
)


async def settled(check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


class Events:
    def __init__(self) -> None:
        self.seen: list[Emit] = []

    def publish(self, event: Emit) -> None:
        self.seen.append(event)


async def drained(client: aioredis.Redis, queue: str) -> bool:
    groups = await client.xinfo_groups(queue)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


async def test_every_hostile_entry_is_refused_once_acknowledged_and_logged_briefly(
    redis_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe, events = Counters(), Events()
    runtime: Runtime = compose(
        workflows=[FLOW],
        broker=redis_stream_broker(redis_url, lease=timedelta(seconds=30), queue=queue),
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=50), concurrency=2),
        sinks=[events],
        probe=probe,
    )
    client = aioredis.Redis.from_url(redis_url)
    caplog.set_level(logging.INFO)
    try:
        async with runtime:
            for fields, _ in HOSTILE.values():
                await client.xadd(queue, fields)  # type: ignore[arg-type]
            await settled(lambda: drained(client, queue))
            run = (await runtime.start_run(FLOW, {})).unwrap()
            finished = (await runtime.wait_for(run.id, timeout=timedelta(seconds=20))).unwrap()
            # A delivery under a token that is not the lease's: refused as stale.
            await client.xadd(queue, {b"data": message(f"{run.id}/a/1", "stale-token")})
            await settled(lambda: drained(client, queue))
    finally:
        await client.aclose()
    assert finished.status is RunStatus.COMPLETED
    assert probe[REFUSED] == len(HOSTILE)
    assert probe[STALE] == 1
    executor = runtime.worker.executor
    assert isinstance(executor, TaskiqExecutor)
    assert executor.receiver_restarts == 0  # no entry broke the reads
    refused = [e for e in events.seen if e.topic is Topic.DELIVERY_REFUSED]
    assert sorted(str(e.attributes["reason"]) for e in refused) == sorted(
        reason for _, reason in HOSTILE.values()
    )
    ours = [r for r in caplog.records if r.name.startswith("squidmesh")]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in ours if "refused a malformed message" in r.getMessage()]
    assert len(lines) == len(HOSTILE)
    assert max(len(line) for line in lines) < 300
    assert [r for r in ours if "refused a delivery of" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]  # nor from Taskiq or redis-py


async def test_the_group_loses_nothing_pending_after_a_refusal(redis_url: str, queue: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    runtime = compose(
        workflows=[FLOW],
        broker=redis_stream_broker(redis_url, lease=timedelta(seconds=30), queue=queue),
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=50)),
    )
    try:
        async with runtime:
            await client.xadd(queue, {b"other": b"x"})
            await settled(lambda: drained(client, queue))
        summary = await client.xpending(queue, GROUP)
    finally:
        await client.aclose()
    assert summary["pending"] == 0
