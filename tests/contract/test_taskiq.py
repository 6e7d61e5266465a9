from __future__ import annotations

import pytest
from taskiq import InMemoryBroker

from squidmesh_backends.taskiq import TaskiqExecutor
from squidmesh_core.testing.contracts import ExecutorContract


@pytest.fixture
def executor() -> TaskiqExecutor:
    return TaskiqExecutor(InMemoryBroker(), concurrency=3)


class TestTaskiqExecutorInMemory(ExecutorContract):
    pass
