"""``SqliteRunStore``: the embedded, durable default.

One file holds runs (the encoded run state plus the columns queries need) and
jobs (the outbox and timers, with their leases). Every write runs in a
``BEGIN IMMEDIATE`` transaction, so several processes may share the file:
SQLite serialises writers, which makes claims exclusive. The schema version
lives in ``PRAGMA user_version``; an empty file is initialised on open, a file
written by a newer version is refused with ``MigrationRequiredError``.

Blocking ``sqlite3`` calls run in a worker thread, one at a time per store.
Driver errors are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar

from returns.result import Failure, Result, Success

from squidmesh_backends._aio import LoopLock
from squidmesh_backends.errors import BackendError, BackendUnavailableError, MigrationRequiredError
from squidmesh_backends.probe import COMMITS, NO_PROBE, Probe
from squidmesh_backends.sqlite._db import _query, _time, _translate, _us
from squidmesh_backends.sqlite._operations import SqliteOperations
from squidmesh_core.codec import decode_run, encode_run
from squidmesh_core.commands import Decision
from squidmesh_core.errors import CommitError, DuplicateRun, StaleLease, VersionConflict
from squidmesh_core.explain import LeaseInfo
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jobwrites import job_writes
from squidmesh_core.jsonvalue import dump_json
from squidmesh_core.ports import Claim, Fence
from squidmesh_core.state import RunState

if TYPE_CHECKING:
    from squidmesh_backends.sqlite._transaction import SqliteStepTransaction

SCHEMA_VERSION = 3
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE squidmesh_runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version > 0),
    created_us INTEGER NOT NULL,
    idempotency_key TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX squidmesh_runs_idempotency
    ON squidmesh_runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX squidmesh_runs_listing ON squidmesh_runs (created_us DESC, id DESC);
CREATE INDEX squidmesh_runs_by_workflow ON squidmesh_runs (workflow, status, created_us DESC);
CREATE TABLE squidmesh_jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES squidmesh_runs (id) ON DELETE CASCADE,
    due_us INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires_us INTEGER,
    owner TEXT
);
CREATE INDEX squidmesh_jobs_claimable ON squidmesh_jobs (due_us, id);
"""

_MIGRATIONS = {
    1: _SCHEMA,
    # Version 2: claims take expired leases first, so leases need an index.
    2: """
CREATE INDEX squidmesh_jobs_leases ON squidmesh_jobs (lease_expires_us, id)
    WHERE lease_expires_us IS NOT NULL;
""",
    # Version 3: operator commands. Runs keep their last update in a column
    # (pruning by age; filled in from the bodies by ``_backfill_3``), jobs are
    # found by their run (pruning skips runs with jobs, deleting a run cascades
    # to its jobs, ``leases`` lists a run's), and workers report themselves.
    3: """
ALTER TABLE squidmesh_runs ADD COLUMN updated_us INTEGER;
CREATE INDEX squidmesh_runs_by_status ON squidmesh_runs (status, created_us, id);
CREATE INDEX squidmesh_jobs_by_run ON squidmesh_jobs (run_id);
CREATE TABLE squidmesh_workers (
    name TEXT PRIMARY KEY,
    first_seen_us INTEGER NOT NULL,
    last_seen_us INTEGER NOT NULL,
    stopped_us INTEGER,
    details TEXT NOT NULL
);
CREATE INDEX squidmesh_workers_seen ON squidmesh_workers (last_seen_us);
""",
}
"""The statements that bring a file from the version before each key to that key."""

_BACKFILL_CHUNK = 500
"""Runs ``_backfill_3`` reads at a time (their bodies are never all in memory)."""


def _backfill_3(conn: sqlite3.Connection) -> None:
    """Fill the last-update column of version 3 from the runs' bodies, a chunk at a time."""
    after = ""
    while True:
        rows = conn.execute(
            "SELECT id, body FROM squidmesh_runs WHERE id > ? ORDER BY id LIMIT ?",
            (after, _BACKFILL_CHUNK),
        ).fetchall()
        if not rows:
            return
        conn.executemany(
            "UPDATE squidmesh_runs SET updated_us = ? WHERE id = ?",
            [
                (_us(datetime.fromisoformat(json.loads(body)["updated_at"])), run_id)
                for run_id, body in rows
            ],
        )
        after = rows[-1][0]


