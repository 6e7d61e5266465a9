"""Broker names accepted by compose, and the Redis stream settings SquidMesh relies on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from taskiq import InMemoryBroker
from taskiq_redis import RedisStreamBroker

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.runtime import RuntimeSettings, compose
from squidmesh_backends.taskiq import TaskiqExecutor, open_broker
from squidmesh_core import COMPLETE, RunStatus, StepContext, chain, manual, step, workflow


def test_redis_urls_get_a_stream_broker_set_up_for_squidmesh() -> None:
    broker = open_broker("redis://127.0.0.1:6379/0", lease=timedelta(minutes=5))
    assert isinstance(broker, RedisStreamBroker)
    assert broker.consumer_id == "0"  # messages sent before any worker started are kept
    assert broker.maxlen == 100_000
    assert broker.idle_timeout == 50 * 60 * 1000  # ten leases
    assert broker.count == 1  # one entry per read: no hoarding


def test_the_concurrency_setting_sizes_a_taskiq_executor_too() -> None:
    # Regression: compose(broker=...) ignored RuntimeSettings(concurrency=...).
    runtime = compose(workflows=[], broker="memory", settings=RuntimeSettings(concurrency=3))
    assert isinstance(runtime.worker.executor, TaskiqExecutor)
    assert runtime.worker.executor.capacity == 3


def test_unknown_brokers_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown broker"):
        open_broker("amqp://x", lease=timedelta(seconds=30))


async def done(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {"done": True}


FLOW = workflow(
    "brokers.flow", triggers=[manual()], steps=[step("a", done)], transitions=chain("a", COMPLETE)
)


async def test_compose_with_the_in_memory_broker_runs_steps_through_taskiq() -> None:
    runtime = compose(
        workflows=[FLOW],
        broker="memory",
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=50)),
    )
    assert isinstance(runtime.worker.executor, TaskiqExecutor)
    assert isinstance(runtime.worker.executor.broker, InMemoryBroker)
    async with runtime:
        run = (await runtime.start_run(FLOW, {})).unwrap()
        finished = (await runtime.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert finished.status is RunStatus.COMPLETED
    assert runtime.worker.executor.published == 1
