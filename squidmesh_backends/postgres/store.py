"""``PostgresRunStore``: production persistence on PostgreSQL (psycopg 3, async pool).

Runs, step runs, attempts and jobs live in tables of their own (see
``migrations/0001_initial.sql``). A decision is applied in one transaction sent
as one pipeline: the run row guarded by its version, the lease fence, the step
and attempt rows that differ from the decision's ``base``, the job commands and
a ``NOTIFY`` when jobs were scheduled. Reading a run is one statement.

Claims lease due jobs with ``FOR UPDATE SKIP LOCKED``. With ``clock="database"``
(the default) due times and lease expiries are compared against the server's
``now()``, so workers on machines with skewed clocks agree on who holds a job;
``clock="caller"`` uses the times the runtime passes in (tests with a fake or
time-skipping clock).

Every database call goes through :func:`squidmesh_backends.postgres.edge.guarded`,
the single place psycopg errors are retried or translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool
from returns.result import Failure, Result, Success

from squidmesh_backends._aio import LoopLock
from squidmesh_backends.errors import BackendError, BackendUnavailableError, ConfigurationError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.postgres.edge import guarded, is_contention, is_disconnect, translate
from squidmesh_backends.postgres.migrations import check_schema, quoted_schema
from squidmesh_core.codec import decode_run, encode_failure
from squidmesh_core.commands import CancelJob, Decision, FinishJob, RescheduleJob, ScheduleJob
from squidmesh_core.errors import CommitError, DuplicateRun, StaleLease, VersionConflict
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId, parse_run_id
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.ports import Claim, Fence
from squidmesh_core.state import (
    SCHEMA_VERSION,
    Attempt,
    Job,
    RunState,
    RunStatus,
    StepFailure,
    StepRunState,
)

LOG = get_logger("squidmesh.postgres")
T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]
GUARD_STATE = "SQM01"


def _quiet_aborted_pipelines(record: logging.LogRecord) -> bool:
    """Drop psycopg's note that a pipeline whose block already raised could not sync.

    A refused commit (version conflict, stale lease) aborts the pipeline on
    purpose; the exception raised in the block is the real outcome and is
    handled here, so the second, derived message is noise.
    """
    return not (
        record.msg == "error ignored terminating %r: %s"
        and isinstance(record.args, tuple)
        and len(record.args) == 2
        and isinstance(record.args[1], psycopg.errors.PipelineAborted)
    )


logging.getLogger("psycopg").addFilter(_quiet_aborted_pipelines)


@dataclass(slots=True)
class StoreStats:
    """What the store sent to the server: for tests and benchmarks."""

    transactions: int = 0
    """Write transactions committed by ``commit`` (refused ones are not counted)."""
    statements: int = 0
    """Statements executed by successful commits (an ``executemany`` row counts as one)."""
    last_commit: list[str] = field(default_factory=list)
    """A one-line summary of each statement of the latest successful commit."""


def notify_channel(schema: str) -> str:
    """The NOTIFY channel of ``schema`` (at most 63 bytes, as PostgreSQL requires)."""
    if schema == "public":
        return "squidmesh_jobs"
    name = f"squidmesh_jobs_{schema}"
    if len(name) <= 63:
        return name
    return f"squidmesh_jobs_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"


class _Refused(Exception):
    def __init__(self, error: CommitError) -> None:
        super().__init__(error)
        self.error = error


class PostgresRunStore:
    """A RunStore on PostgreSQL. It passes ``RunStoreContract``.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the PostgreSQL schema holding SquidMesh's tables (migrate it first
            with ``squidmesh migrate --dsn ... --schema ...``).
        min_size, max_size: connection pool bounds.
        statement_timeout: set on every pooled connection.
        idle_in_transaction_timeout: set on every pooled connection.
        clock: ``"database"`` compares claims and leases with the server's
            ``now()``; ``"caller"`` uses the times the runtime passes.
        retry_for: how long an operation keeps retrying after losing its
            connection before raising ``BackendUnavailableError``.
        contention_retries: retries of a commit after a deadlock or serialization
            failure before it is reported as a version conflict.
        vacuum_jobs_every: after this many jobs have ended (their rows deleted)
            through this store, it runs ``VACUUM (SKIP_LOCKED)`` on the jobs
            table in the background. That table is a queue: every step inserts
            and deletes a row, and claims walk its due-time index, so dead rows
            that nobody vacuums make every claim slower (seen when autovacuum is
            off or behind). A few milliseconds each time; ``None`` turns it off.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout: timedelta = timedelta(seconds=30),
        idle_in_transaction_timeout: timedelta = timedelta(seconds=60),
        clock: Literal["database", "caller"] = "database",
        retry_for: timedelta = timedelta(seconds=15),
        contention_retries: int = 3,
        vacuum_jobs_every: int | None = 5_000,
    ) -> None:
        if clock not in ("database", "caller"):
            raise ConfigurationError(f"clock must be 'database' or 'caller', not {clock!r}")
        if not 1 <= min_size <= max_size:
            raise ConfigurationError("pool sizes must satisfy 1 <= min_size <= max_size")
        self.dsn = dsn
        self.schema = schema
        self.clock = clock
        self.min_size = min_size
        self.max_size = max_size
        self.statement_timeout = statement_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.retry_for = retry_for.total_seconds()
        self.contention_retries = contention_retries
        self.stats = StoreStats()
        self.channel = notify_channel(schema)
        self._sql = _Statements(quoted_schema(schema), clock)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening = LoopLock()
        self._closed = False
        """Set by ``close``: a closed store does not open itself again behind a late call."""
        self.vacuum_jobs_every = vacuum_jobs_every
        self._ended_jobs = 0
        self._vacuum: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the pool and check the schema version.

        Raises:
            MigrationRequiredError: the schema is missing, behind or newer.
            BackendUnavailableError: the server cannot be reached.
        """
        async with self._opening.get():
            self._closed = False
            if self._pool is not None:
                return
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                open=False,
                kwargs={"autocommit": True},
                configure=self._configure,
                timeout=max(self.retry_for, 1.0),
                reconnect_timeout=max(self.retry_for * 4, 60.0),
                name=f"squidmesh-{self.schema}",
            )
            try:
                await guarded("opening the pool", pool.open, retry_for=self.retry_for)

                async def check() -> None:
                    async with pool.connection() as conn:
                        await check_schema(conn, self.schema)

                await guarded("checking the schema", check, retry_for=self.retry_for)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    @property
    def is_open(self) -> bool:
        """Whether the connection pool is open."""
        return self._pool is not None

    async def close(self) -> None:
        """Close the pool. Calls still in flight, or made later, fail until ``open`` runs again."""
        self._closed = True
        vacuum, self._vacuum = self._vacuum, None
        if vacuum is not None:
            vacuum.cancel()
            await asyncio.gather(vacuum, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _configure(self, conn: Conn) -> None:
        ms_statement = int(self.statement_timeout.total_seconds() * 1000)
        ms_idle = int(self.idle_in_transaction_timeout.total_seconds() * 1000)
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false),"
            " set_config('TimeZone', 'UTC', false)",
            (str(ms_statement), str(ms_idle)),
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            if self._closed:
                raise BackendUnavailableError("the PostgreSQL store is closed; open it again")
            await self.open()
        pool = self._pool
        if pool is None:
            raise BackendError("the PostgreSQL store was closed while in use")
        async with pool.connection() as conn:
            yield conn

    async def _do(self, what: str, work: Callable[[Conn], Awaitable[T]]) -> T:
        async def attempt() -> T:
            async with self._connection() as conn:
                return await work(conn)

        return await guarded(what, attempt, retry_for=self.retry_for)

    # ---------------------------------------------------------------- reads

    async def load(self, run_id: RunId) -> RunState | None:
        async def work(conn: Conn) -> RunState | None:
            cursor = await conn.execute(self._sql.load, (run_id,))
            row = await cursor.fetchone()
            return None if row is None else _decode(row)

        if isinstance(parse_run_id(run_id), Failure):
            return None
        return await self._do("loading a run", work)

    async def find_by_idempotency_key(self, workflow: str, key: IdempotencyKey) -> RunState | None:
        async def work(conn: Conn) -> RunState | None:
            cursor = await conn.execute(self._sql.by_key, (workflow, key))
            row = await cursor.fetchone()
            return None if row is None else _decode(row)

        return await self._do("finding a run by idempotency key", work)

    async def latest_idempotency_key(self, workflow: str, prefix: str) -> IdempotencyKey | None:
        async def work(conn: Conn) -> IdempotencyKey | None:
            cursor = await conn.execute(
                self._sql.latest_key, {"workflow": workflow, "prefix": prefix}
            )
            row = await cursor.fetchone()
            return None if row is None else IdempotencyKey(str(row[0]))

        return await self._do("reading the latest idempotency key", work)

    async def list_runs(
        self, *, workflow: str | None, status: RunStatus | None, limit: int
    ) -> Sequence[RunState]:
        async def work(conn: Conn) -> list[RunState]:
            cursor = await conn.execute(
                self._sql.listing,
                {
                    "workflow": workflow,
                    "status": None if status is None else status.value,
                    "limit": max(limit, 0),
                },
            )
            return [_decode(row) for row in await cursor.fetchall()]

        return await self._do("listing runs", work)

    # ---------------------------------------------------------------- commit

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        commit_id = secrets.token_hex(12)
        plan = self._plan(decision, fence, commit_id)
        tries = 0

        async def work(conn: Conn) -> Result[None, CommitError]:
            nonlocal tries
            tries += 1
            outcome = await self._apply(conn, plan, decision, fence)
            if isinstance(outcome, Failure) and tries > 1:
                # An earlier try lost its connection: it may have committed after all.
                cursor = await conn.execute(self._sql.last_commit, (decision.state.id,))
                row = await cursor.fetchone()
                if row is not None and (row[0], row[1]) == (decision.state.version, commit_id):
                    LOG.info("commit %s of run %s had succeeded", commit_id, decision.state.id)
                    outcome = Success(None)
            if isinstance(outcome, Success):
                self.stats.transactions += 1
                self.stats.statements += 1 if plan.single else plan.statements
                self.stats.last_commit = plan.summary()
            return outcome

        committed = await self._do("committing a decision", work)
        if isinstance(committed, Success):
            self._count_ended_jobs(decision)
        return committed

    def _count_ended_jobs(self, decision: Decision) -> None:
        if self.vacuum_jobs_every is None:
            return
        self._ended_jobs += sum(isinstance(c, CancelJob | FinishJob) for c in decision.commands)
        if self._ended_jobs < self.vacuum_jobs_every or self._vacuum is not None:
            return
        self._ended_jobs = 0
        self._vacuum = asyncio.get_running_loop().create_task(self.vacuum_jobs())
        self._vacuum.add_done_callback(self._vacuum_done)

    def _vacuum_done(self, task: asyncio.Task[None]) -> None:
        if self._vacuum is task:
            self._vacuum = None
        if not task.cancelled() and task.exception() is not None:
            LOG.warning("vacuuming the jobs table failed: %s", task.exception())

    async def vacuum_jobs(self) -> None:
        """``VACUUM (SKIP_LOCKED)`` the jobs table: drop the dead rows of ended jobs.

        Skipped by the server (with a warning in its log) when another vacuum
        holds the table or the role does not own it.
        """

        async def work(conn: Conn) -> None:
            await conn.execute(self._sql.vacuum_jobs)

        await self._do("vacuuming the jobs table", work)

    async def _apply(
        self, conn: Conn, plan: _Plan, decision: Decision, fence: Fence | None
    ) -> Result[None, CommitError]:
        """Send ``plan`` as one transaction; refusals come back as ``Failure``.

        Usually that is a single statement (every write a data-modifying CTE, the
        guards and the NOTIFY in its final SELECT), run as its own transaction on
        the autocommit connection: one round trip. A plan that writes the same
        job row twice cannot be one statement (a statement sees none of its own
        writes), so it goes as a pipeline of statements in one transaction.
        """
        for _ in range(self.contention_retries + 1):
            try:
                if plan.single:
                    sql, params = plan.statement(self._sql.s)
                    await conn.execute(sql, params)
                else:
                    async with conn.transaction(), conn.pipeline():
                        for sql, rows in plan.pipeline(self._sql.s):
                            if len(rows) == 1:
                                await conn.execute(sql, rows[0])
                            else:
                                async with conn.cursor() as cursor:
                                    await cursor.executemany(sql, rows)
            except pg_errors.UniqueViolation as exc:
                if decision.expected_version != 0:
                    raise
                return Failure(await self._duplicate(conn, decision.state, exc))
            except psycopg.Error as exc:
                if exc.sqlstate == GUARD_STATE:
                    return Failure(_guard_error(exc, decision, fence))
                if is_contention(exc):
                    LOG.info("commit of run %s hit %s; retrying", decision.state.id, exc)
                    continue
                raise
            return Success(None)
        return Failure(
            VersionConflict(run_id=decision.state.id, expected=decision.expected_version)
        )

    def _plan(self, decision: Decision, fence: Fence | None, commit_id: str) -> _Plan:
        """The writes that apply ``decision``, in lock order: run, fence, rows, jobs."""
        sql = self._sql
        state, base = decision.state, decision.base
        if base is not None and (base.id != state.id or base.version != state.version - 1):
            base = None
        plan = _Plan()
        if decision.expected_version == 0:
            plan.add(sql.insert_run, [(*_run_row(state), commit_id)], values=sql.run_values)
        else:
            changes: dict[str, object] = {
                "last_commit": commit_id,
                "status": state.status.value,
                "version": state.version,
                "updated_at": state.updated_at,
            }
            if base is None or base.context != state.context:
                changes["context"] = _json(state.context)
            if base is None or base.payload != state.payload:
                changes["payload"] = _json(state.payload)
            if base is None or base.last_error != state.last_error:
                changes["last_error"] = _json(state.last_error)
            plan.add(
                sql.update_run(tuple(changes)),
                [(*changes.values(), state.id, decision.expected_version)],
                guard="version_conflict",
            )
        finished = {c.job_id for c in decision.commands if isinstance(c, CancelJob | FinishJob)}
        fenced_delete = fence is not None and fence.renew_until is None and fence.job_id in finished
        rows = _changed_rows(state, base)
        scheduled = {c.job.id for c in decision.commands if isinstance(c, ScheduleJob)}
        starts = [j for j in _changed_jobs(state, base) if j.id not in scheduled]
        if fence is not None:
            if fenced_delete:  # the fence and the end of its job in one write, no row lock
                plan.add(
                    sql.fenced_delete,
                    [(fence.job_id, fence.lease_token)],
                    guard="stale_lease",
                    jobs=(fence.job_id,),
                )
            elif fence.renew_until is None:
                # A row locked and written by one statement would be skipped by the
                # lock; listing the job sends such a plan as a pipeline instead.
                plan.add(
                    sql.fence,
                    [(fence.job_id, fence.lease_token)],
                    guard="stale_lease",
                    jobs=(fence.job_id,),
                )
            else:
                until = self._lease_end(fence.renew_until)
                started = next((j for j in starts if j.id == fence.job_id), None)
                if started is None:
                    plan.add(
                        sql.fence_renewing,
                        [(until, fence.job_id, fence.lease_token)],
                        guard="stale_lease",
                        jobs=(fence.job_id,),
                    )
                else:  # the delivery starts the attempt of the job it renews: one write
                    starts.remove(started)
                    plan.add(
                        sql.fence_renewing_start,
                        [
                            (
                                until,
                                started.status.value,
                                started.lease_token,
                                fence.job_id,
                                fence.lease_token,
                            )
                        ],
                        guard="stale_lease",
                        jobs=(fence.job_id,),
                    )
        if base is None:  # which rows exist is unknown: insert or update each
            if rows.new_steps or rows.changed_steps:
                plan.add(
                    sql.upsert_step, rows.new_steps + rows.changed_steps, values=sql.step_values
                )
            if rows.new_attempts or rows.changed_attempts:
                plan.add(
                    sql.upsert_attempt,
                    rows.new_attempts + rows.changed_attempts,
                    values=sql.attempt_values,
                )
        else:  # plain inserts and updates: no speculative insertion, no row locks
            for r in rows.changed_steps:
                plan.add(sql.update_step, [(*r[3:], *r[:2])])
            if rows.new_steps:
                plan.add(sql.insert_step, rows.new_steps, values=sql.step_values)
            for r in rows.changed_attempts:
                plan.add(sql.update_attempt, [(*r[3:], *r[:3])])
            if rows.new_attempts:
                plan.add(sql.insert_attempt, rows.new_attempts, values=sql.attempt_values)
        schedules: list[Sequence[object]] = []
        wake = False
        lease = None if fence is None else fence.lease_next
        for command in decision.commands:
            match command:
                case ScheduleJob(job=job):
                    if lease is not None and lease.job_id == job.id:
                        end = self._lease_end(lease.until)
                        schedules.append((*_job_row(job), lease.lease_token, lease.owner, end))
                    else:
                        schedules.append((*_job_row(job), None, None, None))
                        wake = True
                case RescheduleJob(job_id=job_id, due_at=due_at):
                    plan.add(sql.reschedule, [(due_at, job_id)], jobs=(job_id,))
                    wake = True
                case CancelJob(job_id=job_id) | FinishJob(job_id=job_id):
                    if not (fenced_delete and fence is not None and job_id == fence.job_id):
                        plan.add(sql.delete_job, [(job_id,)], jobs=(job_id,))
                case _:
                    pass
        if schedules:
            known = None if base is None else {job.id for job in base.jobs}
            # One insert for all of them, so ``seq`` follows the order they were scheduled.
            fresh = known is not None and not any(r[0] in known for r in schedules)
            plan.add(
                sql.insert_new_job if fresh else sql.insert_job,
                schedules,
                values=sql.job_values,
                jobs=tuple(str(r[0]) for r in schedules),
            )
        for job in starts:
            plan.add(sql.start_job, [(job.status.value, job.lease_token, job.id)], jobs=(job.id,))
        if wake:
            plan.notify = self.channel
        return plan

    async def _duplicate(
        self, conn: Conn, state: RunState, exc: pg_errors.UniqueViolation
    ) -> DuplicateRun:
        if exc.diag.constraint_name == "squidmesh_runs_idempotency":
            cursor = await conn.execute(
                self._sql.key_owner, (state.workflow, state.idempotency_key)
            )
            row = await cursor.fetchone()
            if row is not None:
                return DuplicateRun(run_id=state.id, existing_run_id=str(row[0]))
        if exc.diag.constraint_name in ("squidmesh_runs_pkey", "squidmesh_runs_idempotency"):
            return DuplicateRun(run_id=state.id, existing_run_id=state.id)
        raise exc

    # ---------------------------------------------------------------- leases

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_for: timedelta,
        owner: str,
        mint: Callable[[], LeaseToken],
    ) -> Sequence[Claim]:
        if limit <= 0:
            return []

        async def work(conn: Conn) -> list[Claim]:
            tokens = [mint() for _ in range(limit)]  # fresh ones for every try
            cursor = await conn.execute(
                self._sql.claim,
                {"now": now, "limit": limit, "tokens": tokens, "owner": owner, "lease": lease_for},
            )
            rows = await cursor.fetchall()
            return [
                Claim(
                    job_id=JobId(str(job_id)),
                    run_id=RunId(str(run_id)),
                    lease_token=LeaseToken(str(token)),
                    lease_expires_at=_as_datetime(expires),
                )
                for job_id, run_id, token, expires, _ in sorted(rows, key=lambda r: r[4])
            ]

        return await self._do("claiming due jobs", work)

    async def claim_job(
        self,
        job_id: JobId,
        *,
        now: datetime,
        lease_for: timedelta,
        owner: str,
        lease_token: LeaseToken,
    ) -> Claim | None:
        async def work(conn: Conn) -> Claim | None:
            cursor = await conn.execute(
                self._sql.claim_one,
                {
                    "now": now,
                    "id": job_id,
                    "token": lease_token,
                    "owner": owner,
                    "lease": lease_for,
                },
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            return Claim(
                job_id=job_id,
                run_id=RunId(str(row[0])),
                lease_token=lease_token,
                lease_expires_at=_as_datetime(row[1]),
            )

        return await self._do("claiming a job", work)

    async def heartbeat(self, job_id: JobId, lease_token: LeaseToken, *, until: datetime) -> bool:
        async def work(conn: Conn) -> bool:
            cursor = await conn.execute(
                self._sql.fence_renewing, (self._lease_end(until), job_id, lease_token)
            )
            return len(await cursor.fetchall()) == 1

        return await self._do("extending a lease", work)

    def _lease_end(self, until: datetime) -> object:
        """A lease's end as the statements take it (``_Statements.lease_end``).

        With the database clock, the time left from now, which the server adds
        to its own ``now()``; with the caller's clock, the time itself.
        """
        return until - datetime.now(UTC) if self.clock == "database" else until

    async def release(self, job_id: JobId, lease_token: LeaseToken) -> bool:
        async def work(conn: Conn) -> bool:
            cursor = await conn.execute(self._sql.release, (job_id, lease_token, self.channel))
            return len(await cursor.fetchall()) == 1

        return await self._do("releasing a lease", work)

    async def next_due_at(self) -> datetime | None:
        async def work(conn: Conn) -> datetime | None:
            cursor = await conn.execute(self._sql.next_due)
            row = await cursor.fetchone()
            if row is None or row[0] is None:
                return None
            if self.clock == "database":
                delta = row[0]
                assert isinstance(delta, timedelta)
                return datetime.now(UTC) + delta
            return _as_datetime(row[0])

        return await self._do("reading the next due time", work)

    # ---------------------------------------------------------------- wake-ups

    async def watch(self, wake: Callable[[], None]) -> None:
        """LISTEN for jobs becoming due and call ``wake`` for each notice, until cancelled.

        Reconnects with backoff after losing the connection, and calls ``wake``
        after every (re)connect, since notices sent meanwhile were lost.
        """
        pause = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    pause = 0.1
                    wake()
                    async for _ in conn.notifies():
                        wake()
            except psycopg.Error as exc:
                LOG.warning(
                    "LISTEN %s failed (%s); reconnecting in %.1fs", self.channel, exc, pause
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    # ---------------------------------------------------------------- look-behind

    async def job_rows(self) -> dict[JobId, tuple[datetime, LeaseToken | None]]:
        """Look behind the port: every job row as (due_at, lease token). For tests."""

        async def work(conn: Conn) -> dict[JobId, tuple[datetime, LeaseToken | None]]:
            cursor = await conn.execute(self._sql.job_rows)
            return {
                JobId(str(r[0])): (_as_datetime(r[1]), None if r[2] is None else LeaseToken(r[2]))
                for r in await cursor.fetchall()
            }

        return await self._do("reading job rows", work)

    async def execute(
        self, sql: str, params: Sequence[object] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection and return its rows (tests, operations).

        Without ``params`` the text is sent as it is (``%`` needs no escaping).
        """

        async def work(conn: Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql.encode(), params)
            return list(await cursor.fetchall()) if cursor.description else []

        return await self._do("running a statement", work)


