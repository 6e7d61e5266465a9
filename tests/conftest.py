"""Service fixtures (PostgreSQL schemas and Redis queues of a test's own, removed
afterwards) and a guard that no Taskiq receiver task outlives its test."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import taskiq
import taskiq_redis

from squidmesh_backends.postgres import PostgresRunStore, migrate
from tests.services import drop_schema, new_schema_name, require_postgres, require_redis


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return require_postgres()


@pytest.fixture
def fresh_schema(pg_dsn: str) -> Iterator[str]:
    """The name of a schema nobody uses yet (dropped after the test)."""
    schema = new_schema_name()
    yield schema
    drop_schema(pg_dsn, schema)


@pytest.fixture
async def pg_schema(pg_dsn: str, fresh_schema: str) -> str:
    """A freshly migrated schema."""
    await migrate(pg_dsn, schema=fresh_schema)
    return fresh_schema


@pytest.fixture
async def pg_store(pg_dsn: str, pg_schema: str) -> AsyncIterator[PostgresRunStore]:
    """A store on a migrated schema that compares times given by the caller."""
    async with PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", max_size=4) as store:
        yield store


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    """A Redis stream name of the test's own (deleted afterwards)."""
    name = f"sm_test_{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(name)
    client.close()


# ------------------------------------------------------------ taskiq task guard

TASKIQ_DIRS = tuple(str(Path(m.__file__).parent) for m in (taskiq, taskiq_redis) if m.__file__)
TASKIQ_TASK_NAMES = ("squidmesh-taskiq-", "squidmesh-job-", "taskiq.", "taskiq_redis.")
"""The executor's receiver loop, broker reads and job tasks; the receiver's anyio tasks."""


def taskiq_task(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` belongs to a Taskiq receiver or the executor around it.

    By name (the executor's own tasks; anyio names the receiver's prefetcher and
    runner after their functions) or by coroutine (a delivery callback).
    """
    if task.get_name().startswith(TASKIQ_TASK_NAMES):
        return True
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_filename.startswith(TASKIQ_DIRS)


def describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return f"{task.get_name()} ({getattr(coro, '__qualname__', type(coro).__name__)})"


@pytest.fixture
async def no_taskiq_tasks_left() -> AsyncIterator[None]:
    """Fail the test if its event loop still runs Taskiq receiver tasks at teardown.

    Runs after the test's other fixtures are torn down (it is set up before
    them), so an executor stopped by a fixture has had its chance. Leftovers
    are cancelled before the failure, so they cannot spill into other tests.
    """
    yield
    current = asyncio.current_task()
    leftovers = [
        t for t in asyncio.all_tasks() if t is not current and not t.done() and taskiq_task(t)
    ]
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    await asyncio.wait(leftovers, timeout=5)
    names = ", ".join(sorted(describe(t) for t in leftovers))
    pytest.fail(f"{len(leftovers)} Taskiq receiver task(s) outlived the test: {names}")


@pytest.fixture(autouse=True)
def taskiq_task_guard(request: pytest.FixtureRequest) -> None:
    """Every async test under tests/ gets ``no_taskiq_tasks_left``."""
    test = getattr(request.node, "obj", None)
    if inspect.iscoroutinefunction(test):
        request.getfixturevalue(no_taskiq_tasks_left.__name__)
