"""Cron and idempotent starts on real PostgreSQL: racing trigger loops and racing starts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.runtime import FakeClock, Runtime, RuntimeSettings
from squidmesh_core import COMPLETE, StepContext, chain, cron, manual, step, workflow
from tests.postgres.sql import execute

pytestmark = pytest.mark.postgres
T0 = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)


async def noop(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    return {}


MINUTELY = workflow(
    "pgcron.minutely",
    triggers=[cron("tick", "* * * * *"), manual()],
    steps=[step("noop", noop)],
    transitions=chain("noop", COMPLETE),
)


async def test_four_trigger_loops_over_30_ticks_create_exactly_30_runs(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock(T0)
    stores = [
        PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", max_size=2) for _ in range(4)
    ]
    loops = []
    for store in stores:
        await store.open()
        runtime = Runtime(store=store, workflows=[MINUTELY], clock=clock, cron=[MINUTELY])
        assert runtime.worker.cron_loop is not None
        loops.append(runtime.worker.cron_loop)
    try:
        created = 0
        for minute in range(1, 31):
            clock.set(T0 + timedelta(minutes=minute))
            rounds = await asyncio.gather(*(loop.tick_once(clock.now()) for loop in loops))
            created += sum(len(r) for r in rounds)
        rows = await execute(
            stores[0],
            f'SELECT count(*), count(DISTINCT idempotency_key) FROM "{pg_schema}".squidmesh_runs',
        )
    finally:
        for store in stores:
            await store.close()
    assert created == 30
    assert rows == [(30, 30)]
    assert sum(loop.lost_races for loop in loops) <= 90


async def test_concurrent_starts_with_one_key_create_one_run(pg_dsn: str, pg_schema: str) -> None:
    stores = [PostgresRunStore(pg_dsn, schema=pg_schema, max_size=2) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        runtimes = [
            Runtime(store=store, workflows=[MINUTELY], settings=RuntimeSettings())
            for store in stores
        ]
        results = await asyncio.gather(
            *(
                rt.start_run(MINUTELY, {}, trigger="manual", idempotency_key="order-42")
                for rt in runtimes
                for _ in range(5)
            )
        )
        runs = [r.unwrap() for r in results]
        rows = await execute(stores[0], f'SELECT id FROM "{pg_schema}".squidmesh_runs')
    finally:
        for store in stores:
            await store.close()
    assert len({run.id for run in runs}) == 1
    assert sum(not run.existing for run in runs) == 1
    assert [str(r[0]) for r in rows] == [runs[0].id]


async def test_the_newest_tick_is_read_from_the_bytewise_index(pg_store: PostgresRunStore) -> None:
    s = f'"{pg_store.schema}"'
    await execute(
        pg_store,
        f"INSERT INTO {s}.squidmesh_runs (id, workflow, trigger, status, version, payload,"
        " context, created_at, updated_at, idempotency_key)"
        " SELECT gen_random_uuid(), 'w' || mod(n, 50), 'tick', 'completed', 1, '{}', '{}',"
        " now(), now(), 'cron:tick:' || to_char(timestamp '2026-01-01' + n * interval '1 minute',"
        ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM generate_series(1, 20000) n',
    )
    await execute(pg_store, f"ANALYZE {s}.squidmesh_runs")
    assert (
        await pg_store.latest_idempotency_key("w7", "cron:tick:")
        == "cron:tick:2026-01-14T20:37:00Z"
    )
    plan = await execute(
        pg_store,
        "EXPLAIN "
        + pg_store._sql.latest_key.replace("%(workflow)s", "'w7'").replace(
            "%(prefix)s", "'cron:tick:'"
        ),
    )
    text = " ".join(str(row[0]) for row in plan)
    assert "squidmesh_runs_keys_bytewise" in text, text


async def test_a_pruned_tick_is_not_started_again_by_the_loop_that_saw_it(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock(T0)
    async with PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller") as store:
        runtime = Runtime(store=store, workflows=[MINUTELY], clock=clock, cron=[MINUTELY])
        loop = runtime.worker.cron_loop
        assert loop is not None
        clock.set(T0 + timedelta(minutes=1))
        assert len(await loop.tick_once(clock.now())) == 1
        await execute(store, f'DELETE FROM "{pg_schema}".squidmesh_runs')  # pruned
        clock.set(T0 + timedelta(minutes=1, seconds=20))
        assert await loop.tick_once(clock.now()) == []
        reads = loop.store_reads
        assert await loop.tick_once(clock.now()) == []
        assert loop.store_reads == reads, "nothing due: the store is not asked"
