"""The SQLite store's operator queries: paged listings, workers, the status snapshot, pruning.

A mixin of :class:`~squidmesh_backends.sqlite.store.SqliteRunStore`, kept apart so
the store itself stays about runs and jobs. Every method runs its statements
through the store's ``_run`` (one at a time, in a worker thread); writes run in
one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
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
    ExpiredLease,
    RunCount,
    StoreStatus,
    WorkerSeen,
)
from squidmesh_core.state import RunState, RunStatus

T = TypeVar("T")
WORKERS_KEPT = timedelta(days=7)
"""Workers not seen for this long are forgotten when another one reports."""


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

    async def prune_runs(
        self: _Store,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        keep: Collection[tuple[str, str]],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        wanted = sorted({s.value for s in statuses})
        if not wanted:
            return 0
        pairs = sorted(set(keep))
        marks = ", ".join("?" * len(wanted))
        select = (
            "SELECT r.id FROM squidmesh_runs r"
            f" WHERE r.status IN ({marks}) AND r.updated_us < ?"
            " AND NOT EXISTS (SELECT 1 FROM squidmesh_jobs j WHERE j.run_id = r.id)"
            " ORDER BY r.created_us, r.id LIMIT ?"
        )
        newest = (
            "SELECT id FROM squidmesh_runs WHERE workflow = ? AND trigger = ?"
            " ORDER BY created_us DESC, id DESC LIMIT 1"
        )

        def work(conn: sqlite3.Connection) -> int:
            with self._transaction(conn):
                kept = {row[0] for pair in pairs for row in _query(conn, newest, pair)}
                # Over-select by the kept runs, so the limit counts deletions only.
                cap = -1 if limit is None else max(limit, 0) + len(kept)
                found = _query(conn, select, (*wanted, _us(finished_before), cap)).fetchall()
                doomed = [r[0] for r in found if r[0] not in kept]
                if limit is not None:
                    doomed = doomed[: max(limit, 0)]
                if not dry_run:
                    for chunk in _chunks(doomed, 500):
                        _query(
                            conn,
                            f"DELETE FROM squidmesh_runs WHERE id IN ({', '.join('?' * len(chunk))})",
                            tuple(chunk),
                        )
                return len(doomed)

        return await self._run(work)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
