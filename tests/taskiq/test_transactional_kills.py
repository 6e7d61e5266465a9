"""Transactional steps under kill -9: effect rows equal completed steps, never more."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import psycopg
import pytest

from squidmesh_core import AttemptStatus, RunStatus
from tests.taskiq.conftest import Workers, producer, wait_all
from tests.taskiq.worker_app import EFFECT_STEPS, effects

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = 80
KILLS = 8


async def test_killed_workers_never_commit_an_effect_twice_or_lose_one(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {pg_schema}.effects (run_id uuid, step text, attempt int, pid int)"
        )
    workers.start(3, SQUIDMESH_TEST_APP_LEASE="2")
    store, api = await producer(pg_dsn, pg_schema)
    chooser = random.Random(16)
    killed = 0
    try:
        ids = [(await api.start_run(effects, {})).unwrap().id for _ in range(RUNS)]
        began = time.monotonic()
        while killed < KILLS:
            await asyncio.sleep(chooser.uniform(0.3, 0.8))
            alive = [w for w in workers.procs if w.proc.poll() is None]
            chooser.choice(alive).kill()  # SIGKILL: no shutdown, no rollback by the worker
            killed += 1
            workers.start(1, SQUIDMESH_TEST_APP_LEASE="2")
        runs = await wait_all(store, ids, timeout=180)
        took = time.monotonic() - began
    finally:
        await store.close()
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(f"SELECT run_id::text, step, attempt FROM {pg_schema}.effects")
        rows = await cursor.fetchall()
    per_step = Counter((run_id, step) for run_id, step, _ in rows)
    completed = {(r.id, s.step): s for r in runs for s in r.steps if s.step in EFFECT_STEPS}
    assert len(completed) == RUNS * len(EFFECT_STEPS)
    assert set(per_step) == set(completed)  # no completed step without its effect
    assert set(per_step.values()) == {1}, "an effect committed twice"
    for run_id, step, attempt in rows:  # the effect is the attempt that succeeded
        succeeded = [
            a for a in completed[(run_id, step)].attempts if a.status is AttemptStatus.SUCCEEDED
        ]
        assert [a.number for a in succeeded] == [attempt]
    lost = sum(1 for s in completed.values() for a in s.attempts if a.status is AttemptStatus.LOST)
    assert lost >= 1, "no kill landed in a step: the test proved nothing"
    started = sum(1 for w, *_ in workers.lines() if w == "start")
    print(
        f"{RUNS} runs x {len(EFFECT_STEPS)} transactional steps, {KILLS} kill -9s in {took:.1f}s: "
        f"{len(rows)} effect rows for {len(completed)} completed steps, "
        f"{started} attempts started, {lost} lost"
    )
