"""Ports: the Protocols the shell's adapters implement.

The core never calls these; it declares them so every adapter, the runtime and
the contract suites in :mod:`squidmesh_core.testing.contracts` agree on one
definition. Each docstring states the promise the contract suite checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from returns.result import Result

from squidmesh_core.commands import Decision, Emit
from squidmesh_core.errors import CommitError, NotFound, Rejected
from squidmesh_core.explain import LeaseInfo
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.operations import PruneCount, StoreStatus
from squidmesh_core.state import RunState, RunStatus


class Clock(Protocol):
    """The runtime's source of time (UTC, timezone-aware)."""

    def now(self) -> datetime:
        """Current time."""
        ...


class IdSource(Protocol):
    """Mints run ids and lease tokens."""

    def new_run_id(self) -> RunId:
        """A fresh canonical UUID string."""
        ...

    def new_lease_token(self) -> LeaseToken:
        """A fresh, unguessable lease token matching ``ids.LEASE_TOKEN_PATTERN``.

        Letters, digits and ``_.:-``, at most 128 characters: workers refuse
        any other token as forged (a ``Worker`` checks one when it is built).
        """
        ...


class EventSink(Protocol):
    """Receives every emitted event after its commit. Exceptions are logged, never propagated."""

    def publish(self, event: Emit) -> None:
        """Handle one event."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """A commit is valid only while ``lease_token`` is the current lease of ``job_id``.

    With ``renew_until`` the same commit also extends that lease to ``renew_until``:
    a delivery that waited in a broker starts its attempt on a fresh lease, in the
    transaction that records the start, so nobody can reclaim it in between.
    (A lease on a job the commit *inserts* travels with its ``ScheduleJob``.)
    """

    job_id: JobId
    lease_token: LeaseToken
    renew_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A due job leased to a worker until ``lease_expires_at``."""

    job_id: JobId
    run_id: RunId
    lease_token: LeaseToken
    lease_expires_at: datetime


class StepTransaction(Protocol):
    """An open transaction of the store's database, held for one transactional step.

    The step writes through ``connection``; ``commit_outcome`` then decides the
    step's outcome on the run as stored *inside this transaction* (its row
    locked, so nothing can change it meanwhile), writes the decision fenced by
    the lease, and commits the step's writes and the outcome together. Leaving
    the ``step_transaction`` block without a committed outcome rolls every
    write back.
    """

    @property
    def connection(self) -> object:
        """The driver's connection the step writes through (in the transaction)."""
        ...

    @property
    def aborted(self) -> bool:
        """Whether an error the step caught left the transaction able only to roll back."""
        ...

    def abandon(self) -> None:
        """The step was stopped but may still run: never let its connection write again."""
        ...

    async def commit_outcome(
        self,
        run_id: RunId,
        decide_on: Callable[[RunState], Result[Decision, Rejected]],
        *,
        fence: Fence,
    ) -> Result[Decision, Rejected | CommitError | NotFound]:
        """Decide on the locked run, write the decision and commit (or roll back and refuse)."""
        ...


class TransactionalStore(Protocol):
    """A store that can hand a step a transaction (PostgreSQL, SQLite)."""

    def step_transaction(self) -> AbstractAsyncContextManager[StepTransaction]:
        """Open a connection and begin a transaction for one step attempt."""
        ...


