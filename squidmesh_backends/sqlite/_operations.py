"""The SQLite store's operator queries: paged listings, workers, the status snapshot, pruning.

A mixin of :class:`~squidmesh_backends.sqlite.store.SqliteRunStore`, kept apart so
the store itself stays about runs and jobs. Every method runs its statements
through the store's ``_run`` (one at a time, in a worker thread); writes run in
one ``BEGIN IMMEDIATE`` transaction, reads (the status, prune counts) as single
statements outside any transaction, so they never hold the write lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from returns.result import Failure

from squidmesh_backends.errors import BackendError
from squidmesh_backends.sqlite._db import _query, _time, _us
from squidmesh_core.ids import JobId, RunId, parse_job_id
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


class _Store(Protocol):
    """What the mixin needs of the store it is mixed into."""

    path: str

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T: ...

    def _transaction(self, conn: sqlite3.Connection) -> AbstractContextManager[None]: ...

    def _decode(self, body: str, run_id: str) -> RunState: ...


def _schema_version(conn: sqlite3.Connection) -> int:
    return int(_query(conn, "PRAGMA user_version", ()).fetchone()[0])


class SqliteOperations:
    """``list_runs``, ``record_worker``, ``operations_status`` and ``prune_runs`` on SQLite."""

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
        where = ["1 = 1"]
        params: list[object] = []
        for clause, value in (
            ("workflow = ?", workflow),
            ("status = ?", None if status is None else status.value),
            ("created_us >= ?", None if created_after is None else _us(created_after)),
            ("created_us < ?", None if created_before is None else _us(created_before)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if before is not None:
            where.append("(created_us, id) < (?, ?)")
            params += [_us(before[0]), before[1]]
        sql = (
            f"SELECT id, body FROM squidmesh_runs WHERE {' AND '.join(where)}"
            " ORDER BY created_us DESC, id DESC LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> list[RunState]:
            rows = _query(conn, sql, (*params, max(limit, 0))).fetchall()
            return [self._decode(body, run_id) for run_id, body in rows]

        return await self._run(work)

    async def record_worker(
        self: _Store, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        seen = _us(at)
        text = dump_json(dict(details))

        def work(conn: sqlite3.Connection) -> None:
            with self._transaction(conn):
                _query(
                    conn,
                    "INSERT INTO squidmesh_workers"
                    " (name, first_seen_us, last_seen_us, stopped_us, details)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " last_seen_us = excluded.last_seen_us, stopped_us = excluded.stopped_us,"
                    " details = excluded.details",
                    (name, seen, seen, seen if stopped else None, text),
                )
                _query(
                    conn,
                    "DELETE FROM squidmesh_workers WHERE last_seen_us < ?",
                    (_us(at - WORKERS_KEPT),),
                )

        await self._run(work)

    async def operations_status(
        self: _Store, *, now: datetime, expiring_within: timedelta, workers_since: datetime
    ) -> StoreStatus:
        from squidmesh_backends.sqlite.store import SCHEMA_VERSION  # noqa: PLC0415

        now_us, soon_us = _us(now), _us(now + expiring_within)

        def work(conn: sqlite3.Connection) -> StoreStatus:
            runs = _query(
                conn,
                "SELECT workflow, status, count(*) FROM squidmesh_runs"
                " GROUP BY workflow, status ORDER BY workflow, status",
                (),
            ).fetchall()
            # Each part walks one index: unleased due jobs, then the leases.
            fresh, oldest_fresh = _query(
                conn,
                "SELECT count(*), min(due_us) FROM squidmesh_jobs"
                " WHERE lease_expires_us IS NULL AND due_us <= ?",
                (now_us,),
            ).fetchone()
            live, expiring, expired, lapsed_due, oldest_lapsed = _query(
                conn,
                "SELECT count(*) FILTER (WHERE lease_expires_us > ?),"
                " count(*) FILTER (WHERE lease_expires_us > ? AND lease_expires_us <= ?),"
                " count(*) FILTER (WHERE lease_expires_us <= ?),"
                " count(*) FILTER (WHERE lease_expires_us <= ? AND due_us <= ?),"
                " min(due_us) FILTER (WHERE lease_expires_us <= ? AND due_us <= ?)"
                " FROM squidmesh_jobs WHERE lease_expires_us IS NOT NULL",
                (now_us, now_us, soon_us, now_us, now_us, now_us, now_us, now_us),
            ).fetchone()
            listed = _query(
                conn,
                "SELECT id, run_id, owner, lease_expires_us FROM squidmesh_jobs"
                " WHERE lease_expires_us <= ? ORDER BY lease_expires_us, id LIMIT ?",
                (now_us, EXPIRED_LEASES_SHOWN),
            ).fetchall()
            workers = _query(
                conn,
                "SELECT name, first_seen_us, last_seen_us, stopped_us, details"
                " FROM squidmesh_workers WHERE last_seen_us >= ?"
                " ORDER BY last_seen_us DESC, name DESC",
                (_us(workers_since),),
            ).fetchall()
            oldest = [us for us in (oldest_fresh, oldest_lapsed) if us is not None]
            return StoreStatus(
                runs=tuple(RunCount(workflow=w, status=RunStatus(s), count=n) for w, s, n in runs),
                due_jobs=fresh + (lapsed_due or 0),
                oldest_due_at=_time(min(oldest)) if oldest else None,
                leased_jobs=live or 0,
                leases_expiring=expiring or 0,
                leases_expired=expired or 0,
                expired_leases=tuple(_expired(*row) for row in listed),
                workers=tuple(_worker(self.path, *row) for row in workers),
                schema_version=_schema_version(conn),
                schema_expected=SCHEMA_VERSION,
            )

        return await self._run(work)

    async def count_prunable(
        self: _Store, *, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> PruneCount:
        wanted = sorted({s.value for s in statuses})
        if not wanted:
            return PruneCount(matched=0, kept_cron=0)
        marks = ", ".join("?" * len(wanted))
        sql = (
            "SELECT count(*), coalesce(sum(kept), 0) FROM"
            f" (SELECT {_KEPT_CRON} AS kept FROM squidmesh_runs r"
            f" WHERE r.status IN ({marks}) AND {_OLD_AND_IDLE})"
        )

        def work(conn: sqlite3.Connection) -> PruneCount:
            # One statement outside any transaction: a read that blocks no writer.
            found, kept = _query(conn, sql, (*wanted, _us(finished_before))).fetchone()
            return PruneCount(matched=found - kept, kept_cron=kept)

        return await self._run(work)

    async def prune_runs(
        self: _Store,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        wanted = sorted({s.value for s in statuses})
        if not wanted or (limit is not None and limit <= 0):
            return 0
        doomed, params = _doomed(wanted, _us(finished_before), -1 if limit is None else limit)

        def count(conn: sqlite3.Connection) -> int:
            return int(_query(conn, f"SELECT count(*) FROM ({doomed})", params).fetchone()[0])

        def delete(conn: sqlite3.Connection) -> int:
            with self._transaction(conn):  # one statement: the write lock is held briefly
                gone = _query(conn, f"DELETE FROM squidmesh_runs WHERE id IN ({doomed})", params)
                return gone.rowcount

        return await self._run(count if dry_run else delete)


_OLD_AND_IDLE = (
    "r.updated_us < ? AND NOT EXISTS (SELECT 1 FROM squidmesh_jobs j WHERE j.run_id = r.id)"
)
"""A run last updated before the cutoff, with no jobs (``squidmesh_jobs_by_run``)."""
_KEPT_CRON = (
    "(r.idempotency_key IS NOT NULL AND substr(r.idempotency_key, 1, 5) = 'cron:'"
    " AND instr(substr(r.idempotency_key, 6), ':') > 0"
    " AND NOT EXISTS (SELECT 1 FROM squidmesh_runs n WHERE n.workflow = r.workflow"
    " AND n.idempotency_key > r.idempotency_key AND n.idempotency_key <"
    " substr(r.idempotency_key, 1, 5 + instr(substr(r.idempotency_key, 6), ':')) || char(1114111)))"
)
"""A kept cron run: no greater key of its workflow has its ``cron:<trigger>:`` prefix.

