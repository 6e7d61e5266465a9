"""A broker outage costs one line when it starts and one when it ends.

Regressions: the pause between receiver restarts only ever grew (0.1 s to
3.2 s over repeated outages), and a 3 s Redis outage logged 45 ERROR records
with tracebacks and "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from squidmesh_backends.outage import FIRST_PAUSE, HEALTHY_AFTER, LONGEST_PAUSE, Outage
from squidmesh_backends.runtime import RuntimeSettings, compose
from squidmesh_backends.taskiq import TaskiqExecutor
from squidmesh_backends.taskiq.brokers import redis_stream_broker
from squidmesh_core import COMPLETE, RunStatus, StepContext, chain, manual, step, workflow
from tests.taskiq.processes import OwnRedis


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_pause_doubles_within_an_outage_and_starts_over_after_healthy_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Ticks()
    outage = Outage("the broker", clock=clock)
    pauses = [outage.failed(ConnectionError("refused"), served_for=0.0) for _ in range(8)]
    assert pauses[:3] == [FIRST_PAUSE, FIRST_PAUSE * 2, FIRST_PAUSE * 4]
    assert pauses[-1] == LONGEST_PAUSE
    clock.now = 12.5
    outage.reached()
    assert outage.failed(ConnectionError("again"), served_for=HEALTHY_AFTER) == FIRST_PAUSE
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "lost the broker (ConnectionError: refused); trying again until it is back",
        "the broker is back after 12.5s",
        "lost the broker (ConnectionError: again); trying again until it is back",
    ]
    assert outage.outages == 2


async def ok(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


FLOW = workflow(
    "outage.flow", triggers=[manual()], steps=[step("a", ok)], transitions=chain("a", COMPLETE)
)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_redis_outage_is_one_line_down_and_one_line_up(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    caplog.set_level(logging.INFO)
    runtime = compose(
        workflows=[FLOW],
        broker=redis_stream_broker(own_redis.url, lease=timedelta(seconds=5)),
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=100)),
    )
    async with runtime:
        for _ in range(2):
            await asyncio.to_thread(own_redis.stop)
            await asyncio.sleep(3)
            await asyncio.to_thread(own_redis.start)
            run = (await runtime.start_run(FLOW, {})).unwrap()
            finished = (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
            assert finished.status is RunStatus.COMPLETED
        executor = runtime.worker.executor
        assert isinstance(executor, TaskiqExecutor)
        assert executor.outage.outages == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lost the broker" in m for m in messages) == 2
    assert sum("the broker is back" in m for m in messages) == 2
    assert not [r for r in caplog.records if r.name.startswith("squidmesh") and r.exc_info]
    assert not [m for m in messages if "never retrieved" in m]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
