"""Several worker processes on real Redis and real PostgreSQL: scale-out and crashes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import redis.asyncio as aredis

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_core import AttemptStatus, RunStatus
from tests.taskiq.conftest import OwnRedis, Workers, producer, wait_all
from tests.taskiq.worker_app import crashable, five_steps, saga_crash

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]


async def test_three_workers_complete_300_runs_of_five_steps_each_exactly_once(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    workers.start(3)
    store, api = await producer(pg_dsn, pg_schema)
    try:
        began = time.monotonic()
        ids = [(await api.start_run(five_steps, {})).unwrap().id for _ in range(300)]
        runs = await wait_all(store, ids, timeout=180)
        elapsed = time.monotonic() - began
    finally:
        await store.close()
    assert workers.stop_all() == [0, 0, 0]
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    assert all(len(s.attempts) == 1 for r in runs for s in r.steps)
    ran = workers.ran()
    assert len(ran) == 1500 and set(ran.values()) == {1}, "a step ran twice or not at all"
    pids = Counter(pid for _, pid, *_ in workers.lines())
    assert len(pids) == 3, f"work did not spread over the workers: {pids}"
    print(f"300 runs x 5 steps on 3 workers in {elapsed:.1f}s; steps per worker {dict(pids)}")


async def test_a_killed_worker_is_replaced_after_its_lease_expires(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    lease = 2.0
    workers.start(2, SQUIDMESH_TEST_APP_LEASE=str(lease))
    store, api = await producer(pg_dsn, pg_schema)
    try:
        run_id = (await api.start_run(crashable, {})).unwrap().id
        deadline = time.monotonic() + 30
        while not any(w == "start" for w, *_ in workers.lines()):
            assert time.monotonic() < deadline, "the slow step never started"
            await asyncio.sleep(0.05)
        victim = next(pid for w, pid, *_ in workers.lines() if w == "start")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        while not any(w == "start" and n == 2 for w, _, _, _, n in workers.lines()):
            assert time.monotonic() - killed_at < 30, "nobody reclaimed the job"
            await asyncio.sleep(0.05)
        reclaim_delay = time.monotonic() - killed_at
        (run,) = await wait_all(store, [run_id], timeout=30)
    finally:
        await store.close()
    assert run.status is RunStatus.COMPLETED
    slow = run.step_run("slow")
    assert slow is not None
    assert [a.status for a in slow.attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    # Reclaim needs the lease to lapse, then one dispatcher poll (0.25 s) and a claim.
    assert lease * 0.5 < reclaim_delay < lease + 0.25 + 1.5, reclaim_delay
    survivors = [w for w in workers.procs if w.pid != victim]
    assert [w.terminate() for w in survivors] == [0]
    print(f"reclaimed {reclaim_delay:.2f}s after kill -9 (lease {lease}s, poll 0.25s)")


async def test_a_compensation_killed_with_its_worker_resumes_on_another(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    lease = 2.0
    workers.start(2, SQUIDMESH_TEST_APP_LEASE=str(lease))
    store, api = await producer(pg_dsn, pg_schema)
    try:
        run_id = (await api.start_run(saga_crash, {})).unwrap().id
        deadline = time.monotonic() + 30
        while not any(
            w == "start" and st == "book:compensate" for w, _, _, st, _ in workers.lines()
        ):
            assert time.monotonic() < deadline, "the compensation never started"
            await asyncio.sleep(0.05)
        victim = next(pid for w, pid, _, st, _ in workers.lines() if st == "book:compensate")
        middle = await store.load(run_id)
        assert middle is not None and middle.status is RunStatus.COMPENSATING
        os.kill(victim, signal.SIGKILL)
        (run,) = await wait_all(store, [run_id], timeout=30)
    finally:
        await store.close()
    assert run.status is RunStatus.FAILED
    assert run.last_error is not None and run.last_error.details.get("code") == "no_courier"
    undo = run.step_run("book:compensate")
    assert undo is not None
    assert [a.status for a in undo.attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    assert [s.step for s in run.steps][-2:] == ["charge:compensate", "book:compensate"]
    ran = workers.ran()
    assert ran[(run_id, "charge:compensate", 1)] == 1  # undone once, before the crash
    assert ran[(run_id, "book:compensate", 2)] == 1 and ran[(run_id, "book:compensate", 1)] == 0
    survivors = [w for w in workers.procs if w.pid != victim]
    assert [w.terminate() for w in survivors] == [0]


async def test_duplicated_messages_change_nothing(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    workers.start(2, SQUIDMESH_TEST_APP_DUPLICATE="1", SQUIDMESH_TEST_APP_INLINE="0")
    store, api = await producer(pg_dsn, pg_schema)
    try:
        ids = [(await api.start_run(five_steps, {})).unwrap().id for _ in range(40)]
        runs = await wait_all(store, ids, timeout=120)
    finally:
        await store.close()
    assert workers.stop_all() == [0, 0]
    for run in runs:
        assert run.status is RunStatus.COMPLETED
        assert [(s.step, [a.number for a in s.attempts]) for s in run.steps] == [
            (f"s{i}", [1]) for i in range(1, 6)
        ]
        assert run.context == {f"s{i}": 1 for i in range(1, 6)}
    ran = workers.ran()
    assert len(ran) == 200 and set(ran.values()) == {1}


async def test_lost_messages_and_a_redis_restart_lose_no_run(
    workers: Workers, own_redis: OwnRedis, pg_dsn: str, pg_schema: str
) -> None:
    workers.env["SQUIDMESH_TEST_APP_REDIS"] = own_redis.url
    workers.start(2, SQUIDMESH_TEST_APP_LEASE="2")
    store, api = await producer(pg_dsn, pg_schema)
    try:
        ids: list[str] = [(await api.start_run(five_steps, {})).unwrap().id for _ in range(30)]
        await asyncio.sleep(0.3)
        client = aredis.Redis.from_url(own_redis.url)
        await client.flushall()  # every queued message is gone
        await client.aclose()
        ids += [(await api.start_run(five_steps, {})).unwrap().id for _ in range(30)]
        await asyncio.sleep(0.3)
        own_redis.stop()  # Redis goes away under load...
        await asyncio.sleep(1.5)
        own_redis.start()  # ...and comes back empty
        ids += [(await api.start_run(five_steps, {})).unwrap().id for _ in range(30)]
        try:
            runs = await wait_all(store, ids, timeout=120)
        except AssertionError:
            for w in workers.procs:
                print("".join(w.output[-40:]))
            raise
    finally:
        await store.close()
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    ran = workers.ran()
    assert {(r, s) for r, s, _ in ran} == {(r.id, f"s{i}") for r in runs for i in range(1, 6)}
    assert set(ran.values()) == {1}, "an attempt ran twice"
    assert workers.stop_all() == [0, 0]


async def test_two_workers_start_one_run_per_cron_tick(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    factor = 30.0  # a minute passes every two real seconds
    epoch = time.time()
    workers.start(
        2,
        SQUIDMESH_TEST_APP_FAST_CLOCK=f"{epoch}:{factor}",
        SQUIDMESH_TEST_APP_LEASE="600",
    )
    await asyncio.sleep(13)
    assert workers.stop_all() == [0, 0]
    store = PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", max_size=1)
    async with store:
        runs = await store.list_runs(workflow="workers.every_minute", status=None, limit=100)
    ticks = sorted(str(dict(r.context["schedule"])["tick"]) for r in runs)  # type: ignore[arg-type]
    assert len(ticks) >= 4, ticks
    assert len(set(ticks)) == len(ticks), "a tick started twice"
    minutes = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in ticks]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes)), ticks
    assert sum(r.status is RunStatus.COMPLETED for r in runs) >= len(runs) - 2
    starters = {pid for what, pid, _, step, _ in workers.lines() if step == "tick"}
    print(f"{len(ticks)} ticks, one run each; steps ran in {len(starters)} worker(s)")
