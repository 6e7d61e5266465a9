"""Looking behind the RunStore port in tests: plain SQL against a store's database.

The store itself runs no caller SQL. :func:`execute` opens a connection of its
own to the store's server (autocommit); :class:`PooledStore` runs a statement on
one of the store's pooled connections, for the tests about those connections
(their session settings, errors translated as the store translates them).
Job rows and their leases are read by :func:`tests.lookbehind.job_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from squidmesh_backends.postgres import PostgresRunStore


async def execute(
    store: PostgresRunStore, sql: str, params: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement on a new connection to ``store``'s server; its rows, if any.

    The connection's ``search_path`` is the store's schema. Without ``params``
    the text is sent as it is (``%`` needs no escaping).
    """
    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as conn:
        await conn.execute("SELECT set_config('search_path', %s, false)", (store.schema,))
        cursor = await conn.execute(sql.encode() if params is None else sql, params)
        return list(await cursor.fetchall()) if cursor.description else []


class PooledStore(PostgresRunStore):
    """A store that also runs a test's statement on one of its pooled connections."""

    async def pooled(
        self, sql: str, params: Sequence[object] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` as the store runs its own: pooled, retried and translated."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql.encode() if params is None else sql, params)
            return list(await cursor.fetchall()) if cursor.description else []

        return await self._do("running a test's statement", work)