Keys compare bytewise (SQLite's ``BINARY``), as ``latest_idempotency_key`` does;
the look for a greater key is one seek in ``squidmesh_runs_idempotency``."""


def _doomed(statuses: list[str], before_us: int, limit: int) -> tuple[str, tuple[object, ...]]:
    """The ids of the runs a prune takes, oldest first, and the statement's parameters.

    Per status it walks ``squidmesh_runs_by_status`` in creation order and
    stops at ``limit`` (``-1``: none), so a batch never sorts every candidate.
    """
    per_status = (
        f"SELECT * FROM (SELECT r.id, r.created_us FROM squidmesh_runs r WHERE r.status = ?"
        f" AND {_OLD_AND_IDLE} AND NOT {_KEPT_CRON} ORDER BY r.created_us, r.id LIMIT ?)"
    )
    union = " UNION ALL ".join([per_status] * len(statuses))
    sql = f"SELECT id FROM ({union}) ORDER BY created_us, id LIMIT ?"
    params = tuple(p for status in statuses for p in (status, before_us, limit))
    return sql, (*params, limit)


def _expired(job_id: str, run_id: str, owner: str | None, expires_us: int) -> ExpiredLease:
    key = parse_job_id(job_id).value_or(None)
    return ExpiredLease(
        job_id=JobId(job_id),
        run_id=RunId(run_id),
        step="" if key is None else key.step,
        owner=owner,
        expired_at=_time(expires_us),
    )


def _worker(
    path: str, name: str, first_us: int, last_us: int, stopped_us: int | None, details: str
) -> WorkerSeen:
    try:
        checked = check_json_object(json.loads(details))
    except ValueError as exc:
        raise BackendError(f"worker {name!r} in {path} has details that are not JSON") from exc
    if isinstance(checked, Failure):
        raise BackendError(f"worker {name!r} in {path} has details that are not a JSON object")
    return WorkerSeen(
        name=name,
        first_seen=_time(first_us),
        last_seen=_time(last_us),
        stopped_at=None if stopped_us is None else _time(stopped_us),
        details=checked.unwrap(),
    )