class RunStore(Protocol):
    """Durable home of runs and their jobs: the only source of truth.

    Promises (checked by ``RunStoreContract``):

    * ``commit`` is atomic: the run state and every job command of the decision
      are written together or not at all. It inserts when
      ``decision.expected_version == 0`` and otherwise replaces the stored run
      only if its version equals ``expected_version``.
    * ``commit`` refuses with ``DuplicateRun`` (run id or idempotency key taken
      for the workflow), ``VersionConflict`` or ``StaleLease`` (``fence`` given
      and no longer the job's lease) and then writes nothing. A fence with
      ``renew_until`` extends the lease in the same transaction.
    * ``claim_due`` leases each due job to exactly one caller: a job is due when
      ``due_at <= now`` and it has no lease or its lease expired. Every claim
      mints a new token (through the caller's ``mint`` function). Reclaims
      come first: jobs whose lease expired (earliest expiry first), then
      unleased jobs (earliest due first), so a job whose worker died is taken
      over at the next claim after its lease ends, however long the backlog.
    * ``claim_job`` leases one named job under the same rule, or returns ``None``.
    * ``heartbeat`` and ``release`` act only for the current lease holder.
    * Job rows are written as :func:`squidmesh_core.jobwrites.job_writes` says;
      a ``ScheduleJob`` with a lease inserts its job already leased.
    * ``open`` may be called again after ``close``; ``watch`` returns at once when
      nothing outside this process can make jobs due.
    * ``list_runs`` pages newest first: ``before`` is a keyset cursor, the
      ``(created_at, id)`` of the last run of the previous page.
    * ``prune_runs`` deletes whole runs (every row keyed by the run goes with it),
      never one that still has jobs nor a cron trigger's newest tick run (the
      run holding the key ``latest_idempotency_key`` answers); a later ``load``
      gives ``None``.
    * Faults (database gone) raise ``BackendError`` subclasses; nothing else escapes.
    """

    async def open(self) -> None:
        """Acquire resources (connections, files); safe to call when already open."""
        ...

    async def close(self) -> None:
        """Release resources; a later ``open`` makes the store usable again."""
        ...

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever jobs may have become due elsewhere, until cancelled.

        Stores shared by several processes (PostgreSQL's LISTEN/NOTIFY) use it so
        a dispatcher wakes early instead of waiting for its next poll. A notice is
        only a hint: dispatchers still poll, so lost notices cost latency, not
        runs. A store no other process writes returns at once.
        """
        ...

    async def load(self, run_id: RunId) -> RunState | None:
        """The run, or ``None`` if it does not exist."""
        ...

    async def find_by_idempotency_key(self, workflow: str, key: IdempotencyKey) -> RunState | None:
        """The run started for ``workflow`` with ``key``, if any."""
        ...

    async def latest_idempotency_key(self, workflow: str, prefix: str) -> IdempotencyKey | None:
        """The greatest idempotency key of ``workflow`` that starts with ``prefix``, if any.

        Cron triggers key each run by ``cron:<trigger>:<tick in UTC>``, so this is
        the newest tick already started.
        """
        ...

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        """Write the decision's state and job commands atomically (see class docs)."""
        ...

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_for: timedelta,
        owner: str,
        mint: Callable[[], LeaseToken],
    ) -> Sequence[Claim]:
        """Lease up to ``limit`` due jobs, earliest ``due_at`` first."""
        ...

    async def claim_job(
        self,
        job_id: JobId,
        *,
        now: datetime,
        lease_for: timedelta,
        owner: str,
        lease_token: LeaseToken,
    ) -> Claim | None:
        """Lease this one job if it is due and unleased (or its lease expired); else ``None``.

        The worker that just committed a step's outcome uses it to run the next
        step itself (the inline fast path) instead of waiting for a dispatcher.
        """
        ...

    async def heartbeat(self, job_id: JobId, lease_token: LeaseToken, *, until: datetime) -> bool:
        """Extend the lease to ``until``; ``False`` if the token is no longer current."""
        ...

    async def release(self, job_id: JobId, lease_token: LeaseToken) -> bool:
        """End the lease now so another worker may claim the job; ``False`` if not held."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest time a job becomes claimable (due time or lease expiry), if any."""
        ...

    async def leases(self, run_id: RunId) -> Sequence[LeaseInfo]:
        """The current lease (holder and expiry) of each live job of the run, leased or not."""
        ...

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
        """Runs matching the filters, newest first (creation time, then id).

        ``created_after`` and ``created_before`` bound the creation time (at or
        after the one, strictly before the other); ``before`` keeps only runs
        strictly older than ``(created_at, id)`` in that order (the next page).
        """
        ...

    async def record_worker(
        self, name: str, *, at: datetime, details: JsonObject, stopped: bool = False
    ) -> None:
        """Record that worker ``name`` was alive at ``at`` (or, with ``stopped``, stopped then).

        An upsert: the first sighting is kept, ``last_seen`` becomes ``at``,
        ``details`` are replaced, ``stopped_at`` is ``at`` when ``stopped`` and
        cleared otherwise. Workers not seen for 7 days before ``at`` are deleted.
        """
        ...

    async def operations_status(
        self, *, now: datetime, expiring_within: timedelta, workers_since: datetime
    ) -> StoreStatus:
        """A snapshot of runs, jobs, leases and workers as of ``now`` (see ``StoreStatus``).

        A store that compares due times with its own clock (PostgreSQL with
        ``clock="database"``) uses that clock for the job counts, as its claims do.
        """
        ...

    async def count_prunable(
        self, *, finished_before: datetime, statuses: Collection[RunStatus]
    ) -> PruneCount:
        """Count the runs ``prune_runs`` would delete without a limit, and the kept cron runs.

        A run is prunable when its status is in ``statuses``, it was last
        updated before ``finished_before``, it has no jobs and it is not a kept
        cron run: one whose idempotency key is the greatest key of its workflow
        beginning with the same ``cron:<trigger>:`` (bytewise, as
        ``latest_idempotency_key`` compares). ``kept_cron`` counts the runs that
        would be prunable but for that last rule. One read; it takes no write lock.
        """
        ...

    async def prune_runs(
        self,
        *,
        finished_before: datetime,
        statuses: Collection[RunStatus],
        limit: int | None,
        dry_run: bool,
    ) -> int:
        """Delete (with ``dry_run``, only count) the prunable runs (see ``count_prunable``).

        Never a kept cron run, never a run with jobs. With ``limit``, at most
        that many runs go, oldest first (creation time, then id). A deletion is
        one short transaction; a dry run only reads. Returns how many runs were
        (or would be) deleted; a deletion may return fewer than ``limit`` while
        prunable runs remain (rows locked by another transaction are skipped),
        so callers delete until a call returns 0.
        """
        ...


