"""``MemoryRunStore``: the RunStore promises, kept in dictionaries.

Runs are stored encoded (through the core codec) and decoded on every load, so
callers never share mutable objects with the store and the codec is exercised
as with a durable store. Every method body runs without awaiting, so on one
event loop each call is atomic.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import BackendError
from squidmesh_backends.probe import COMMITS, NO_PROBE, Probe
from squidmesh_core.codec import decode_run, encode_run
from squidmesh_core.commands import Decision
from squidmesh_core.errors import CommitError, DuplicateRun, StaleLease, VersionConflict
from squidmesh_core.explain import LeaseInfo
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId, parse_job_id
from squidmesh_core.jobwrites import job_writes
from squidmesh_core.jsonvalue import JsonObject, JsonValue
from squidmesh_core.operations import (
    EXPIRED_LEASES_SHOWN,
    WORKERS_KEPT,
    ExpiredLease,
    PruneCount,
    RunCount,
    StoreStatus,
    WorkerSeen,
    cron_tick_prefix,
)
from squidmesh_core.ports import Claim, Fence
from squidmesh_core.state import RunState, RunStatus


@dataclass(slots=True)
class _JobRow:
    job_id: JobId
    run_id: RunId
    due_at: datetime
    lease_token: LeaseToken | None = None
    lease_expires_at: datetime | None = None
    owner: str | None = None

    def claimable_at(self) -> datetime:
        if self.lease_expires_at is None:
            return self.due_at
        return max(self.due_at, self.lease_expires_at)


def _claim_order(row: _JobRow) -> tuple[int, datetime, JobId]:
    """Reclaims first, by lease expiry; then unleased jobs, by due time (``RunStore``)."""
    if row.lease_expires_at is not None:
        return (0, row.lease_expires_at, row.job_id)
    return (1, row.due_at, row.job_id)


@dataclass(slots=True)
class _RunRow:
    body: dict[str, JsonValue]
    workflow: str
    status: RunStatus
    version: int
    created_at: datetime
    run_id: RunId
    updated_at: datetime


class MemoryRunStore:
    """A RunStore in process memory. Supported, not a fake: it passes ``RunStoreContract``."""

    def __init__(self, *, probe: Probe = NO_PROBE) -> None:
        self._runs: dict[RunId, _RunRow] = {}
        self._jobs: dict[JobId, _JobRow] = {}
        self._keys: dict[tuple[str, IdempotencyKey], RunId] = {}
        self._workers: dict[str, WorkerSeen] = {}
        self._probe = probe

    async def __aenter__(self) -> MemoryRunStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def open(self) -> None:
        """Nothing to acquire."""

    async def close(self) -> None:
        """Nothing to release: the runs stay in memory."""

    async def watch(self, wake: Callable[[], None]) -> None:
        """Nothing outside this process writes here: returns at once."""

    def _decode(self, row: _RunRow) -> RunState:
        decoded = decode_run(row.body)
        if isinstance(decoded, Failure):
            raise BackendError(f"stored run {row.run_id} does not decode: {decoded.failure()}")
        return decoded.unwrap()

    async def load(self, run_id: RunId) -> RunState | None:
        row = self._runs.get(run_id)
        return None if row is None else self._decode(row)

    async def find_by_idempotency_key(self, workflow: str, key: IdempotencyKey) -> RunState | None:
        run_id = self._keys.get((workflow, key))
        return None if run_id is None else await self.load(run_id)

    async def latest_idempotency_key(self, workflow: str, prefix: str) -> IdempotencyKey | None:
        keys = [k for (w, k) in self._keys if w == workflow and k.startswith(prefix)]
        return max(keys, default=None)

    def _refusal(self, decision: Decision, fence: Fence | None) -> CommitError | None:
        """Why the commit must write nothing: a lost lease, a taken id or key, a stale version."""
        state, expected = decision.state, decision.expected_version
        if fence is not None:
            row = self._jobs.get(fence.job_id)
            if row is None or row.lease_token != fence.lease_token:
                return StaleLease(job_id=fence.job_id)
        if expected != 0:
            current = self._runs.get(state.id)
            if current is None or current.version != expected:
                return VersionConflict(run_id=state.id, expected=expected)
            return None
        if state.id in self._runs:
            return DuplicateRun(run_id=state.id, existing_run_id=state.id)
        if state.idempotency_key is not None:
            existing = self._keys.get((state.workflow, state.idempotency_key))
            if existing is not None:
                return DuplicateRun(run_id=state.id, existing_run_id=existing)
        return None

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        state = decision.state
        expected = decision.expected_version
        refused = self._refusal(decision, fence)
        if refused is not None:
            return Failure(refused)
        self._runs[state.id] = _RunRow(
            body=encode_run(state),
            workflow=state.workflow,
            status=state.status,
            version=state.version,
            created_at=state.created_at,
            run_id=state.id,
            updated_at=state.updated_at,
        )
        if expected == 0 and state.idempotency_key is not None:
            self._keys[(state.workflow, state.idempotency_key)] = state.id
        if fence is not None and fence.renew_until is not None:
            self._jobs[fence.job_id].lease_expires_at = fence.renew_until
        writes = job_writes(decision)
        for insert in writes.inserts:
            job, lease = insert.job, insert.lease
            self._jobs[job.id] = _JobRow(
                job_id=job.id,
                run_id=job.run_id,
                due_at=job.due_at,
                lease_token=None if lease is None else lease.token,
                lease_expires_at=None if lease is None else lease.until,
                owner=None if lease is None else lease.owner,
            )
        for move in writes.moves:
            if move.job_id in self._jobs:
                self._jobs[move.job_id].due_at = move.due_at
        for job_id in writes.deletes:
            self._jobs.pop(job_id, None)
        self._probe.record(COMMITS)
        return Success(None)

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_for: timedelta,
        owner: str,
        mint: Callable[[], LeaseToken],
    ) -> Sequence[Claim]:
        due = sorted(
            (r for r in self._jobs.values() if r.claimable_at() <= now),
            key=_claim_order,
        )
        claims: list[Claim] = []
        for row in due[: max(limit, 0)]:
            row.lease_token = mint()
            row.lease_expires_at = now + lease_for
            row.owner = owner
            claims.append(
                Claim(
                    job_id=row.job_id,
                    run_id=row.run_id,
                    lease_token=row.lease_token,
                    lease_expires_at=row.lease_expires_at,
                )
            )
        return claims

    async def claim_job(
        self,
        job_id: JobId,
        *,
        now: datetime,
        lease_for: timedelta,
        owner: str,
        lease_token: LeaseToken,
    ) -> Claim | None:
        row = self._jobs.get(job_id)
        if row is None or row.claimable_at() > now:
            return None
        row.lease_token = lease_token
        row.lease_expires_at = now + lease_for
        row.owner = owner
        return Claim(
            job_id=row.job_id,
            run_id=row.run_id,
            lease_token=lease_token,
            lease_expires_at=row.lease_expires_at,
        )

    async def heartbeat(self, job_id: JobId, lease_token: LeaseToken, *, until: datetime) -> bool:
        row = self._jobs.get(job_id)
        if row is None or row.lease_token != lease_token:
            return False
        row.lease_expires_at = until
        return True

    async def release(self, job_id: JobId, lease_token: LeaseToken) -> bool:
        row = self._jobs.get(job_id)
        if row is None or row.lease_token != lease_token:
            return False
        row.lease_token = None
        row.lease_expires_at = None
        row.owner = None
        return True

    async def leases(self, run_id: RunId) -> Sequence[LeaseInfo]:
        return [
            LeaseInfo(job_id=r.job_id, owner=r.owner, expires_at=r.lease_expires_at)
            for r in self._jobs.values()
            if r.run_id == run_id
        ]

    async def next_due_at(self) -> datetime | None:
        return min((r.claimable_at() for r in self._jobs.values()), default=None)

    async def list_runs(
        self,
        *,
        workflow: str | None,
        status: RunStatus | None,
        limit: int,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before: tuple[datetime, RunId] | None = None,
    ) -> Sequence[RunState]:
        rows = [
            r
            for r in self._runs.values()
            if (workflow is None or r.workflow == workflow)
            and (status is None or r.status == status)
            and (created_after is None or r.created_at >= created_after)
            and (created_before is None or r.created_at < created_before)
            and (before is None or (r.created_at, r.run_id) < before)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [self._decode(r) for r in rows[: max(limit, 0)]]

    # ---------------------------------------------------------------- operations

    async def record_worker(
        self, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        seen = self._workers.get(name)
        self._workers[name] = WorkerSeen(
            name=name,
            first_seen=at if seen is None else seen.first_seen,
            last_seen=at,
            stopped_at=at if stopped else None,
            details=dict(details),
        )
        for old in [w for w in self._workers.values() if w.last_seen < at - WORKERS_KEPT]:
            del self._workers[old.name]

    async def operations_status(
        self, *, now: datetime, expiring_within: timedelta, workers_since: datetime
    ) -> StoreStatus:
        counts: dict[tuple[str, RunStatus], int] = {}
        for row in self._runs.values():
            counts[row.workflow, row.status] = counts.get((row.workflow, row.status), 0) + 1
        jobs = self._jobs.values()
        due = [j.due_at for j in jobs if j.claimable_at() <= now]
        ends = [(j.lease_expires_at, j) for j in jobs if j.lease_expires_at is not None]
        live = [end for end, _ in ends if end > now]
        expired = sorted(((end, j.job_id), j) for end, j in ends if end <= now)
        workers = sorted(
            (w for w in self._workers.values() if w.last_seen >= workers_since),
            key=lambda w: (w.last_seen, w.name),
            reverse=True,
        )
        return StoreStatus(
            runs=tuple(
                RunCount(workflow=w, status=s, count=n) for (w, s), n in sorted(counts.items())
            ),
            due_jobs=len(due),
            oldest_due_at=min(due, default=None),
            leased_jobs=len(live),
            leases_expiring=sum(1 for end in live if end <= now + expiring_within),
            leases_expired=len(expired),
            expired_leases=tuple(_expired(j) for _, j in expired[:EXPIRED_LEASES_SHOWN]),
            workers=tuple(workers),
            schema_version=None,
            schema_expected=None,
        )

    def _prunable(
        self, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> tuple[list[_RunRow], int]:
        """The prunable runs oldest first, and how many more are kept cron runs."""
        newest: dict[tuple[str, str], IdempotencyKey] = {}
        for workflow, key in self._keys:
            prefix = cron_tick_prefix(key)
            if prefix is not None:
                # str order is code point order: UTF-8 bytewise, as the SQL stores compare
                newest[workflow, prefix] = max(newest.get((workflow, prefix), key), key)
        kept = {self._keys[workflow, key] for (workflow, _), key in newest.items()}
        busy = {j.run_id for j in self._jobs.values()}
        found = [
            r
            for r in self._runs.values()
            if r.status in statuses and r.updated_at < finished_before and r.run_id not in busy
        ]
        found.sort(key=lambda r: (r.created_at, r.run_id))
        doomed = [r for r in found if r.run_id not in kept]
        return doomed, len(found) - len(doomed)

    async def count_prunable(
        self, *, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> PruneCount:
        doomed, kept = self._prunable(finished_before, statuses)
        return PruneCount(matched=len(doomed), kept_cron=kept)

    async def prune_runs(
        self,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        doomed, _ = self._prunable(finished_before, statuses)
        if limit is not None:
            doomed = doomed[: max(limit, 0)]
        if not dry_run:
            for row in doomed:
                del self._runs[row.run_id]
            gone = {r.run_id for r in doomed}
            for key in [k for k, run in self._keys.items() if run in gone]:
                del self._keys[key]
        return len(doomed)


def _expired(row: _JobRow) -> ExpiredLease:
    assert row.lease_expires_at is not None
    key = parse_job_id(row.job_id).value_or(None)
    return ExpiredLease(
        job_id=row.job_id,
        run_id=row.run_id,
        step="" if key is None else key.step,
        owner=row.owner,
        expired_at=row.lease_expires_at,
    )
