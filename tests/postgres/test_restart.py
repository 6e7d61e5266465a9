"""PostgreSQL restarted under load, on a cluster this test owns (never the shared server)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_core import RunStatus
from tests.postgres.cluster import ThrowawayCluster
from tests.postgres.counting import CountingFlow

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

COUNTING = CountingFlow("restart.flow", delay=0.05)
FLOW = COUNTING.definition
CALLS = COUNTING.calls


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    owned = ThrowawayCluster()
    try:
        owned.init()
        owned.start()
        yield owned
    finally:
        owned.destroy()


@pytest.mark.timeout(180)
async def test_runs_complete_across_a_server_restart(
    cluster: ThrowawayCluster, caplog: pytest.LogCaptureFixture
) -> None:
    CALLS.clear()
    caplog.set_level(logging.WARNING)
    await migrate(cluster.dsn)
    settings = RuntimeSettings(
        poll_interval=timedelta(milliseconds=100),
        lease=timedelta(seconds=20),
        heartbeat_every=timedelta(seconds=2),
        concurrency=8,
    )
    store = PostgresRunStore(cluster.dsn, max_size=4, retry_for=timedelta(seconds=30))
    async with store, Runtime(store=store, workflows=[FLOW], settings=settings) as runtime:
        ids = [(await runtime.start_run(FLOW, {})).unwrap().id for _ in range(60)]
        while sum(CALLS.values()) < 40:
            await asyncio.sleep(0.02)
        began = time.monotonic()
        await asyncio.to_thread(cluster.stop, "fast")
        await asyncio.sleep(1.0)  # work keeps failing while the server is down
        await asyncio.to_thread(cluster.start)
        outage = time.monotonic() - began
        finished = [
            (await runtime.wait_for(i, timeout=timedelta(seconds=90))).unwrap() for i in ids
        ]
    assert outage > 1.0
    assert all(run.status is RunStatus.COMPLETED for run in finished), [
        (run.id, run.status) for run in finished if run.status is not RunStatus.COMPLETED
    ]
    assert all(run.context == {"one": 1, "two": 1, "three": 1} for run in finished)
    assert COUNTING.every_attempt_ran_once(60), "an attempt was lost or executed twice"
    assert any("connection lost" in r.getMessage() for r in caplog.records), (
        "the restart was never noticed: the test did not exercise the fault"
    )