JobHandler = Callable[[JobId, LeaseToken], Awaitable[None]]
"""What an executor calls for each submitted job."""


class RefusalReason(StrEnum):
    """Why a worker refused a message (stable codes, logged and published)."""

    OVERSIZED = "oversized"
    """Larger than any message SquidMesh publishes; not even parsed."""
    NO_DATA = "no_data"
    """A broker entry without a message in it."""
    UNPARSEABLE = "unparseable"
    """Not a message the broker's format can read."""
    UNKNOWN_TASK = "unknown_task"
    """A message for another task than SquidMesh's."""
    BAD_LABELS = "bad_labels"
    """Labels SquidMesh never sets (``ack_type``: acknowledgement is SquidMesh's call)."""
    BAD_ARGUMENTS = "bad_arguments"
    """Anything but two positional strings."""
    INVALID_JOB_ID = "invalid_job_id"
    """A job id that does not parse (see ``parse_job_id``)."""
    INVALID_LEASE_TOKEN = "invalid_lease_token"
    """A lease token no id source could mint (see ``parse_lease_token``)."""
    UNKNOWN_RUN = "unknown_run"
    """A well-formed job id whose run does not exist."""


class Refused(Protocol):
    """What an executor calls for a message it refused: a reason code and what came in."""

    def __call__(self, reason: RefusalReason, received: object, *, job_id: object = None) -> None:
        """Report one refused message (``job_id``: the id it named, if it named one)."""
        ...


def ignore_refusal(reason: RefusalReason, received: object, *, job_id: object = None) -> None:
    """The default ``Refused``: drop the report."""


class Executor(Protocol):
    """Runs submitted jobs, with bounded concurrency.

    Promises (checked by ``ExecutorContract``): every submitted ``(job_id,
    lease_token)`` reaches the handler given to ``start`` at least once, with
    nothing but those two strings; no more than ``capacity`` handlers run at once;
    ``stop`` stops accepting work and waits up to ``timeout`` for running handlers.
    """

    @property
    def capacity(self) -> int:
        """How many jobs run at once at most."""
        ...

    @property
    def free_slots(self) -> int:
        """How many more jobs could start now."""
        ...

    async def start(
        self,
        handler: JobHandler,
        *,
        slot_freed: Callable[[], None] = lambda: None,
        refused: Refused = ignore_refusal,
    ) -> None:
        """Begin accepting jobs; call ``slot_freed`` whenever a job this process ran ends.

        An executor that receives from a transport others can write to (a broker)
        reports each message that is not a ``(job_id, lease_token)`` pair it could
        have been given through ``refused`` (a reason code and what came in) and
        drops it; the pair itself is checked by the handler.
        """
        ...

    async def submit(self, job_id: JobId, lease_token: LeaseToken) -> None:
        """Hand over one job; returns once accepted (not when done)."""
        ...

    async def stop(self, *, timeout: timedelta) -> Sequence[tuple[JobId, LeaseToken]]:
        """Stop; return the jobs that were accepted but not finished in time."""
        ...
