"""Worker-process fixtures: a group of workers on a test's own schema and queue."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_core.state import RunState
from tests.taskiq.processes import OwnRedis, WorkerProcess
from tests.taskiq.worker_app import crashable, effects, five_steps, saga_crash

__all__ = ["OwnRedis", "Workers", "producer", "wait_all"]


class Workers:
    """Starts workers against one schema and queue; stops them all at the end."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.procs: list[WorkerProcess] = []

    def start(self, count: int, **extra: str) -> list[WorkerProcess]:
        started = [WorkerProcess({**self.env, **extra}) for _ in range(count)]
        for worker in started:
            worker.wait_ready()
        self.procs.extend(started)
        return started

    def lines(self) -> list[tuple[str, int, str, str, int]]:
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            what, pid, run, step, attempt = line.split()
            rows.append((what, int(pid), run, step, int(attempt)))
        return rows

    def ran(self) -> Counter[tuple[str, str, int]]:
        return Counter((run, step, n) for what, _, run, step, n in self.lines() if what == "ran")

    def stop_all(self) -> list[int]:
        return [w.terminate() for w in self.procs if w.proc.poll() is None]


@pytest.fixture
def workers(
    pg_dsn: str, pg_schema: str, redis_url: str, queue: str, tmp_path: Path
) -> Iterator[Workers]:
    log = tmp_path / "steps.log"
    env = {
        "SQUIDMESH_TEST_APP_STORE": f"{pg_dsn}?schema={pg_schema}",
        "SQUIDMESH_TEST_APP_REDIS": redis_url,
        "SQUIDMESH_TEST_APP_QUEUE": queue,
        "SQUIDMESH_TEST_APP_LOG": str(log),
    }
    group = Workers(env, log)
    try:
        yield group
    finally:
        for worker in group.procs:
            worker.kill()


async def producer(dsn: str, schema: str) -> tuple[PostgresRunStore, Runtime]:
    """A runtime that only starts and reads runs (never started: it runs nothing)."""
    store = PostgresRunStore(dsn, schema=schema, max_size=2)
    await store.open()
    return store, Runtime(
        store=store,
        workflows=[five_steps, crashable, saga_crash, effects],
        settings=RuntimeSettings(),
    )


async def wait_all(store: PostgresRunStore, ids: Sequence[str], timeout: float) -> list[RunState]:
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while True:
        runs = await store.list_runs(workflow=None, status=None, limit=1000)
        mine = [r for r in runs if r.id in wanted]
        if len(mine) == len(wanted) and all(r.status.terminal for r in mine):
            return mine
        if time.monotonic() > deadline:
            counts = Counter(r.status.value for r in mine)
            raise AssertionError(f"runs did not finish in {timeout}s: {dict(counts)}")
        await asyncio.sleep(0.2)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.destroy()
