from __future__ import annotations

from datetime import timedelta

import pytest

from squidmesh_backends.taskiq import TaskiqExecutor, redis_stream_broker
from squidmesh_core.testing.contracts import ExecutorContract

pytestmark = pytest.mark.redis


@pytest.fixture
def executor(redis_url: str, queue: str) -> TaskiqExecutor:
    broker = redis_stream_broker(redis_url, lease=timedelta(seconds=30), queue=queue)
    return TaskiqExecutor(broker, shutdown_grace=timedelta(seconds=2))


class TestTaskiqExecutorOnRedisStreams(ExecutorContract):
    pass
