"""Transactional steps: the step's writes commit with its outcome, or not at all (SQLite, PG)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from returns.result import Failure, Success

from squidmesh_backends import TimeSkippingRuntime
from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.postgres import step_connection as pg_connection
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_backends.sqlite import step_connection as sqlite_connection
from squidmesh_core import (
    AttemptStatus,
    Recheck,
    Retry,
    RunStatus,
    StepContext,
    WorkflowDefinition,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.commands import Emit
from squidmesh_core.errors import StaleDelivery
from squidmesh_core.ports import RunStore

FAST = RuntimeSettings(
    poll_interval=timedelta(milliseconds=50),
    lease=timedelta(seconds=5),
    heartbeat_every=timedelta(seconds=1),
    shutdown_timeout=timedelta(seconds=2),
)


@dataclass
class Database:
    """The store, and the application's own ``effects`` table in the same database."""

    kind: str
    store: RunStore | str
    path: Path | None = None
    dsn: str | None = None
    schema: str | None = None

    async def insert(self, ctx: StepContext, what: str) -> None:
        if self.kind == "sqlite":
            sqlite_connection(ctx).execute(
                "INSERT INTO effects (run_id, step, attempt, what) VALUES (?, ?, ?, ?)",
                (ctx.run_id, ctx.step, ctx.attempt, what),
            )
        else:
            await pg_connection(ctx).execute(
                f"INSERT INTO {self.schema}.effects (run_id, step, attempt, what)"
                " VALUES (%s, %s, %s, %s)",
                (ctx.run_id, ctx.step, ctx.attempt, what),
            )

    async def effects(self) -> list[tuple[str, int, str]]:
        query = "SELECT step, attempt, what FROM {}effects ORDER BY step, attempt"
        if self.kind == "sqlite":
            assert self.path is not None
            with sqlite3.connect(self.path) as conn:
                return list(conn.execute(query.format("")).fetchall())
        assert self.dsn is not None
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cursor = await conn.execute(query.format(f"{self.schema}."))
            return [(str(a), int(b), str(c)) for a, b, c in await cursor.fetchall()]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE effects (run_id TEXT, step TEXT, attempt INT, what TEXT)")
        yield Database("sqlite", f"sqlite:{path}", path=path)
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    schema: str = request.getfixturevalue("fresh_schema")
    from squidmesh_backends.postgres import migrate

    await migrate(dsn, schema=schema)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {schema}.effects (run_id text, step text, attempt int, what text)"
        )
    yield Database(
        "postgres", PostgresRunStore(dsn, schema=schema, max_size=4), dsn=dsn, schema=schema
    )