# ---------------------------------------------------------------- SQL

Params = Sequence[object] | dict[str, object] | list[Sequence[object]]

_STEP_JSON = """json_build_object(
    'step', s.step, 'status', s.status, 'scheduled_at', s.scheduled_at,
    'updated_at', s.updated_at, 'input', s.input, 'output', s.output, 'error', s.error,
    'attempts', COALESCE((
        SELECT json_agg(json_build_object(
            'number', a.number, 'status', a.status, 'job_id', a.job_id,
            'lease_token', a.lease_token, 'started_at', a.started_at,
            'finished_at', a.finished_at, 'error', a.error) ORDER BY a.number)
        FROM {s}.squidmesh_attempts a WHERE a.run_id = s.run_id AND a.step = s.step
    ), '[]'::json))"""

_JOB_JSON = """json_build_object(
    'id', j.id, 'run_id', j.run_id, 'step', j.step, 'attempt', j.attempt,
    'due_at', j.due_at, 'status', j.state, 'lease_token', j.started_token)"""


class _Statements:
    """Every statement the store sends, with the schema name filled in once."""

    def __init__(self, s: str, clock: str) -> None:
        self.s = s
        now = "now()" if clock == "database" else "%(now)s"
        run_select = f"""
            SELECT r.id, r.workflow, r.trigger, r.status, r.version, r.payload, r.context,
                   r.created_at, r.updated_at, r.last_error, r.replayed_from, r.idempotency_key,
                   COALESCE((SELECT json_agg({_STEP_JSON} ORDER BY s.position)
                             FROM {s}.squidmesh_step_runs s WHERE s.run_id = r.id), '[]'::json),
                   COALESCE((SELECT json_agg({_JOB_JSON} ORDER BY j.seq)
                             FROM {s}.squidmesh_jobs j WHERE j.run_id = r.id), '[]'::json)
            FROM {s}.squidmesh_runs r"""
        run_select = run_select.replace("{s}", s)
        self.load = f"{run_select} WHERE r.id = %s"
        self.by_key = f"{run_select} WHERE r.workflow = %s AND r.idempotency_key = %s"
        self.listing = (
            f"{run_select} WHERE (%(workflow)s::text IS NULL OR r.workflow = %(workflow)s)"
            " AND (%(status)s::text IS NULL OR r.status = %(status)s)"
            " ORDER BY r.created_at DESC, r.id DESC LIMIT %(limit)s"
        )
        self.latest_key = (
            f"SELECT idempotency_key FROM {s}.squidmesh_runs WHERE workflow = %(workflow)s"
            ' AND idempotency_key IS NOT NULL AND (idempotency_key COLLATE "C") >= %(prefix)s'
            ' AND (idempotency_key COLLATE "C") < %(prefix)s || chr(1114111)'
            ' ORDER BY (idempotency_key COLLATE "C") DESC LIMIT 1'
        )
        self.key_owner = (
            f"SELECT id FROM {s}.squidmesh_runs WHERE workflow = %s AND idempotency_key = %s"
        )
        # The writes of a commit. Each is one statement with positional
        # parameters that also works as a data-modifying CTE (see ``_Plan``);
        # ``{values}`` stands for one or more row groups.
        self.run_values = "(" + ", ".join(["%s"] * 13) + ")"
        self.insert_run = (
            f"INSERT INTO {s}.squidmesh_runs (id, workflow, trigger, status, version, payload,"
            " context, created_at, updated_at, last_error, replayed_from, idempotency_key,"
            " last_commit) VALUES {values}"
        )
        self.last_commit = f"SELECT version, last_commit FROM {s}.squidmesh_runs WHERE id = %s"
        self.fence = (
            f"SELECT 1 FROM {s}.squidmesh_jobs WHERE id = %s AND lease_token = %s FOR UPDATE"
        )
        # Where a lease ends (``PostgresRunStore._lease_end`` gives its parameter).
        lease_end = "now() + %s::interval" if clock == "database" else "%s::timestamptz"
        renew = f"UPDATE {s}.squidmesh_jobs SET lease_expires_at = {lease_end}"
        held = " WHERE id = %s AND lease_token = %s RETURNING 1"
        self.fence_renewing = renew + held  # also the heartbeat
        self.fence_renewing_start = renew + ", state = %s, started_token = %s" + held
        self.fenced_delete = (
            f"DELETE FROM {s}.squidmesh_jobs WHERE id = %s AND lease_token = %s RETURNING 1"
        )
        self.step_values = "(" + ", ".join(["%s"] * 9) + ")"
        self.insert_step = (
            f"INSERT INTO {s}.squidmesh_step_runs (run_id, step, position, status, scheduled_at,"
            " updated_at, input, output, error) VALUES {values}"
        )
        self.update_step = (
            f"UPDATE {s}.squidmesh_step_runs SET status = %s, scheduled_at = %s,"
            " updated_at = %s, input = %s, output = %s, error = %s"
            " WHERE run_id = %s AND step = %s"
        )
        self.upsert_step = (
            self.insert_step + " ON CONFLICT (run_id, step) DO UPDATE SET status = excluded.status,"
            " scheduled_at = excluded.scheduled_at, updated_at = excluded.updated_at,"
            " input = excluded.input, output = excluded.output, error = excluded.error"
        )
        self.attempt_values = "(" + ", ".join(["%s"] * 9) + ")"
        self.insert_attempt = (
            f"INSERT INTO {s}.squidmesh_attempts (run_id, step, number, status, job_id,"
            " lease_token, started_at, finished_at, error) VALUES {values}"
        )
        self.update_attempt = (
            f"UPDATE {s}.squidmesh_attempts SET status = %s, job_id = %s, lease_token = %s,"
            " started_at = %s, finished_at = %s, error = %s"
            " WHERE run_id = %s AND step = %s AND number = %s"
        )
        self.upsert_attempt = (
            self.insert_attempt + " ON CONFLICT (run_id, step, number) DO UPDATE SET"
            " status = excluded.status, job_id = excluded.job_id,"
            " lease_token = excluded.lease_token, started_at = excluded.started_at,"
            " finished_at = excluded.finished_at, error = excluded.error"
        )
        # The lease columns are NULL but for a job the same worker runs next at
        # once (``Fence.lease_next``).
        self.job_values = "(" + ", ".join(["%s"] * 9) + f", {lease_end})"
        self.insert_new_job = (
            f"INSERT INTO {s}.squidmesh_jobs (id, run_id, step, attempt, due_at, state,"
            " started_token, lease_token, lease_owner, lease_expires_at) VALUES {values}"
        )
        self.insert_job = (
            self.insert_new_job + " ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at,"
            " state = excluded.state, started_token = excluded.started_token,"
            " lease_token = excluded.lease_token, lease_owner = excluded.lease_owner,"
            " lease_expires_at = excluded.lease_expires_at"
        )
        self.vacuum_jobs = f"VACUUM (SKIP_LOCKED) {s}.squidmesh_jobs"
        self.reschedule = f"UPDATE {s}.squidmesh_jobs SET due_at = %s WHERE id = %s"
        self.delete_job = f"DELETE FROM {s}.squidmesh_jobs WHERE id = %s"
        self.start_job = (
            f"UPDATE {s}.squidmesh_jobs SET state = %s, started_token = %s WHERE id = %s"
        )
        self.claim = f"""
            WITH due AS (
                SELECT id, row_number() OVER (ORDER BY due_at, id) AS n
                FROM (SELECT id, due_at FROM {s}.squidmesh_jobs
                      WHERE due_at <= {now}
                        AND (lease_expires_at IS NULL OR lease_expires_at <= {now})
                      ORDER BY due_at, id LIMIT %(limit)s
                      FOR UPDATE SKIP LOCKED) picked
            )
            UPDATE {s}.squidmesh_jobs j
               SET lease_token = (%(tokens)s::text[])[due.n], lease_owner = %(owner)s,
                   lease_expires_at = {now} + %(lease)s::interval
              FROM due WHERE j.id = due.id
            RETURNING j.id, j.run_id, j.lease_token, j.lease_expires_at, due.n"""
        self.claim_one = f"""
            UPDATE {s}.squidmesh_jobs
               SET lease_token = %(token)s, lease_owner = %(owner)s,
                   lease_expires_at = {now} + %(lease)s::interval
             WHERE id = (SELECT id FROM {s}.squidmesh_jobs
                         WHERE id = %(id)s AND due_at <= {now}
                           AND (lease_expires_at IS NULL OR lease_expires_at <= {now})
                         FOR UPDATE SKIP LOCKED)
            RETURNING run_id, lease_expires_at"""
        self.release = (
            f"WITH freed AS (UPDATE {s}.squidmesh_jobs SET lease_token = NULL,"
            " lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND lease_token = %s"
            " RETURNING 1) SELECT pg_notify(%s, '') FROM freed"
        )
        earliest = (
            f"LEAST((SELECT min(due_at) FROM {s}.squidmesh_jobs WHERE lease_expires_at IS NULL),"
            f" (SELECT min(lease_expires_at) FROM {s}.squidmesh_jobs"
            " WHERE lease_expires_at IS NOT NULL))"
        )
        self.next_due = (
            f"SELECT {earliest} - now()" if clock == "database" else f"SELECT {earliest}"
        )
        self.job_rows = f"SELECT id, due_at, lease_token FROM {s}.squidmesh_jobs"

    def update_run(self, columns: Iterable[str]) -> str:
        sets = ", ".join(f"{c} = %s" for c in columns)
        return (
            f"UPDATE {self.s}.squidmesh_runs SET {sets} WHERE id = %s AND version = %s RETURNING 1"
        )


