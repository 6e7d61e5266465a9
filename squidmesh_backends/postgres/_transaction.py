"""Transactional steps on PostgreSQL: the step's writes and its outcome in one transaction.

Theory of operation (``step_transaction``):

1. A pooled connection begins a transaction; the step writes through it
   (``ctx.transaction``, a ``psycopg.AsyncConnection``).
2. ``commit_outcome`` locks the run's row (``FOR UPDATE``) and loads the run in
   that transaction, so nothing can change it until the commit; it decides the
   outcome on that state and sends the decision's writes, fenced by the lease,
   in the same transaction, then commits. Locked, the run cannot conflict; a
   lease another worker took makes the fence refuse, and everything, the
   step's writes included, is rolled back.
3. Leaving the block any other way (the step failed, deferred, or the
   connection broke) rolls back. A step stopped while it may still run (timed
   out, or the worker stopping) is *abandoned*: its connection is closed, so
   the server rolls back and nothing it does later can write or reach another
   borrower of the pool. Nothing is retried here: a
   lost connection mid-transaction is a lost outcome, and the job's lease
   expiry re-runs the step (ADR 0007), which is why the step's writes must be
   in this transaction to be exactly once.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq
from returns.result import Failure, Result, Success

from squidmesh_backends._step_transaction import transaction_of
from squidmesh_backends.errors import BackendError
from squidmesh_backends.postgres._plan import GUARD_STATE, guard_error, plan_commit
from squidmesh_backends.postgres._rows import decode_run_row
from squidmesh_backends.postgres.edge import translate
from squidmesh_core.commands import Decision
from squidmesh_core.context import StepContext
from squidmesh_core.errors import CommitError, NotFound, Rejected
from squidmesh_core.ids import RunId
from squidmesh_core.ports import Fence
from squidmesh_core.state import RunState

if TYPE_CHECKING:
    from squidmesh_backends.postgres.store import PostgresRunStore

Conn = psycopg.AsyncConnection[Any]


class PostgresStepTransaction:
    """One step attempt's open transaction (see the module docstring)."""

    def __init__(self, store: PostgresRunStore, conn: Conn) -> None:
        self._store = store
        self._conn = conn
        self.committed = False
        self.abandoned = False

    @property
    def connection(self) -> Conn:
        """The connection the step writes through, inside the transaction."""
        return self._conn

    @property
    def aborted(self) -> bool:
        """Whether a failed statement (only a rollback is left) or the step ended it."""
        return self._conn.info.transaction_status is not pq.TransactionStatus.INTRANS

    def abandon(self) -> None:
        """Rule 3: the connection is closed, not rolled back and handed to the pool again."""
        self.abandoned = True

    async def commit_outcome(
        self,
        run_id: RunId,
        decide_on: Callable[[RunState], Result[Decision, Rejected]],
        *,
        fence: Fence,
    ) -> Result[Decision, Rejected | CommitError | NotFound]:
        """Rule 2: decide on the locked run, write, commit; refuse and roll back otherwise."""
        store, conn, sql = self._store, self._conn, self._store._sql  # its own store
        try:
            await conn.execute(
                f"SELECT 1 FROM {sql.s}.squidmesh_runs WHERE id = %s FOR UPDATE", (run_id,)
            )
            cursor = await conn.execute(sql.load, (run_id,))
            row = await cursor.fetchone()
            if row is None:
                return Failure(NotFound(run_id=run_id))
            state = decode_run_row(row)
            decided = decide_on(state)
            if isinstance(decided, Failure):
                return decided
            decision = decided.unwrap()
            plan = plan_commit(
                sql,
                decision,
                fence=fence,
                base=state,
                commit_id=secrets.token_hex(12),
                lease_end=store._lease_end,
                channel=store.channel,
            )
            try:
                async with conn.pipeline():
                    for statement, rows in plan.pipeline(sql.s):
                        async with conn.cursor() as cur:
                            await cur.executemany(statement, rows)
            except psycopg.Error as exc:
                if exc.sqlstate == GUARD_STATE:
                    return Failure(guard_error(exc, decision, fence))
                raise
            await conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise translate(exc, "committing a transactional step") from exc
        self.committed = True
        store._remember(decision.state)  # the base of the run's next commit
        store._count_ended_jobs(plan.ended_jobs)
        return Success(decision)


@contextlib.asynccontextmanager
async def step_transaction(store: PostgresRunStore) -> AsyncIterator[PostgresStepTransaction]:
    """Rules 1 and 3: begin a transaction on a pooled connection; roll back unless committed."""
    async with store._connection() as conn:  # the store's own pool
        try:
            await conn.execute("BEGIN")
        except psycopg.Error as exc:
            raise translate(exc, "beginning a transactional step") from exc
        held = PostgresStepTransaction(store, conn)
        try:
            yield held
        finally:
            if held.abandoned:  # the stopped step may still hold it: nobody gets it again
                await conn.close()  # the server rolls back; the pool discards it
            elif not held.committed:
                try:
                    await conn.execute("ROLLBACK")
                except psycopg.Error as exc:  # the pool discards a broken connection
                    if not conn.closed:
                        raise BackendError(f"PostgreSQL could not roll back a step: {exc}") from exc


def step_connection(ctx: StepContext) -> Conn:
    """The open transaction of a ``transaction=True`` step on PostgreSQL, typed.

    Raises:
        ConfigurationError: the step is not transactional, or its store is not PostgreSQL.
    """
    return transaction_of(ctx, psycopg.AsyncConnection, "PostgreSQL")
