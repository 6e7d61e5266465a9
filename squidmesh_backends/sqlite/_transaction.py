"""Transactional steps on SQLite: the step's writes and its outcome in one transaction.

Theory of operation (``step_transaction``):

1. A connection of the step's own opens the store's file and begins an
   ``IMMEDIATE`` transaction: it holds SQLite's write lock until it ends, so
   nothing else writes meanwhile (other writers, the attempt's heartbeats
   included, wait up to the store's busy timeout). Keep such steps short.
2. The step writes through it (``ctx.transaction``, a ``sqlite3.Connection``,
   usable from the step's thread or the event loop).
3. ``commit_outcome`` loads the run in that transaction, decides the outcome on
   it, writes the decision fenced by the lease with the store's own writer, and
   commits. A refused fence (another worker holds the job) rolls everything
   back, the step's writes included.
4. Leaving the block any other way rolls back; the connection is then closed.
   A step stopped while it may still run (timed out, or the worker stopping)
   is *abandoned*: its statement is interrupted, the connection made read-only
   and rolled back, and left to the step (closing it under a running thread
   would crash the process); nothing it does later can write.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable

from returns.result import Failure, Result, Success

from squidmesh_backends._step_transaction import transaction_of
from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.sqlite._db import _query
from squidmesh_backends.sqlite.store import SqliteRunStore
from squidmesh_core.codec import encode_run
from squidmesh_core.commands import Decision
from squidmesh_core.context import StepContext
from squidmesh_core.errors import CommitError, NotFound, Rejected
from squidmesh_core.ids import RunId
from squidmesh_core.jsonvalue import dump_json
from squidmesh_core.ports import Fence
from squidmesh_core.state import RunState


class SqliteStepTransaction:
    """One step attempt's open transaction (see the module docstring)."""

    def __init__(self, store: SqliteRunStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self.committed = False
        self.abandoned = False

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection the step writes through, inside the transaction."""
        return self._conn

    @property
    def aborted(self) -> bool:
        """SQLite keeps a transaction usable after a failed statement; only its end counts."""
        return not self._conn.in_transaction

    def abandon(self) -> None:
        """Rule 4: the stopped step keeps its connection, made read-only and rolled back."""
        self.abandoned = True
        self._conn.interrupt()  # stops a statement it is running now (safe from any thread)

    async def commit_outcome(
        self,
        run_id: RunId,
        decide_on: Callable[[RunState], Result[Decision, Rejected]],
        *,
        fence: Fence,
    ) -> Result[Decision, Rejected | CommitError | NotFound]:
        """Rule 3: decide on the run as this transaction sees it, write, commit."""
        store, conn = self._store, self._conn

        def work() -> Result[Decision, Rejected | CommitError | NotFound]:
            found = _query(
                conn, "SELECT body FROM squidmesh_runs WHERE id = ?", (run_id,)
            ).fetchone()
            if found is None:
                return Failure(NotFound(run_id=run_id))
            decided = decide_on(store._decode(found[0], run_id))  # its store
            if isinstance(decided, Failure):
                return decided
            decision = decided.unwrap()
            body = dump_json(encode_run(decision.state))
            refused = store._write(conn, decision, body, decision.expected_version, fence)
            if refused is not None:
                return Failure(refused)
            _query(conn, "COMMIT", ())
            self.committed = True
            return Success(decision)

        return await asyncio.to_thread(work)


@contextlib.asynccontextmanager
async def step_transaction(store: SqliteRunStore) -> AsyncIterator[SqliteStepTransaction]:
    """Rules 1 and 4: a connection of its own in an ``IMMEDIATE`` transaction."""
    if store.path == ":memory:":
        raise ConfigurationError(
            "transactional steps need a SQLite file (an in-memory database is private "
            "to one connection)"
        )

    def begin() -> sqlite3.Connection:
        conn = store._connect_with_retry()  # a connection like the store's
        try:
            _query(conn, "BEGIN IMMEDIATE", ())
        except BaseException:
            conn.close()
            raise
        return conn

    conn = await asyncio.to_thread(begin)
    held = SqliteStepTransaction(store, conn)
    try:
        yield held
    finally:

        def end() -> None:
            try:
                if not held.committed and conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                conn.close()

        def disarm() -> None:
            # Closing a connection another thread may be using crashes the process: the
            # stopped step keeps it (closed when it lets go), but can never write again.
            for statement in ("PRAGMA query_only = 1", "ROLLBACK"):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(statement)

        await asyncio.to_thread(disarm if held.abandoned else end)


def step_connection(ctx: StepContext) -> sqlite3.Connection:
    """The open transaction of a ``transaction=True`` step on SQLite, typed.

    Raises:
        ConfigurationError: the step is not transactional, or its store is not SQLite.
    """
    return transaction_of(ctx, sqlite3.Connection, "SQLite")