async def finish(db: Database, flow: WorkflowDefinition) -> tuple[Runtime, str]:
    runtime = compose(workflows=[flow], store=db.store, settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
    return runtime, done.id


async def test_a_success_commits_the_write_with_the_outcome(db: Database) -> None:
    async def book(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "booked")
        return {"booked": True}

    flow = workflow("tx.book", triggers=[manual()], steps=[step("book", book, transaction=True)])
    runtime = compose(workflows=[flow], store=db.store, settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
    assert done.status is RunStatus.COMPLETED and done.context == {"booked": True}
    assert await db.effects() == [("book", 1, "booked")]


async def test_a_failed_attempt_rolls_its_write_back_and_the_retry_commits_once(
    db: Database,
) -> None:
    async def flaky(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "charged")
        if ctx.attempt < 3:
            raise ConnectionError("the bank hung up")
        return {"charged": ctx.attempt}

    flow = workflow(
        "tx.flaky",
        triggers=[manual()],
        steps=[step("charge", flaky, transaction=True, retry=Retry(max_attempts=3))],
    )
    await finish(db, flow)
    assert await db.effects() == [("charge", 3, "charged")]


async def test_a_recheck_and_a_timeout_write_nothing(db: Database) -> None:
    async def poll(data: dict[str, object], ctx: StepContext) -> object:
        await db.insert(ctx, "polled")
        return Recheck(after=timedelta(milliseconds=10)) if ctx.attempt == 1 else {"ok": 1}

    async def slow(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "slow")
        if ctx.attempt == 1:
            await asyncio.sleep(5)
        return {"slow": ctx.attempt}

    flow = workflow(
        "tx.bounded",
        triggers=[manual()],
        steps=[
            step("poll", poll, transaction=True),
            step(
                "slow",
                slow,
                transaction=True,
                timeout=timedelta(milliseconds=300),
                retry=Retry(max_attempts=2),
            ),
        ],
        transitions=chain("poll", "slow"),
    )
    runtime = compose(workflows=[flow], store=db.store, settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert await db.effects() == [("poll", 2, "polled"), ("slow", 2, "slow")]
    assert done.history is not None
    slow_run = done.history[1]
    assert [a.status for a in slow_run.attempts] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]
    first = slow_run.attempts[0].error
    assert first is not None and first.kind == "timed_out"


async def test_a_step_that_broke_its_transaction_fails_and_its_retry_commits_once(
    db: Database,
) -> None:
    async def careless(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        if ctx.attempt == 1:
            await db.insert(ctx, "lost")
            if db.kind == "sqlite":
                sqlite_connection(ctx).execute("ROLLBACK")  # ends the step's transaction
            else:
                # caught, but PostgreSQL will only roll this transaction back
                with contextlib.suppress(psycopg.Error):
                    await pg_connection(ctx).execute("SELECT * FROM no_such_table")
            return {"careless": True}
        await db.insert(ctx, "kept")
        return {"careless": False}

    flow = workflow(
        "tx.careless",
        triggers=[manual()],
        steps=[step("careless", careless, transaction=True, retry=Retry(max_attempts=2))],
    )
    runtime = compose(workflows=[flow], store=db.store, settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
    assert done.status is RunStatus.COMPLETED and done.context == {"careless": False}
    assert done.history is not None
    first = done.history[0].attempts[0].error
    assert first is not None and first.kind == "transaction_aborted"
    assert await db.effects() == [("careless", 2, "kept")]


@pytest.mark.postgres
async def test_a_lease_taken_over_during_the_step_rolls_everything_back(
    pg_dsn: str, fresh_schema: str
) -> None:
    from squidmesh_backends.postgres import migrate

    await migrate(pg_dsn, schema=fresh_schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {fresh_schema}.effects (run_id text, step text, attempt int, what text)"
        )
    db = Database("postgres", "", dsn=pg_dsn, schema=fresh_schema)
    stolen = asyncio.Event()

    async def book(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "booked")
        if ctx.attempt == 1:  # another worker takes the job over while this one writes
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:
                await other.execute(
                    f"UPDATE {fresh_schema}.squidmesh_jobs SET lease_token = 'taken'"
                    " WHERE run_id = %s",
                    (ctx.run_id,),
                )
            stolen.set()
        return {"booked": ctx.attempt}

    flow = workflow("tx.stolen", triggers=[manual()], steps=[step("book", book, transaction=True)])
    store = PostgresRunStore(pg_dsn, schema=fresh_schema, max_size=4)
    runtime = compose(workflows=[flow], store=store, settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        await asyncio.wait_for(stolen.wait(), 10)
        await asyncio.sleep(0.5)
        middle = (await runtime.inspect_run(run.id)).unwrap()
    assert middle.status is RunStatus.RUNNING  # the outcome was refused
    assert await db.effects() == []  # and the step's write went with it


async def test_the_memory_store_refuses_a_transactional_step_once() -> None:
    calls: list[int] = []

    async def book(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        calls.append(ctx.attempt)
        return {}

    flow = workflow(
        "tx.memory",
        triggers=[manual()],
        steps=[step("book", book, transaction=True, retry=Retry(max_attempts=3))],
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED and calls == []
    assert done.last_error is not None and done.last_error.kind == "invalid_step"
    assert "SQLite or PostgreSQL" in done.last_error.message


async def test_an_in_memory_sqlite_database_refuses_too() -> None:
    async def book(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {}

    flow = workflow("tx.inmem", triggers=[manual()], steps=[step("book", book, transaction=True)])
    runtime = compose(workflows=[flow], store="sqlite::memory:", settings=FAST)
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        done = (await runtime.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
    assert done.last_error is not None and "SQLite file" in done.last_error.message


def test_the_connection_accessors_say_what_is_wrong() -> None:
    from datetime import UTC, datetime

    from squidmesh_core import RunId

    ctx = StepContext(
        run_id=RunId("r"),
        workflow="w",
        step="book",
        attempt=1,
        idempotency_key="k",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ConfigurationError, match="transaction=True"):
        sqlite_connection(ctx)
    with pytest.raises(ConfigurationError, match="PostgreSQL transaction"):
        pg_connection(ctx)


async def test_regression_a_transactional_success_publishes_its_events(db: Database) -> None:
    """Review of issue 16: the committed outcome's events never reached the sinks."""
    seen: list[str] = []

    class Sink:
        def publish(self, event: Emit) -> None:
            seen.append(f"{event.topic.value} {event.step}")

    async def book(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "booked")
        return {}

    flow = workflow("tx.events", triggers=[manual()], steps=[step("book", book, transaction=True)])
    runtime = compose(workflows=[flow], store=db.store, settings=FAST, sinks=[Sink()])
    async with runtime:
        run = (await runtime.start_run(flow, {})).unwrap()
        (await runtime.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
    assert "step.completed book" in seen and "run.transition None" in seen


def stopped_at_first_attempt(name: str, step_name: str, handler: object) -> WorkflowDefinition:
    """One transactional step with a 300 ms timeout and a second attempt."""
    return workflow(
        name,
        triggers=[manual()],
        steps=[
            step(
                step_name,
                handler,  # type: ignore[arg-type]
                transaction=True,
                timeout=timedelta(milliseconds=300),
                retry=Retry(max_attempts=2),
            )
        ],
    )


async def test_regression_a_stopped_step_writes_nothing_afterwards(db: Database) -> None:
    """Review of issue 16: a timed-out step's late write committed (PG) or crashed (SQLite)."""

    async def stubborn(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        await db.insert(ctx, "body")
        try:
            if ctx.attempt == 1:
                await asyncio.sleep(2)
        finally:
            if ctx.attempt == 1:  # a cleanup write after the cancel
                with contextlib.suppress(Exception):
                    await db.insert(ctx, "finally")
        return {"ok": ctx.attempt}

    flow = stopped_at_first_attempt("tx.stopped", "s", stubborn)
    await finish(db, flow)
    await asyncio.sleep(0.5)
    assert await db.effects() == [("s", 2, "body")]


async def test_regression_a_stopped_plain_function_cannot_write_or_crash_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE effects (run_id TEXT, step TEXT, attempt INT, what TEXT)")
    db = Database("sqlite", f"sqlite:{path}", path=path)
    refused: list[str] = []

    def writes_on(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        conn = sqlite_connection(ctx)
        end = time.monotonic() + (1.0 if ctx.attempt == 1 else 0)
        while True:  # a thread keeps writing past its timeout
            try:
                conn.execute(
                    "INSERT INTO effects VALUES (?, ?, ?, 'w')", (ctx.run_id, ctx.step, ctx.attempt)
                )
            except sqlite3.Error as exc:
                refused.append(type(exc).__name__)
                break
            if time.monotonic() >= end:
                break
        return {"ok": ctx.attempt}

    flow = stopped_at_first_attempt("tx.thread", "w", writes_on)
    await finish(db, flow)
    await asyncio.sleep(1.2)  # the stopped thread has run out
    assert await db.effects() == [("w", 2, "w")]
    assert refused  # its late writes were refused


async def test_no_transaction_fails_the_attempt_as_retryable_before_the_step_runs() -> None:
    from squidmesh_backends.errors import BackendUnavailableError
    from squidmesh_backends.runtime._transactional import run_in_transaction
    from squidmesh_core import RunId
    from squidmesh_core.ports import Fence
    from squidmesh_core.protocol import JobId, LeaseToken

    class Busy:
        @contextlib.asynccontextmanager
        async def step_transaction(self) -> AsyncIterator[object]:
            if self:  # always: begin fails, as on a database locked past its busy timeout
                raise BackendUnavailableError("SQLite store unavailable: database is locked")
            yield self

    ran: list[StepContext] = []

    async def run(ctx: StepContext) -> Success[dict[str, object]]:
        ran.append(ctx)
        return Success({})

    ctx = StepContext(
        run_id=RunId("r"),
        workflow="w",
        step="book",
        attempt=1,
        idempotency_key="k",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    held = await run_in_transaction(
        Busy(),  # type: ignore[arg-type]
        ctx,
        run,
        lambda state, output: Failure(StaleDelivery(job_id=JobId("j"), reason="unused")),
        fence=Fence(job_id=JobId("j"), lease_token=LeaseToken("t")),
    )
    assert ran == []
    failure = held.result.failure()
    assert failure.kind == "transaction_unavailable" and failure.retryable
    assert "database is locked" in failure.message
