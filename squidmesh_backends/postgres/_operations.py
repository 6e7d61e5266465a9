"""The PostgreSQL store's operator queries: paged listings, workers, the status snapshot, pruning.

A mixin of :class:`~squidmesh_backends.postgres.store.PostgresRunStore`, kept apart
so the store itself stays about runs and jobs. Every call goes through the
store's ``_do`` (retried and translated at the one edge).

What each query walks, so it stays fast on a large store:

* listing: ``squidmesh_runs_recent`` (or the workflow / status index) newest
  first, the keyset cursor as a row comparison, only the filters given;
* status: one round trip (a pipeline). Runs are counted with a ``GROUP BY``
  (a scan of the runs table); the job counts walk the partial indexes
  ``squidmesh_jobs_unleased`` and ``squidmesh_jobs_leases`` only;
* pruning: per status, ``squidmesh_runs_by_status`` oldest first, filtered by
  ``updated_at``, locking each run as it is picked (``SKIP LOCKED``); a run
  keyed ``cron:<trigger>:...`` is kept when one backward probe of
  ``squidmesh_runs_keys_bytewise`` finds its key the greatest with its prefix;
  runs with jobs are excluded by one hashed look at the jobs table (live work
  only). The picked runs are deleted by primary key. Deleting a run row
  deletes its step runs, attempts and jobs (``ON DELETE CASCADE``); its audit
  trail and signals are columns of the row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from returns.result import Failure

from squidmesh_backends.errors import BackendError
from squidmesh_backends.postgres._rows import as_datetime, decode_run_row
from squidmesh_backends.postgres._sql import Statements
from squidmesh_backends.postgres.migrations import LATEST_VERSION, VERSION_TABLE
from squidmesh_core.ids import JobId, RunId
from squidmesh_core.jsonvalue import JsonObject, check_json_object, dump_json
from squidmesh_core.operations import (
    EXPIRED_LEASES_SHOWN,
    WORKERS_KEPT,
    ExpiredLease,
    PruneCount,
    RunCount,
    StoreStatus,
    WorkerSeen,
)
from squidmesh_core.state import RunState, RunStatus

T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]


class _Store(Protocol):
    """What the mixin needs of the store it is mixed into."""

    @property
    def clock(self) -> str: ...

    @property
    def _sql(self) -> Statements: ...

    @property
    def _known(self) -> OrderedDict[RunId, RunState]: ...

    async def _do(self, what: str, work: Callable[[Conn], Awaitable[T]]) -> T: ...


class _Statements:
    """The operator statements of one schema and clock."""

    def __init__(self, s: str, clock: str) -> None:
        now = "now()" if clock == "database" else "%(now)s"
        self.runs = (
            f"SELECT workflow, status, count(*) FROM {s}.squidmesh_runs"
            " GROUP BY workflow, status ORDER BY workflow, status"
        )
        self.unleased = (
            f"SELECT count(*), min(due_at) FROM {s}.squidmesh_jobs"
            f" WHERE lease_expires_at IS NULL AND due_at <= {now}"
        )
        lapsed = f"lease_expires_at <= {now}"
        self.leases = (
            f"SELECT count(*) FILTER (WHERE lease_expires_at > {now}),"
            f" count(*) FILTER (WHERE lease_expires_at > {now}"
            f" AND lease_expires_at <= {now} + %(within)s::interval),"
            f" count(*) FILTER (WHERE {lapsed}),"
            f" count(*) FILTER (WHERE {lapsed} AND due_at <= {now}),"
            f" min(due_at) FILTER (WHERE {lapsed} AND due_at <= {now})"
            f" FROM {s}.squidmesh_jobs WHERE lease_expires_at IS NOT NULL"
        )
        self.expired = (
            f"SELECT id, run_id, step, lease_owner, lease_expires_at FROM {s}.squidmesh_jobs"
            f" WHERE {lapsed} ORDER BY lease_expires_at, id LIMIT {EXPIRED_LEASES_SHOWN}"
        )
        self.workers = (
            f"SELECT name, first_seen, last_seen, stopped_at, details FROM {s}.squidmesh_workers"
            " WHERE last_seen >= %(since)s ORDER BY last_seen DESC, name DESC"
        )
        self.schema = f"SELECT max(version) FROM {s}.{VERSION_TABLE}"
        self.record_worker = f"""
            WITH seen AS (
                INSERT INTO {s}.squidmesh_workers AS w
                       (name, first_seen, last_seen, stopped_at, details)
                VALUES (%(name)s, %(at)s, %(at)s, %(stopped)s, %(details)s)
                ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen,
                       stopped_at = excluded.stopped_at, details = excluded.details
                RETURNING 1
            )
            DELETE FROM {s}.squidmesh_workers
             WHERE last_seen < %(forget)s AND name <> %(name)s"""
        # The runs a prune takes: per status, oldest first, minus the kept cron
        # runs and every run that has jobs. Deleting locks them as it picks
        # them (skipping rows another transaction holds), so a batch is short
        # only when too few unlocked ones are left, and finds them again by key.
        idle = f"r.updated_at < %(before)s AND r.id NOT IN (SELECT run_id FROM {s}.squidmesh_jobs)"
        kept = _kept_cron(s)
        self.count_prunable = f"""
            SELECT count(*), count(*) FILTER (WHERE kept) FROM (
                SELECT {kept} AS kept FROM {s}.squidmesh_runs r
                 WHERE r.status = ANY(%(statuses)s::text[]) AND {idle}) c"""

        def oldest(lock: str) -> str:
            return f"""
                SELECT c.id, c.created_at
                  FROM unnest(%(statuses)s::text[]) AS st(status)
                 CROSS JOIN LATERAL (
                       SELECT r.id, r.created_at FROM {s}.squidmesh_runs r
                        WHERE r.status = st.status AND {idle} AND NOT {kept}
                        ORDER BY r.created_at, r.id LIMIT %(limit)s {lock}) c
                 ORDER BY c.created_at, c.id LIMIT %(limit)s"""

        self.count_limited = f"SELECT count(*) FROM ({oldest('')}) p"
        self.prune = f"""
            DELETE FROM {s}.squidmesh_runs r
             WHERE r.id = ANY(ARRAY(SELECT p.id FROM ({oldest("FOR UPDATE SKIP LOCKED")}) p))
            RETURNING r.id"""


def _kept_cron(s: str) -> str:
    """Whether run ``r`` is a kept cron run: its key is the greatest with its prefix.

    The prefix is ``cron:<trigger>:``; keys compare bytewise (``COLLATE "C"``), and
    the greatest is found as ``latest_idempotency_key`` finds it: one backward
    probe of ``squidmesh_runs_keys_bytewise`` (only for runs keyed ``cron:``).
    """
    key = 'r.idempotency_key COLLATE "C"'
    other = 'n.idempotency_key COLLATE "C"'
    prefix = "left(r.idempotency_key, 5 + strpos(substr(r.idempotency_key, 6), ':'))"
    return f"""(r.idempotency_key IS NOT NULL AND left(r.idempotency_key, 5) = 'cron:'
            AND strpos(substr(r.idempotency_key, 6), ':') > 0
            AND ({key}) = (
                SELECT {other} FROM {s}.squidmesh_runs n
                 WHERE n.workflow = r.workflow AND n.idempotency_key IS NOT NULL
                   AND ({other}) >= ({key}) AND ({other}) < {prefix} || chr(1114111)
                 ORDER BY ({other}) DESC LIMIT 1))"""


@cache
def _statements(s: str, clock: str) -> _Statements:
    return _Statements(s, clock)


def _listing(
    select: str,
    *,
    workflow: str | None,
    status: RunStatus | None,
    created_after: datetime | None,
    created_before: datetime | None,
    before: tuple[datetime, RunId] | None,
) -> tuple[str, list[object]]:
    """The listing statement with only the filters given (so the planner sees them all)."""
    where: list[str] = []
    params: list[object] = []
    for clause, value in (
        ("r.workflow = %s", workflow),
        ("r.status = %s", None if status is None else status.value),
        ("r.created_at >= %s", created_after),
        ("r.created_at < %s", created_before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    if before is not None:
        where.append("(r.created_at, r.id) < (%s, %s::uuid)")
        params += [before[0], before[1]]
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    return f"{select}{condition} ORDER BY r.created_at DESC, r.id DESC LIMIT %s", params


class PostgresOperations:
    """``list_runs``, ``record_worker``, ``operations_status`` and ``prune_runs`` on PostgreSQL."""

    async def list_runs(
        self: _Store,
        *,
        workflow: str | None,
        status: RunStatus | None,
        limit: int,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before: tuple[datetime, RunId] | None = None,
    ) -> Sequence[RunState]:
        sql, params = _listing(
            self._sql.run_select,
            workflow=workflow,
            status=status,
            created_after=created_after,
            created_before=created_before,
            before=before,
        )

        async def work(conn: Conn) -> list[RunState]:
            cursor = await conn.execute(sql, (*params, max(limit, 0)))
            return [decode_run_row(row) for row in await cursor.fetchall()]

        return await self._do("listing runs", work)

    async def record_worker(
        self: _Store, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        sql = _statements(self._sql.s, self.clock).record_worker
        params = {
            "name": name,
            "at": at,
            "stopped": at if stopped else None,
            "details": Jsonb(dict(details), dumps=dump_json),
            "forget": at - WORKERS_KEPT,
        }

        async def work(conn: Conn) -> None:
            await conn.execute(sql, params)

        await self._do("recording a worker", work)

    async def operations_status(
        self: _Store, *, now: datetime, expiring_within: timedelta, workers_since: datetime
    ) -> StoreStatus:
        sql = _statements(self._sql.s, self.clock)
        params = {"now": now, "within": expiring_within, "since": workers_since}

        async def work(conn: Conn) -> list[list[tuple[Any, ...]]]:
            async with conn.pipeline():
                cursors = [
                    await conn.execute(sql.runs),
                    await conn.execute(sql.unleased, params),
                    await conn.execute(sql.leases, params),
                    await conn.execute(sql.expired, params),
                    await conn.execute(sql.workers, params),
                    await conn.execute(sql.schema),
                ]
            return [list(await cursor.fetchall()) for cursor in cursors]

        runs, [unleased], [leases], expired, workers, [schema] = await self._do(
            "reading the store's status", work
        )
        fresh, oldest_fresh = unleased
        live, expiring, lapsed, lapsed_due, oldest_lapsed = leases
        oldest = [as_datetime(t) for t in (oldest_fresh, oldest_lapsed) if t is not None]
        return StoreStatus(
            runs=tuple(RunCount(workflow=w, status=RunStatus(s), count=n) for w, s, n in runs),
            due_jobs=fresh + lapsed_due,
            oldest_due_at=min(oldest, default=None),
            leased_jobs=live,
            leases_expiring=expiring,
            leases_expired=lapsed,
            expired_leases=tuple(
                ExpiredLease(
                    job_id=JobId(job_id),
                    run_id=RunId(str(run_id)),
                    step=step,
                    owner=owner,
                    expired_at=as_datetime(at),
                )
                for job_id, run_id, step, owner, at in expired
            ),
            workers=tuple(_worker(*row) for row in workers),
            schema_version=None if schema[0] is None else int(schema[0]),
            schema_expected=LATEST_VERSION,
        )

    async def count_prunable(
        self: _Store, *, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> PruneCount:
        sql = _statements(self._sql.s, self.clock).count_prunable
        params = {"statuses": sorted({s.value for s in statuses}), "before": finished_before}

        async def work(conn: Conn) -> tuple[int, int]:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
            return (0, 0) if row is None else (int(row[0]), int(row[1]))

        found, kept = await self._do("counting prunable runs", work)
        return PruneCount(matched=found - kept, kept_cron=kept)

    async def prune_runs(
        self: _Store,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        sql = _statements(self._sql.s, self.clock)
        params = {
            "statuses": sorted({s.value for s in statuses}),
            "before": finished_before,
            "limit": None if limit is None else max(limit, 0),
        }

        async def count(conn: Conn) -> int:
            cursor = await conn.execute(sql.count_limited, params)
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        async def delete(conn: Conn) -> list[RunId]:
            cursor = await conn.execute(sql.prune, params)
            return [RunId(str(row[0])) for row in await cursor.fetchall()]

        if dry_run:
            return await self._do("counting prunable runs", count)
        gone = await self._do("pruning runs", delete)
        for run_id in gone:  # a run id is never used again, but no stale base stays either
            self._known.pop(run_id, None)
        return len(gone)


def _worker(
    name: str,
    first_seen: datetime,
    last_seen: datetime,
    stopped_at: datetime | None,
    details: object,
) -> WorkerSeen:
    checked = check_json_object(details)
    if isinstance(checked, Failure):
        raise BackendError(f"worker {name!r} has details that are not a JSON object")
    return WorkerSeen(
        name=name,
        first_seen=as_datetime(first_seen),
        last_seen=as_datetime(last_seen),
        stopped_at=None if stopped_at is None else as_datetime(stopped_at),
        details=checked.unwrap(),
    )
