"""``PostgresRunStore``: production persistence on PostgreSQL (psycopg 3, async pool).

Runs, step runs, attempts and jobs live in tables of their own (see
``migrations/0001_initial.sql``). A decision is applied in one transaction,
usually one statement, planned by ``_plan`` (statements in ``_sql``, rows in
``_rows``): the run row guarded by its version, the lease fence, the step and
attempt rows that differ from the stored state, the job-row writes of
:func:`squidmesh_core.jobwrites.job_writes` and a ``NOTIFY`` when other
dispatchers have work. Reading a run is one statement.

Which rows differ is known from the last state this store loaded or committed
for the run (a bounded LRU cache). Since a version is committed once and a run
id is never reused, a run id and a version name stored content exactly: the kept
state is the commit's base when its version is the one the decision replaces.
Otherwise the commit upserts every row, which is right whatever is stored.

Claims lease due jobs with ``FOR UPDATE SKIP LOCKED``. With ``clock="database"``
(the default) due times and lease expiries are compared against the server's
``now()``, so workers on machines with skewed clocks agree on who holds a job;
``clock="caller"`` uses the times the runtime passes in (tests with a fake or
time-skipping clock).

Operator queries (paged listings, the status snapshot, pruning, workers) are in
the ``_operations`` mixin. Every database call goes through
:func:`squidmesh_backends.postgres.edge.guarded`, the single place psycopg errors
are retried or translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, Self, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from returns.result import Failure, Result, Success

from squidmesh_backends._aio import LoopLock
from squidmesh_backends.errors import BackendError, BackendUnavailableError, ConfigurationError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.postgres._operations import PostgresOperations
from squidmesh_backends.postgres._plan import GUARD_STATE, Plan, guard_error, plan_commit
from squidmesh_backends.postgres._rows import as_datetime, decode_run_row
from squidmesh_backends.postgres._sql import Statements, notify_channel
from squidmesh_backends.postgres._transaction import PostgresStepTransaction, step_transaction
from squidmesh_backends.postgres.edge import guarded, is_contention, is_disconnect, reach
from squidmesh_backends.postgres.migrations import check_schema, quoted_schema
from squidmesh_backends.probe import COMMITS, LAST_COMMIT, NO_PROBE, STATEMENTS, Probe
from squidmesh_core.commands import Decision
from squidmesh_core.errors import CommitError, DuplicateRun, VersionConflict
from squidmesh_core.explain import LeaseInfo
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId, parse_run_id
from squidmesh_core.ports import Claim, Fence
from squidmesh_core.state import RunState

LOG = get_logger("squidmesh.postgres")
T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]


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


class PostgresRunStore(PostgresOperations):
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
        known_runs: how many runs' last loaded or committed states are kept as
            the bases of later commits (least recently used ones are dropped);
            0 keeps none, so every commit upserts all of a run's rows.
        probe: receives ``COMMITS``, ``STATEMENTS`` and ``LAST_COMMIT`` for
            every successful commit (see :mod:`squidmesh_backends.probe`).
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
        known_runs: int = 1024,
        probe: Probe = NO_PROBE,
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
        self.channel = notify_channel(schema)
        self._sql = Statements(quoted_schema(schema), clock)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening = LoopLock()
        self._closed = False
        """Set by ``close``: a closed store does not open itself again behind a late call."""
        self.vacuum_jobs_every = vacuum_jobs_every
        self._ended_jobs = 0
        self._vacuum: asyncio.Task[None] | None = None
        self.known_runs = max(known_runs, 0)
        self._known: OrderedDict[RunId, RunState] = OrderedDict()
        """Per run, the last state loaded or committed here: the base of its next commit."""
        self._probe = probe

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
                await guarded("connecting", lambda: reach(self.dsn), retry_for=self.retry_for)
                await pool.open()

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
        self._known.clear()
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
            return None if row is None else decode_run_row(row)

        if isinstance(parse_run_id(run_id), Failure):
            return None
        state = await self._do("loading a run", work)
        if state is None:
            self._known.pop(run_id, None)
        else:
            self._remember(state)
        return state

    async def find_by_idempotency_key(self, workflow: str, key: IdempotencyKey) -> RunState | None:
        async def work(conn: Conn) -> RunState | None:
            cursor = await conn.execute(self._sql.by_key, (workflow, key))
            row = await cursor.fetchone()
            return None if row is None else decode_run_row(row)

        return await self._do("finding a run by idempotency key", work)

    async def latest_idempotency_key(self, workflow: str, prefix: str) -> IdempotencyKey | None:
        async def work(conn: Conn) -> IdempotencyKey | None:
            cursor = await conn.execute(
                self._sql.latest_key, {"workflow": workflow, "prefix": prefix}
            )
            row = await cursor.fetchone()
            return None if row is None else IdempotencyKey(str(row[0]))

        return await self._do("reading the latest idempotency key", work)

    # ---------------------------------------------------------------- commit

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        state = decision.state
        known = self._known.get(state.id)
        base = known if known is not None and known.version == decision.expected_version else None
        commit_id = secrets.token_hex(12)
        plan = plan_commit(
            self._sql,
            decision,
            fence=fence,
            base=base,
            commit_id=commit_id,
            lease_end=self._lease_end,
            channel=self.channel,
        )
        tries = 0

        async def work(conn: Conn) -> Result[None, CommitError]:
            nonlocal tries
            tries += 1
            outcome = await self._apply(conn, plan, decision, fence)
            if isinstance(outcome, Failure) and tries > 1:
                # An earlier try lost its connection: it may have committed after all.
                cursor = await conn.execute(self._sql.last_commit, (state.id,))
                row = await cursor.fetchone()
                if row is not None and (row[0], row[1]) == (state.version, commit_id):
                    LOG.info("commit %s of run %s had succeeded", commit_id, state.id)
                    outcome = Success(None)
            return outcome

        try:
            committed = await self._do("committing a decision", work)
        except BaseException:
            self._forget(decision)
            raise
        if isinstance(committed, Failure):
            self._forget(decision)
            return committed
        self._remember(state)
        probe = self._probe
        if probe is not NO_PROBE:
            probe.record(COMMITS)
            probe.record(STATEMENTS, plan.sent)
            probe.record(LAST_COMMIT, 0, detail=plan.summary())
        self._count_ended_jobs(plan.ended_jobs)
        return committed

    def step_transaction(self) -> contextlib.AbstractAsyncContextManager[PostgresStepTransaction]:
        """A transaction for one ``transaction=True`` step (see ``_transaction``)."""
        return step_transaction(self)

    def _remember(self, state: RunState) -> None:
        """Keep ``state`` as the base of the run's next commit (least recently used go).

        Finished runs are not kept: they rarely change again, and reads of many must
        not fill the cache.
        """
        if self.known_runs == 0:
            return
        known = self._known
        if state.status.terminal:
            known.pop(state.id, None)
            return
        known[state.id] = state
        known.move_to_end(state.id)
        if len(known) > self.known_runs:
            known.popitem(last=False)

    def _forget(self, decision: Decision) -> None:
        """After a refused or failed commit: drop a kept state it may have outdated.

        A state newer than the one the decision replaced (another commit through
        this store won the race) is still exact, so it stays.
        """
        known = self._known.get(decision.state.id)
        if known is not None and known.version <= decision.expected_version:
            del self._known[decision.state.id]

    def _count_ended_jobs(self, ended: int) -> None:
        if self.vacuum_jobs_every is None:
            return
        self._ended_jobs += ended
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
        self, conn: Conn, plan: Plan, decision: Decision, fence: Fence | None
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
                    return Failure(guard_error(exc, decision, fence))
                if is_contention(exc):
                    LOG.info("commit of run %s hit %s; retrying", decision.state.id, exc)
                    continue
                raise
            return Success(None)
        return Failure(
            VersionConflict(run_id=decision.state.id, expected=decision.expected_version)
        )

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
                    lease_expires_at=as_datetime(expires),
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
                lease_expires_at=as_datetime(row[1]),
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
        """A lease's end as the statements take it (see ``Statements.__init__``).

        With the database clock, the time left from now, which the server adds
        to its own ``now()``; with the caller's clock, the time itself.
        """
        return until - datetime.now(UTC) if self.clock == "database" else until

    async def release(self, job_id: JobId, lease_token: LeaseToken) -> bool:
        async def work(conn: Conn) -> bool:
            cursor = await conn.execute(self._sql.release, (job_id, lease_token, self.channel))
            return len(await cursor.fetchall()) == 1

        return await self._do("releasing a lease", work)

    async def leases(self, run_id: RunId) -> Sequence[LeaseInfo]:
        async def work(conn: Conn) -> list[LeaseInfo]:
            rows = await (await conn.execute(self._sql.leases, (run_id,))).fetchall()
            return [LeaseInfo(job_id=JobId(r[0]), owner=r[1], expires_at=r[2]) for r in rows]

        return await self._do("reading the leases of a run", work)

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
            return as_datetime(row[0])

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


__all__ = ["PostgresRunStore", "is_disconnect", "notify_channel"]
