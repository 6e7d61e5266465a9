"""PostgreSQL-specific behaviour: migrations, namespaces, database time, statement counts, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb
from returns.result import Failure, Success

from squidmesh_backends.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    MigrationRequiredError,
)
from squidmesh_backends.postgres import LATEST_VERSION, PostgresRunStore, migrate
from squidmesh_backends.postgres.migrations import MIGRATIONS
from squidmesh_backends.probe import COMMITS, LAST_COMMIT, STATEMENTS, Counters
from squidmesh_backends.runtime.bootstrap import open_store, split_schema
from squidmesh_core.commands import RescheduleJob
from squidmesh_core.decide import decide
from squidmesh_core.errors import StaleLease, VersionConflict
from squidmesh_core.events import CancelRequested, JobDelivered, StepSucceeded
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import Fence
from squidmesh_core.testing.contracts.run_store import (
    FLOW,
    LEASE,
    T0,
    Tokens,
    committed,
    deliver,
    first_succeeded,
    new_run,
    run_id,
)
from tests.postgres.sql import PooledStore, execute
from tests.services import drop_schema

pytestmark = pytest.mark.postgres


async def tables(dsn: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {row[0] for row in await cursor.fetchall()}


# ---------------------------------------------------------------- migrations


async def test_migrate_creates_the_tables_and_records_the_version(
    pg_dsn: str, fresh_schema: str
) -> None:
    assert await migrate(pg_dsn, schema=fresh_schema) == tuple(m.version for m in MIGRATIONS)
    assert await tables(pg_dsn, fresh_schema) == {
        "squidmesh_schema_migrations",
        "squidmesh_runs",
        "squidmesh_step_runs",
        "squidmesh_attempts",
        "squidmesh_jobs",
        "squidmesh_workers",
    }
    assert await migrate(pg_dsn, schema=fresh_schema) == ()


async def test_concurrent_migrations_apply_each_file_once(pg_dsn: str, fresh_schema: str) -> None:
    results = await asyncio.gather(*(migrate(pg_dsn, schema=fresh_schema) for _ in range(6)))
    everything = tuple(m.version for m in MIGRATIONS)
    assert sorted(results) == [()] * 5 + [everything]
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(
            f'SELECT version FROM "{fresh_schema}".squidmesh_schema_migrations'
        )
        assert [v for (v,) in await cursor.fetchall()] == list(everything)


async def test_upgrading_from_version_1_keeps_the_runs(pg_dsn: str, fresh_schema: str) -> None:
    assert await migrate(pg_dsn, schema=fresh_schema, up_to=1) == (1,)
    with pytest.raises(MigrationRequiredError, match="is at version 1"):
        await PostgresRunStore(pg_dsn, schema=fresh_schema).open()
    payload = {"n": 1, "s": "x"}
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f'INSERT INTO "{fresh_schema}".squidmesh_runs (id, workflow, trigger, status, version,'
            " payload, context, created_at, updated_at) VALUES (%s, 'contract.flow', 'manual',"
            " 'completed', 3, %s, '{}', now(), now())",
            (run_id(1), Jsonb(payload)),
        )
    assert await migrate(pg_dsn, schema=fresh_schema) == tuple(range(2, LATEST_VERSION + 1))
    async with PostgresRunStore(pg_dsn, schema=fresh_schema, clock="caller") as store:
        loaded = await store.load(run_id(1))
    assert loaded is not None and dict(loaded.payload) == payload


async def test_an_unmigrated_schema_is_refused_naming_the_command(
    pg_dsn: str, fresh_schema: str
) -> None:
    store = PostgresRunStore(pg_dsn, schema=fresh_schema)
    with pytest.raises(MigrationRequiredError) as raised:
        await store.open()
    assert f"squidmesh migrate --dsn <DSN> --schema {fresh_schema}" in str(raised.value)
    assert "version 0" in str(raised.value)
    with pytest.raises(MigrationRequiredError):
        await store.load(run_id(1))


async def test_a_newer_schema_is_refused_by_the_store_and_by_migrate(
    pg_dsn: str, pg_schema: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f'INSERT INTO "{pg_schema}".squidmesh_schema_migrations (version, name, checksum)'
            " VALUES (%s, 'future', 'x')",
            (LATEST_VERSION + 1,),
        )
    with pytest.raises(MigrationRequiredError, match="newer than this SquidMesh"):
        await PostgresRunStore(pg_dsn, schema=pg_schema).open()
    with pytest.raises(MigrationRequiredError, match="upgrade SquidMesh"):
        await migrate(pg_dsn, schema=pg_schema)


async def test_an_edited_migration_is_detected(pg_dsn: str, pg_schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f'UPDATE "{pg_schema}".squidmesh_schema_migrations SET checksum = %s', ("edited",)
        )
    with pytest.raises(MigrationRequiredError, match="must never change"):
        await migrate(pg_dsn, schema=pg_schema)


async def test_schemas_keep_stores_apart(pg_dsn: str, pg_store: PostgresRunStore) -> None:
    other = "sm_test_other_ns"
    await migrate(pg_dsn, schema=other)
    try:
        async with PostgresRunStore(pg_dsn, schema=other, clock="caller") as neighbour:
            await committed(pg_store, new_run(1))
            assert await neighbour.load(run_id(1)) is None
            assert (
                await neighbour.claim_due(
                    now=T0, limit=5, lease_for=LEASE, owner="n", mint=Tokens()
                )
                == []
            )
    finally:
        drop_schema(pg_dsn, other)


@pytest.mark.parametrize("name", ["Public", "a-b", "x;drop table y", "", "1abc", "a" * 64])
def test_schema_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid PostgreSQL schema name"):
        PostgresRunStore("postgresql://127.0.0.1/x", schema=name)


def test_urls_carry_the_schema() -> None:
    assert split_schema("postgresql://u@h:5/db?schema=jobs&sslmode=disable") == (
        "postgresql://u@h:5/db?sslmode=disable",
        "jobs",
    )
    assert split_schema("postgres://h/db") == ("postgres://h/db", "public")
    store = open_store("postgresql://h/db?schema=app_jobs")
    assert isinstance(store, PostgresRunStore)
    assert store.schema == "app_jobs"
    assert store.dsn == "postgresql://h/db"


# ---------------------------------------------------------------- session settings


async def test_pooled_connections_carry_the_timeouts(pg_dsn: str, pg_schema: str) -> None:
    async with PooledStore(
        pg_dsn,
        schema=pg_schema,
        statement_timeout=timedelta(seconds=7),
        idle_in_transaction_timeout=timedelta(seconds=9),
    ) as store:
        rows = await store.pooled(
            "SELECT current_setting('statement_timeout'),"
            " current_setting('idle_in_transaction_session_timeout'), current_setting('TimeZone')"
        )
    assert rows == [("7s", "9s", "UTC")]


async def test_a_statement_over_the_timeout_is_a_backend_error(pg_dsn: str, pg_schema: str) -> None:
    async with PooledStore(
        pg_dsn, schema=pg_schema, statement_timeout=timedelta(milliseconds=100)
    ) as store:
        with pytest.raises(BackendUnavailableError, match="cancelled a statement"):
            await store.pooled("SELECT pg_sleep(1)")


# ---------------------------------------------------------------- one transaction per step


@pytest.fixture
async def counted(pg_dsn: str, pg_schema: str) -> AsyncIterator[tuple[PostgresRunStore, Counters]]:
    """A store (caller's clock) reporting to a ``Counters`` probe."""
    probe = Counters()
    async with PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", probe=probe) as store:
        yield store, probe


def last_commit(probe: Counters) -> list[str]:
    lines = probe.detail(LAST_COMMIT)
    assert isinstance(lines, list)
    return [str(line) for line in lines]


def upserted_steps(probe: Counters) -> bool:
    """Whether the last commit wrote step rows without knowing which exist (no base).

    With a base a changed step row is updated; without one every row is upserted
    (an ``INSERT ... ON CONFLICT``, cut from its summary line).
    """
    lines = [line for line in last_commit(probe) if "squidmesh_step_runs" in line]
    assert lines, "the commit wrote no step row"
    return not any(line.startswith("UPDATE") for line in lines)


async def test_a_step_transition_is_one_transaction_of_few_statements(
    counted: tuple[PostgresRunStore, Counters],
) -> None:
    store, probe = counted
    state = await committed(store, new_run(1))
    before = probe[COMMITS]
    state, token = await deliver(store, state, T0)
    assert probe[COMMITS] == before + 1
    start_statements = last_commit(probe)
    job = JobId(f"{state.id}/first/1")
    done = decide(
        FLOW, state, StepSucceeded(job_id=job, lease_token=token, output={"a": 1}), now=T0
    ).unwrap()
    statements_before = probe[STATEMENTS]
    await committed(store, done, Fence(job_id=job, lease_token=token))
    assert probe[COMMITS] == before + 2
    # Step succeeded and the next one scheduled: one statement (one round trip, its
    # own transaction) whose parts are the run update, the fenced delete of the
    # finished job, the finished step row, the new step row, the attempt row, the
    # new job and one NOTIFY. Known rows are updated and new ones inserted.
    assert probe[STATEMENTS] - statements_before == 1
    kinds = [line.split(" ")[0] for line in last_commit(probe)]
    assert kinds == ["UPDATE", "DELETE", "UPDATE", "INSERT", "UPDATE", "INSERT", "SELECT"]
    assert not upserted_steps(probe)
    assert "squidmesh_attempts" in " ".join(start_statements)


async def test_unchanged_steps_are_not_rewritten(
    counted: tuple[PostgresRunStore, Counters],
) -> None:
    store, probe = counted
    state = await first_succeeded(store)
    state, _ = await deliver(store, state, T0)
    # Starting 'pause' touches its own step row and attempt, never 'first' again.
    assert sum("squidmesh_step_runs" in line for line in last_commit(probe)) == 1
    assert "x1" in next(s for s in last_commit(probe) if "squidmesh_step_runs" in s)
    assert await store.load(state.id) == state


async def test_two_writes_to_one_job_go_as_a_pipeline_in_one_transaction(
    counted: tuple[PostgresRunStore, Counters],
) -> None:
    """A statement cannot see its own writes, so such a plan is not one statement."""
    store, probe = counted
    state = await committed(store, new_run(1))
    job = JobId(f"{state.id}/first/1")
    started = decide(
        FLOW, state, JobDelivered(job_id=job, lease_token=LeaseToken("t")), now=T0
    ).unwrap()
    later = T0 + timedelta(hours=1)
    moved = replace(  # starts the job and moves it: two writes to its row
        started,
        state=replace(
            started.state, jobs=tuple(replace(j, due_at=later) for j in started.state.jobs)
        ),
        commands=(*started.commands, RescheduleJob(job_id=job, due_at=later)),
    )
    before = (probe[COMMITS], probe[STATEMENTS])
    assert await store.commit(moved) == Success(None)
    assert probe[COMMITS] == before[0] + 1
    assert probe[STATEMENTS] - before[1] > 1  # sent as a pipeline
    assert await store.load(state.id) == moved.state
    refused = await store.commit(moved)  # again: its version is taken now
    assert isinstance(refused, Failure)  # the pipeline is refused as a whole
    assert isinstance(refused.failure(), VersionConflict)
    assert probe[COMMITS] == before[0] + 1, "a refused commit is not counted"
    assert await store.load(state.id) == moved.state


async def test_a_store_that_keeps_no_states_writes_everything_and_still_loads_equal(
    pg_dsn: str, pg_schema: str
) -> None:
    probe = Counters()
    async with PostgresRunStore(
        pg_dsn, schema=pg_schema, clock="caller", known_runs=0, probe=probe
    ) as store:
        state = await committed(store, new_run(1))
        state, _ = await deliver(store, state, T0)
        assert upserted_steps(probe)
        decision = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
        assert await store.commit(decision) == Success(None)
        assert upserted_steps(probe)
        assert await store.load(state.id) == decision.state


async def test_a_kept_state_of_another_version_is_not_used_as_the_base(
    pg_dsn: str, pg_schema: str
) -> None:
    """Another store moved the run on: this one's kept state is no base for the next commit."""
    probe = Counters()
    async with (
        PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller", probe=probe) as mine,
        PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller") as other,
    ):
        state = await committed(mine, new_run(1))  # kept here at version 1
        state, token = await deliver(other, state, T0)  # version 2, written elsewhere
        job = JobId(f"{state.id}/first/1")
        done = decide(
            FLOW, state, StepSucceeded(job_id=job, lease_token=token, output={"a": 1}), now=T0
        ).unwrap()
        await committed(mine, done, Fence(job_id=job, lease_token=token))
        assert upserted_steps(probe), "version 1 is no base for version 2"
        assert await mine.load(state.id) == done.state
        stale = decide(FLOW, state, CancelRequested(), now=T0).unwrap()  # made on version 2
        assert isinstance((await mine.commit(stale)).failure(), VersionConflict)
        started, _ = await deliver(mine, done.state, T0)  # the loaded version 3 is the base
        assert not upserted_steps(probe)
        assert await other.load(state.id) == started


async def test_a_refused_commit_writes_nothing(pg_store: PostgresRunStore) -> None:
    state = await committed(pg_store, new_run(1))
    state, token = await deliver(pg_store, state, T0)
    job = JobId(f"{state.id}/first/1")
    done = decide(
        FLOW, state, StepSucceeded(job_id=job, lease_token=token, output={"a": 1}), now=T0
    ).unwrap()
    wrong = Fence(job_id=job, lease_token=LeaseToken("not-the-lease"))
    assert await pg_store.commit(done, fence=wrong) == Failure(StaleLease(job_id=job))
    assert await pg_store.load(state.id) == state
    assert await pg_store.commit(done, fence=Fence(job_id=job, lease_token=token)) == Success(None)
    assert isinstance(
        (await pg_store.commit(done, fence=Fence(job_id=job, lease_token=token))).failure(),
        VersionConflict,
    )


# ---------------------------------------------------------------- database time


async def test_the_database_clock_decides_what_is_due(pg_dsn: str, pg_schema: str) -> None:
    now = datetime.now(UTC)
    async with PostgresRunStore(pg_dsn, schema=pg_schema) as store:
        await committed(store, new_run(1, at=now - timedelta(seconds=1)))
        await committed(store, new_run(2, at=now + timedelta(hours=1)))
        # The caller's clock is ignored: it claims "from the past" and "from the future".
        claims = await store.claim_due(
            now=now - timedelta(days=1), limit=5, lease_for=LEASE, owner="w", mint=Tokens()
        )
        assert [c.run_id for c in claims] == [run_id(1)]
        assert abs(claims[0].lease_expires_at - (now + LEASE)) < timedelta(seconds=5)
        later = await store.claim_due(
            now=now + timedelta(days=1), limit=5, lease_for=LEASE, owner="w", mint=Tokens()
        )
        assert later == []
        upcoming = await store.next_due_at()
        assert upcoming is not None
        assert abs(upcoming - (now + LEASE)) < timedelta(seconds=5)
        held = claims[0]
        assert await store.heartbeat(
            held.job_id, held.lease_token, until=datetime.now(UTC) + timedelta(minutes=10)
        )
        rows = await execute(
            store,
            f'SELECT lease_expires_at - now() FROM "{pg_schema}".squidmesh_jobs WHERE id = %s',
            (held.job_id,),
        )
        assert timedelta(minutes=9) < rows[0][0] <= timedelta(minutes=10)


# ---------------------------------------------------------------- faults


@pytest.mark.slow
async def test_an_unreachable_server_raises_backend_unavailable() -> None:
    store = PostgresRunStore(
        "postgresql://postgres@127.0.0.1:1/nothing", retry_for=timedelta(milliseconds=300)
    )
    with pytest.raises(BackendUnavailableError):
        await store.open()
    with pytest.raises(BackendUnavailableError):
        await store.load(run_id(1))
    with pytest.raises(BackendUnavailableError):
        await migrate("postgresql://postgres@127.0.0.1:1/nothing", retry_for=0.2)


async def test_a_value_postgres_cannot_hold_is_a_backend_error(pg_store: PostgresRunStore) -> None:
    with pytest.raises(BackendError, match="NUL"):
        await pg_store.commit(new_run(1, key="a\x00b"))  # a text column cannot hold NUL
    assert await pg_store.load(run_id(1)) is None


async def test_malformed_run_ids_load_as_missing(pg_store: PostgresRunStore) -> None:
    from squidmesh_core.ids import RunId

    assert await pg_store.load(RunId("not-a-uuid'; drop table x; --")) is None


async def inject_serialization_failures(store: PostgresRunStore, count: int) -> None:
    """Make the next ``count`` run updates fail with SQLSTATE 40001 (a sequence survives rollback)."""
    s = f'"{store.schema}"'
    await execute(store, f"CREATE SEQUENCE {s}.injected_failures")
    await execute(
        store,
        f"CREATE FUNCTION {s}.fail_some() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF nextval('{store.schema}.injected_failures') <= {count} THEN"
        " RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'injected'; END IF;"
        " RETURN NEW; END $$",
    )
    await execute(
        store,
        f"CREATE TRIGGER fail_some BEFORE UPDATE ON {s}.squidmesh_runs"
        f" FOR EACH ROW EXECUTE FUNCTION {s}.fail_some()",
    )


async def test_serialization_failures_are_retried(pg_store: PostgresRunStore) -> None:
    state = await committed(pg_store, new_run(1))
    await inject_serialization_failures(pg_store, 2)
    state, _ = await deliver(pg_store, state, T0)
    assert await pg_store.load(state.id) == state


async def test_persistent_serialization_failures_become_a_version_conflict(
    pg_store: PostgresRunStore,
) -> None:
    state = await committed(pg_store, new_run(1))
    await inject_serialization_failures(pg_store, 1000)
    decision = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
    assert await pg_store.commit(decision) == Failure(
        VersionConflict(run_id=state.id, expected=state.version)
    )
    assert await pg_store.load(state.id) == state


async def test_a_closed_store_stays_closed_until_opened_again(pg_dsn: str, pg_schema: str) -> None:
    store = PostgresRunStore(pg_dsn, schema=pg_schema, clock="caller")
    await committed(store, new_run(1))  # a store never closed opens on first use
    await store.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        await store.load(run_id(1))
    assert not store.is_open, "a late call must not open a new pool behind close()"
    await store.open()
    assert await store.load(run_id(1)) is not None
    await store.close()


async def _vacuum_count(store: PostgresRunStore) -> int:
    rows = await execute(
        store,
        "SELECT pg_stat_clear_snapshot(), (SELECT vacuum_count FROM pg_stat_user_tables"
        f" WHERE schemaname = '{store.schema}' AND relname = 'squidmesh_jobs')",
    )
    return int(rows[0][1])


async def test_the_jobs_table_is_vacuumed_after_enough_jobs_ended(
    pg_dsn: str, pg_schema: str
) -> None:
    """Claims walk the jobs' due-time index: dead rows nobody vacuums slow every claim."""
    async with PostgresRunStore(
        pg_dsn, schema=pg_schema, clock="caller", vacuum_jobs_every=1
    ) as store:
        before = await _vacuum_count(store)
        await first_succeeded(store)  # first/1 ended
        vacuum = store._vacuum
        assert vacuum is not None, "ending a job did not start a vacuum"
        await vacuum
        assert await _vacuum_count(store) == before + 1


async def test_no_vacuum_when_turned_off(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresRunStore(
        pg_dsn, schema=pg_schema, clock="caller", vacuum_jobs_every=None
    ) as store:
        await first_succeeded(store)
        assert store._vacuum is None
