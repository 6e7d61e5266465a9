"""Look behind the RunStore port: the job rows each store keeps, read from its own storage.

The contract asks a backend's tests for such a helper where a promise cannot be
observed through the port (who holds a job's lease). Production stores carry no
such method; this reads their storage directly.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime

import psycopg
from psycopg import sql

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_core.protocol import JobId, LeaseToken, RunStore

JobRows = dict[JobId, tuple[datetime, LeaseToken | None]]


async def job_rows(store: RunStore) -> JobRows:
    """Every job row of ``store`` as (due_at, lease token)."""
    if isinstance(store, MemoryRunStore):
        return {k: (r.due_at, r.lease_token) for k, r in store._jobs.items()}
    if isinstance(store, SqliteRunStore):
        return await asyncio.to_thread(_sqlite_rows, store.path)
    if isinstance(store, PostgresRunStore):
        return await _postgres_rows(store.dsn, store.schema)
    raise TypeError(f"no look-behind for {type(store).__name__}")


def _sqlite_rows(path: str) -> JobRows:
    from squidmesh_backends.sqlite._db import _time

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, due_us, lease_token FROM squidmesh_jobs").fetchall()
    finally:
        conn.close()
    return {JobId(r[0]): (_time(r[1]), None if r[2] is None else LeaseToken(r[2])) for r in rows}


async def _postgres_rows(dsn: str, schema: str) -> JobRows:
    query = sql.SQL("SELECT id, due_at, lease_token FROM {}.squidmesh_jobs").format(
        sql.Identifier(schema)
    )
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(query)
        rows = await cursor.fetchall()
    return {JobId(str(r[0])): (r[1], None if r[2] is None else LeaseToken(str(r[2]))) for r in rows}