@dataclass(slots=True)
class _Write:
    """One write of a commit: a statement and its rows of parameters."""

    sql: str
    rows: list[Sequence[object]]
    values: str | None
    """The ``{values}`` group of an INSERT (its rows go in one statement)."""
    guard: str | None
    """Refusal code raised (SQLSTATE SQM01) when the write returns no row."""


@dataclass(slots=True)
class _Plan:
    """The writes that apply one decision, and how to send them."""

    writes: list[_Write] = field(default_factory=list)
    notify: str | None = None
    """The channel to NOTIFY when the commit scheduled jobs anyone may claim."""
    _jobs: set[str] = field(default_factory=set)
    single: bool = True
    """False when two writes touch the same job row: then they go as a pipeline."""

    def add(
        self,
        sql: str,
        rows: list[Sequence[object]],
        *,
        values: str | None = None,
        guard: str | None = None,
        jobs: tuple[str, ...] = (),
    ) -> None:
        for job in jobs:
            if job in self._jobs:
                self.single = False
            self._jobs.add(job)
        self.writes.append(_Write(sql, rows, values, guard))

    @property
    def statements(self) -> int:
        """Statements the pipelined form sends (an INSERT's rows count once)."""
        return sum(1 if w.values else len(w.rows) for w in self.writes) + bool(self.notify)

    def statement(self, schema: str) -> tuple[str, list[object]]:
        """Everything as one statement: writes as CTEs, guards and NOTIFY in the SELECT."""
        ctes: list[str] = []
        params: list[object] = []
        checks: list[str] = []
        for write in self.writes:
            if write.values is not None:
                groups = ", ".join([write.values] * len(write.rows))
                bodies = [(write.sql.replace("{values}", groups), write.rows)]
            else:
                bodies = [(write.sql, [row]) for row in write.rows]
            for sql, rows in bodies:
                name = f"w{len(ctes)}"
                ctes.append(f"{name} AS ({sql})")
                for row in rows:
                    params.extend(row)
                if write.guard is not None:
                    checks.append(
                        f"{schema}.squidmesh_require(EXISTS (SELECT 1 FROM {name}),"
                        f" '{write.guard}')"
                    )
        if self.notify is not None:
            checks.append("pg_notify(%s, '')")
            params.append(self.notify)
        select = "SELECT " + (", ".join(checks) if checks else "1")
        return ("WITH " + ", ".join(ctes) + " " + select if ctes else select), params

    def pipeline(self, schema: str) -> list[tuple[str, list[Sequence[object]]]]:
        """Each write as a statement of its own (for ``executemany``), guards included."""
        out: list[tuple[str, list[Sequence[object]]]] = []
        for write in self.writes:
            sql = write.sql.replace("{values}", write.values or "")
            if write.guard is not None:
                sql = (
                    f"WITH w AS ({sql}) SELECT {schema}.squidmesh_require("
                    f"EXISTS (SELECT 1 FROM w), '{write.guard}')"
                )
            out.append((sql, write.rows))
        if self.notify is not None:
            out.append(("SELECT pg_notify(%s, '')", [(self.notify,)]))
        return out

    def summary(self) -> list[str]:
        """A line per write: how the benchmark lists a commit's statements."""
        lines = [_summary(w.sql.replace("{values}", "(...)"), w.rows) for w in self.writes]
        if self.notify is not None:
            lines.append("SELECT pg_notify(%s, '')")
        return lines