_BACKFILLS: dict[int, Callable[[sqlite3.Connection], None]] = {3: _backfill_3}
"""Data changes a version needs after its statements, by version."""


def _too_new(path: str, version: int) -> MigrationRequiredError:
    return MigrationRequiredError(
        f"{path} has schema version {version}; this SquidMesh knows "
        f"{SCHEMA_VERSION}. Upgrade SquidMesh to open it."
    )


class SqliteRunStore(SqliteOperations):
    """A RunStore in one SQLite file. It passes ``RunStoreContract``."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: timedelta = timedelta(seconds=10),
        probe: Probe = NO_PROBE,
    ) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._opening = LoopLock()
        self._probe = probe

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the file, creating the schema in an empty database."""
        async with self._opening.get():
            if self._conn is None:
                self._conn = await asyncio.to_thread(self._connect_with_retry)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    async def watch(self, wake: Callable[[], None]) -> None:
        """SQLite has no notifications: other processes' jobs are found by polling."""

    def _connect_with_retry(self) -> sqlite3.Connection:
        # A fresh file being initialised by another process is briefly locked.
        deadline = time.monotonic() + self.busy_timeout.total_seconds()
        while True:
            try:
                return self._connect()
            except BackendUnavailableError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout.total_seconds(),
            )
        except sqlite3.Error as exc:
            raise BackendUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                # Another process may have migrated it meanwhile: read again, under the lock.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    conn.execute("ROLLBACK")
                    conn.close()
                    raise _too_new(self.path, version)
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                        conn.execute(statement)
                    if step in _BACKFILLS:
                        _BACKFILLS[step](conn)
                if version < SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            elif version > SCHEMA_VERSION:
                conn.close()
                raise _too_new(self.path, version)
            return conn
        except sqlite3.Error as exc:
            conn.close()
            raise BackendUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from exc

    # ---------------------------------------------------------------- plumbing

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            await self.open()
        conn = self._conn
        assert conn is not None

        def locked() -> T:
            with self._lock:
                return work(conn)

        return await asyncio.to_thread(locked)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise _translate(exc) from exc

    def _decode(self, body: str, run_id: str) -> RunState:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BackendError(f"stored run {run_id} is not JSON") from exc
        decoded = decode_run(data)
        if isinstance(decoded, Failure):
            raise BackendError(f"stored run {run_id} does not decode: {decoded.failure()}")
        return decoded.unwrap()

    def step_transaction(self) -> AbstractAsyncContextManager[SqliteStepTransaction]:
        """A transaction for one ``transaction=True`` step (see ``_transaction``)."""
        from squidmesh_backends.sqlite._transaction import step_transaction  # noqa: PLC0415

        return step_transaction(self)

    # ---------------------------------------------------------------- RunStore

    async def load(self, run_id: RunId) -> RunState | None:
        def work(conn: sqlite3.Connection) -> RunState | None:
            row = _query(conn, "SELECT body FROM squidmesh_runs WHERE id = ?", (run_id,)).fetchone()
            return None if row is None else self._decode(row[0], run_id)

        return await self._run(work)

    async def find_by_idempotency_key(self, workflow: str, key: IdempotencyKey) -> RunState | None:
        def work(conn: sqlite3.Connection) -> RunState | None:
            row = _query(
                conn,
                "SELECT id, body FROM squidmesh_runs WHERE workflow = ? AND idempotency_key = ?",
                (workflow, key),
            ).fetchone()
            return None if row is None else self._decode(row[1], row[0])

        return await self._run(work)

    async def latest_idempotency_key(self, workflow: str, prefix: str) -> IdempotencyKey | None:
        def work(conn: sqlite3.Connection) -> IdempotencyKey | None:
            # A range on the unique (workflow, idempotency_key) index: keys starting with prefix.
            row = _query(
                conn,
                "SELECT max(idempotency_key) FROM squidmesh_runs WHERE workflow = ?"
                " AND idempotency_key >= ? AND idempotency_key < ?",
                (workflow, prefix, prefix + "\U0010ffff"),
            ).fetchone()
            return None if row is None or row[0] is None else IdempotencyKey(row[0])

        return await self._run(work)

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        state = decision.state
        expected = decision.expected_version
        body = dump_json(encode_run(state))

        def work(conn: sqlite3.Connection) -> Result[None, CommitError]:
            try:
                with self._transaction(conn):
                    refused = self._write(conn, decision, body, expected, fence)
                    if refused is not None:
                        raise _Refused(refused)
            except _Refused as refusal:
                return Failure(refusal.error)
            self._probe.record(COMMITS)
            return Success(None)

        return await self._run(work)

    def _write(
        self,
        conn: sqlite3.Connection,
        decision: Decision,
        body: str,
        expected: int,
        fence: Fence | None,
    ) -> CommitError | None:
        state = decision.state
        if fence is not None:
            row = _query(
                conn, "SELECT lease_token FROM squidmesh_jobs WHERE id = ?", (fence.job_id,)
            ).fetchone()
            if row is None or row[0] != fence.lease_token:
                return StaleLease(job_id=fence.job_id)
            if fence.renew_until is not None:
                _query(
                    conn,
                    "UPDATE squidmesh_jobs SET lease_expires_us = ? WHERE id = ?",
                    (_us(fence.renew_until), fence.job_id),
                )
        if expected == 0:
            if _query(conn, "SELECT 1 FROM squidmesh_runs WHERE id = ?", (state.id,)).fetchone():
                return DuplicateRun(run_id=state.id, existing_run_id=state.id)
            if state.idempotency_key is not None:
                row = _query(
                    conn,
                    "SELECT id FROM squidmesh_runs WHERE workflow = ? AND idempotency_key = ?",
                    (state.workflow, state.idempotency_key),
                ).fetchone()
                if row is not None:
                    return DuplicateRun(run_id=state.id, existing_run_id=row[0])
            _query(
                conn,
                "INSERT INTO squidmesh_runs (id, workflow, status, version, created_us,"
                " updated_us, idempotency_key, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.id,
                    state.workflow,
                    state.status.value,
                    state.version,
                    _us(state.created_at),
                    _us(state.updated_at),
                    state.idempotency_key,
                    body,
                ),
            )
        else:
            updated = _query(
                conn,
                "UPDATE squidmesh_runs SET status = ?, version = ?, updated_us = ?, body = ?"
                " WHERE id = ? AND version = ?",
                (
                    state.status.value,
                    state.version,
                    _us(state.updated_at),
                    body,
                    state.id,
                    expected,
                ),
            )
            if updated.rowcount != 1:
                return VersionConflict(run_id=state.id, expected=expected)
        writes = job_writes(decision)
        for insert in writes.inserts:
            job, lease = insert.job, insert.lease
            _query(
                conn,
                "INSERT OR REPLACE INTO squidmesh_jobs"
                " (id, run_id, due_us, lease_token, lease_expires_us, owner)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.run_id,
                    _us(job.due_at),
                    None if lease is None else lease.token,
                    None if lease is None else _us(lease.until),
                    None if lease is None else lease.owner,
                ),
            )
        for move in writes.moves:
            _query(
                conn,
                "UPDATE squidmesh_jobs SET due_us = ? WHERE id = ?",
                (_us(move.due_at), move.job_id),
            )
        for job_id in writes.deletes:
            _query(conn, "DELETE FROM squidmesh_jobs WHERE id = ?", (job_id,))
        return None

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_for: timedelta,
        owner: str,
        mint: Callable[[], LeaseToken],
    ) -> Sequence[Claim]:
        now_us = _us(now)
        expires = now + lease_for

        def work(conn: sqlite3.Connection) -> list[Claim]:
            claims: list[Claim] = []
            with self._transaction(conn):
                # Reclaims first, then unleased jobs (the RunStore claim order).
                rows = _query(
                    conn,
                    "SELECT id, run_id FROM squidmesh_jobs WHERE lease_expires_us <= ?"
                    " AND due_us <= ? ORDER BY lease_expires_us, id LIMIT ?",
                    (now_us, now_us, max(limit, 0)),
                ).fetchall()
                if len(rows) < limit:
                    rows += _query(
                        conn,
                        "SELECT id, run_id FROM squidmesh_jobs WHERE lease_expires_us IS NULL"
                        " AND due_us <= ? ORDER BY due_us, id LIMIT ?",
                        (now_us, limit - len(rows)),
                    ).fetchall()
                for job_id, run_id in rows:
                    token = mint()
                    _query(
                        conn,
                        "UPDATE squidmesh_jobs SET lease_token = ?, lease_expires_us = ?, owner = ? WHERE id = ?",
                        (token, _us(expires), owner, job_id),
                    )
                    claims.append(
                        Claim(
                            job_id=JobId(job_id),
                            run_id=RunId(run_id),
                            lease_token=token,
                            lease_expires_at=expires,
                        )
                    )
            return claims

        return await self._run(work)

    async def claim_job(
        self,
        job_id: JobId,
        *,
        now: datetime,
        lease_for: timedelta,
        owner: str,
        lease_token: LeaseToken,
    ) -> Claim | None:
        now_us = _us(now)
        expires = now + lease_for

        def work(conn: sqlite3.Connection) -> Claim | None:
            with self._transaction(conn):
                row = _query(
                    conn,
                    "UPDATE squidmesh_jobs SET lease_token = ?, lease_expires_us = ?, owner = ?"
                    " WHERE id = ? AND due_us <= ? AND (lease_expires_us IS NULL OR lease_expires_us <= ?)"
                    " RETURNING run_id",
                    (lease_token, _us(expires), owner, job_id, now_us, now_us),
                ).fetchone()
            if row is None:
                return None
            return Claim(
                job_id=job_id,
                run_id=RunId(row[0]),
                lease_token=lease_token,
                lease_expires_at=expires,
            )

        return await self._run(work)

    async def heartbeat(self, job_id: JobId, lease_token: LeaseToken, *, until: datetime) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with self._transaction(conn):
                cursor = _query(
                    conn,
                    "UPDATE squidmesh_jobs SET lease_expires_us = ? WHERE id = ? AND lease_token = ?",
                    (_us(until), job_id, lease_token),
                )
            return cursor.rowcount == 1

        return await self._run(work)

    async def release(self, job_id: JobId, lease_token: LeaseToken) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with self._transaction(conn):
                cursor = _query(
                    conn,
                    "UPDATE squidmesh_jobs SET lease_token = NULL, lease_expires_us = NULL, owner = NULL"
                    " WHERE id = ? AND lease_token = ?",
                    (job_id, lease_token),
                )
            return cursor.rowcount == 1

        return await self._run(work)

    async def leases(self, run_id: RunId) -> Sequence[LeaseInfo]:
        def work(conn: sqlite3.Connection) -> list[LeaseInfo]:
            rows = _query(
                conn,
                "SELECT id, owner, lease_expires_us FROM squidmesh_jobs WHERE run_id = ?",
                (run_id,),
            ).fetchall()
            return [
                LeaseInfo(
                    job_id=JobId(r[0]), owner=r[1], expires_at=None if r[2] is None else _time(r[2])
                )
                for r in rows
            ]

        return await self._run(work)

    async def next_due_at(self) -> datetime | None:
        def work(conn: sqlite3.Connection) -> datetime | None:
            row = _query(
                conn,
                "SELECT MIN(MAX(due_us, COALESCE(lease_expires_us, due_us))) FROM squidmesh_jobs",
                (),
            ).fetchone()
            return None if row is None or row[0] is None else _time(row[0])

        return await self._run(work)


class _Refused(Exception):
    def __init__(self, error: CommitError) -> None:
        super().__init__(error)
        self.error = error
