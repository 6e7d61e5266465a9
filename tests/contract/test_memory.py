from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime import InProcessExecutor
from squidmesh_core.testing.contracts import ExecutorContract, RunStoreContract


@pytest.fixture
async def run_store() -> AsyncIterator[MemoryRunStore]:
    async with MemoryRunStore() as store:
        yield store


@pytest.fixture
def executor() -> InProcessExecutor:
    return InProcessExecutor(concurrency=3)


class TestMemoryRunStore(RunStoreContract):
    pass


class TestInProcessExecutor(ExecutorContract):
    pass