# ---------------------------------------------------------------- rows


def _json(value: JsonObject | StepFailure | None) -> Json | None:
    if value is None:
        return None
    if isinstance(value, StepFailure):
        return Json(encode_failure(value))
    return Json(dict(value))


def _run_row(state: RunState) -> Sequence[object]:
    return (
        state.id,
        state.workflow,
        state.trigger,
        state.status.value,
        state.version,
        _json(state.payload),
        _json(state.context),
        state.created_at,
        state.updated_at,
        _json(state.last_error),
        state.replayed_from,
        state.idempotency_key,
    )


def _step_row(run_id: RunId, position: int, step: StepRunState) -> Sequence[object]:
    return (
        run_id,
        step.step,
        position,
        step.status.value,
        step.scheduled_at,
        step.updated_at,
        _json(step.input),
        _json(step.output),
        _json(step.error),
    )


def _attempt_row(run_id: RunId, step: str, attempt: Attempt) -> Sequence[object]:
    return (
        run_id,
        step,
        attempt.number,
        attempt.status.value,
        attempt.job_id,
        attempt.lease_token,
        attempt.started_at,
        attempt.finished_at,
        _json(attempt.error),
    )


def _job_row(job: Job) -> Sequence[object]:
    return (
        job.id,
        job.run_id,
        job.step,
        job.attempt,
        job.due_at,
        job.status.value,
        job.lease_token,
    )


