"""PostgreSQL's operator queries: what the contract cannot see (rows, caches, plans, clocks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from squidmesh_backends.postgres import LATEST_VERSION, PostgresRunStore, migrate
from squidmesh_backends.postgres._operations import _statements
from squidmesh_core.decide import decide
from squidmesh_core.events import CancelRequested
from squidmesh_core.state import RunStatus
from squidmesh_core.testing.contracts.operations import cancelled, completed
from squidmesh_core.testing.contracts.run_store import FLOW, T0, committed, new_run, run_id
from tests.postgres.sql import execute

pytestmark = pytest.mark.postgres


@pytest.fixture
async def other_store(pg_store: PostgresRunStore) -> AsyncIterator[PostgresRunStore]:
    """A second store (another process, as far as caches go) on the same schema."""
    async with PostgresRunStore(
        pg_store.dsn, schema=pg_store.schema, clock="caller", max_size=2
    ) as store:
        yield store


async def rows_of(store: PostgresRunStore, table: str, run: str) -> int:
    found = await execute(store, f"SELECT count(*) FROM {table} WHERE run_id = %s", (run,))
    return int(found[0][0])


async def test_pruning_deletes_the_step_runs_and_attempts_of_a_run(
    pg_store: PostgresRunStore,
) -> None:
    state = await completed(pg_store, 1, T0)
    assert await rows_of(pg_store, "squidmesh_attempts", state.id) == 1
    assert (
        await pg_store.prune_runs(
            finished_before=T0 + timedelta(days=1),
            statuses=[state.status],
            limit=None,
            dry_run=False,
        )
        == 1
    )
    for table in ("squidmesh_runs", "squidmesh_step_runs", "squidmesh_attempts", "squidmesh_jobs"):
        column = "id" if table == "squidmesh_runs" else "run_id"
        found = await execute(
            pg_store, f"SELECT count(*) FROM {table} WHERE {column} = %s", (state.id,)
        )
        assert found == [(0,)], table


async def test_the_attempts_worker_is_a_column(pg_store: PostgresRunStore) -> None:
    state = await completed(pg_store, 1, T0)
    found = await execute(
        pg_store, "SELECT worker FROM squidmesh_attempts WHERE run_id = %s", (state.id,)
    )
    assert found == [("contract-worker",)]


async def test_a_pruned_run_is_forgotten_by_the_store_that_knew_it(
    pg_store: PostgresRunStore, other_store: PostgresRunStore
) -> None:
    # given: this store keeps run 1 as the base of its next commit; another finishes it
    state = await committed(pg_store, new_run(1))
    assert run_id(1) in pg_store._known
    await committed(other_store, decide(FLOW, state, CancelRequested(), now=T0).unwrap())
    # when
    pruned = await pg_store.prune_runs(
        finished_before=T0 + timedelta(days=1),
        statuses=[RunStatus.CANCELLED],
        limit=10,
        dry_run=False,
    )
    # then
    assert pruned == 1
    assert run_id(1) not in pg_store._known
    assert await pg_store.load(run_id(1)) is None


async def test_the_status_reports_the_newest_applied_migration(
    pg_dsn: str, fresh_schema: str
) -> None:
    await migrate(pg_dsn, schema=fresh_schema)
    async with PostgresRunStore(pg_dsn, schema=fresh_schema) as store:
        found = await store.operations_status(
            now=datetime.now(UTC), expiring_within=timedelta(seconds=30), workers_since=T0
        )
    assert (found.schema_version, found.schema_expected) == (LATEST_VERSION, LATEST_VERSION)
    assert LATEST_VERSION == 8


async def test_with_the_database_clock_the_status_compares_with_the_servers_time(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresRunStore(pg_dsn, schema=pg_schema, clock="database") as store:
        now = datetime.now(UTC)
        await committed(store, new_run(1, at=now - timedelta(minutes=1)))
        await committed(store, new_run(2, at=now + timedelta(hours=1)))
        found = await store.operations_status(
            now=T0, expiring_within=timedelta(seconds=30), workers_since=T0
        )
    assert found.due_jobs == 1  # the caller's (long past) time is not what counts


async def test_the_job_queries_can_walk_the_partial_indexes(pg_store: PostgresRunStore) -> None:
    sql = _statements(f'"{pg_store.schema}"', "caller")
    params = {"now": T0, "within": timedelta(seconds=30)}
    plans: dict[str, str] = {}
    for name in ("unleased", "leases", "expired"):
        statement = getattr(sql, name).replace("%(now)s", "%(now)s::timestamptz")
        async with await psycopg.AsyncConnection.connect(pg_store.dsn) as conn:
            await conn.execute("SET enable_seqscan = off")
            cursor = await conn.execute(f"EXPLAIN {statement}", params)
            plans[name] = " ".join(str(r[0]) for r in await cursor.fetchall())
    assert "squidmesh_jobs_unleased" in plans["unleased"]
    assert "squidmesh_jobs_leases" in plans["leases"]
    assert "squidmesh_jobs_leases" in plans["expired"]


async def test_old_cancelled_runs_are_pruned_in_batches(pg_store: PostgresRunStore) -> None:
    for n in range(1, 8):
        await cancelled(pg_store, n, T0 + timedelta(seconds=n))
    counts = []
    while True:
        deleted = await pg_store.prune_runs(
            finished_before=T0 + timedelta(days=1),
            statuses=[RunStatus.CANCELLED],
            limit=3,
            dry_run=False,
        )
        counts.append(deleted)
        if deleted < 3:
            break
    assert counts == [3, 3, 1]


async def test_the_kept_cron_look_probes_the_bytewise_key_index(
    pg_store: PostgresRunStore,
) -> None:
    sql = _statements(f'"{pg_store.schema}"', "caller")
    params = {"statuses": ["cancelled"], "before": T0, "limit": 10}
    plans: dict[str, str] = {}
    for name in ("count_prunable", "prune", "count_limited"):
        async with await psycopg.AsyncConnection.connect(pg_store.dsn) as conn:
            await conn.execute("SET enable_seqscan = off")
            cursor = await conn.execute(f"EXPLAIN {getattr(sql, name)}", params)
            plans[name] = " ".join(str(r[0]) for r in await cursor.fetchall())
            await conn.rollback()
    for name, plan in plans.items():
        assert "squidmesh_runs_keys_bytewise" in plan, name
    assert "squidmesh_runs_by_status" in plans["prune"]