@dataclass(frozen=True, slots=True)
class _Rows:
    """Step and attempt rows a decision writes: new ones, and ones that changed."""

    new_steps: list[Sequence[object]]
    changed_steps: list[Sequence[object]]
    new_attempts: list[Sequence[object]]
    changed_attempts: list[Sequence[object]]


def _changed_rows(state: RunState, base: RunState | None) -> _Rows:
    """Step and attempt rows of ``state`` that differ from ``base`` (all new without one)."""
    before = {} if base is None else {s.step: s for s in base.steps}
    rows = _Rows([], [], [], [])
    for position, step in enumerate(state.steps):
        old = before.get(step.step)
        if old is step:
            continue
        if old is None:
            rows.new_steps.append(_step_row(state.id, position, step))
        elif (
            old.status != step.status
            or old.scheduled_at != step.scheduled_at
            or old.updated_at != step.updated_at
            or old.input != step.input
            or old.output != step.output
            or old.error != step.error
        ):
            rows.changed_steps.append(_step_row(state.id, position, step))
        previous = {} if old is None else {a.number: a for a in old.attempts}
        for attempt in step.attempts:
            was = previous.get(attempt.number)
            if was is None:
                rows.new_attempts.append(_attempt_row(state.id, step.step, attempt))
            elif was != attempt:
                rows.changed_attempts.append(_attempt_row(state.id, step.step, attempt))
    return rows


def _changed_jobs(state: RunState, base: RunState | None) -> Iterable[Job]:
    before = {} if base is None else {j.id: j for j in base.jobs}
    for job in state.jobs:
        old = before.get(job.id)
        if old is None or old.status != job.status or old.lease_token != job.lease_token:
            yield job


def _decode(row: Sequence[Any]) -> RunState:
    (run_id, workflow, trigger, status, version, payload, context, created_at, updated_at,
     last_error, replayed_from, key, steps, jobs) = row  # fmt: skip
    data: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "id": str(run_id),
        "workflow": workflow,
        "trigger": trigger,
        "status": status,
        "payload": payload,
        "context": context,
        "created_at": _as_datetime(created_at).isoformat(),
        "updated_at": _as_datetime(updated_at).isoformat(),
        "version": version,
        "steps": steps,
        "jobs": jobs,
        "last_error": last_error,
        "replayed_from": None if replayed_from is None else str(replayed_from),
        "idempotency_key": key,
    }
    decoded = decode_run(data)
    if isinstance(decoded, Failure):
        raise BackendError(f"stored run {run_id} does not decode: {decoded.failure()}")
    return decoded.unwrap()


def _as_datetime(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise BackendError(f"expected a timestamp from PostgreSQL, got {type(value).__name__}")
    return value


def _guard_error(exc: psycopg.Error, decision: Decision, fence: Fence | None) -> CommitError:
    code = exc.diag.message_primary
    if code == "stale_lease" and fence is not None:
        return StaleLease(job_id=fence.job_id)
    if code == "version_conflict":
        return VersionConflict(run_id=decision.state.id, expected=decision.expected_version)
    raise translate(exc, "committing a decision") from exc


def _summary(sql: str, rows: list[Sequence[object]]) -> str:
    words = " ".join(sql.split())
    head = words[:110] + ("..." if len(words) > 110 else "")
    return f"{head} x{len(rows)}"


__all__ = ["PostgresRunStore", "StoreStats", "is_disconnect"]
