"""What operators read about a store as a whole: its status snapshot and prune report.

Plain frozen values, no I/O and no clock: a store fills a :class:`StoreStatus`
for a ``now`` it is given (``RunStore.operations_status``), and the client's
``prune_runs`` answers with a :class:`PruneReport`.

Vocabulary (the words the snapshot's fields use):

* a job is **due** when it may be claimed now: its ``due_at`` has come and no
  live lease holds it (it has none, or its lease ended);
* a **live lease** ends after ``now``; an **expired lease** ended at or before
  ``now`` and nobody has claimed the job again since;
* a **worker** is a process that ran a ``Worker``: it writes a row when it
  starts, on every ``heartbeat_every`` while it runs and when it stops;
* a run is **prunable** when its status is one of those pruned, it was last
  updated before the cutoff, it has no jobs left and it is not a **kept cron
  run**: a run whose idempotency key is the greatest key (compared bytewise,
  as ``RunStore.latest_idempotency_key`` does) among its workflow's keys that
  begin like it with ``cron:<trigger>:`` (:func:`cron_tick_prefix`). The cron
  loop reads that key to know the last tick it started, so deleting the run
  would start the tick again. The rule holds for every such key in the store,
  whether or not the pruning application registers the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from squidmesh_core.cron import CRON_KEY_PREFIX
from squidmesh_core.ids import JobId, RunId
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.state import RunStatus

WORKERS_KEPT = timedelta(days=7)
"""Workers not seen for this long are forgotten when another one reports (every store)."""
EXPIRED_LEASES_SHOWN = 20
"""How many expired leases a :class:`StoreStatus` lists (the oldest ones)."""


def cron_tick_prefix(key: str | None) -> str | None:
    """The ``cron:<trigger>:`` a cron tick's idempotency key begins with, else ``None``.

    >>> cron_tick_prefix("cron:nightly:2026-03-29T01:00:00Z")
    'cron:nightly:'
    >>> cron_tick_prefix("cron:nightly") is None, cron_tick_prefix("order-7") is None
    (True, True)
    """
    if key is None or not key.startswith(CRON_KEY_PREFIX):
        return None
    end = key.find(":", len(CRON_KEY_PREFIX))
    return None if end < 0 else key[: end + 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCount:
    """How many runs of ``workflow`` are in ``status``."""

    workflow: str
    status: RunStatus
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiredLease:
    """A job whose lease ended at ``expired_at`` and that nobody has claimed since."""

    job_id: JobId
    run_id: RunId
    step: str
    owner: str | None
    """The worker that held the lease (its ``RuntimeSettings.owner``)."""
    expired_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSeen:
    """A worker as it last reported itself."""

    name: str
    first_seen: datetime
    last_seen: datetime
    stopped_at: datetime | None
    """When it said it stopped; ``None`` while it runs (or if it died without saying)."""
    details: JsonObject
    """What it said about itself: pid, host, executor, concurrency, workflows."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStatus:
    """A snapshot of a store: runs by workflow and status, the job queue, leases, workers."""

    runs: tuple[RunCount, ...]
    """Runs per (workflow, status), ordered by workflow, then status."""
    due_jobs: int
    """Jobs claimable now: due at or before ``now`` and held by no live lease."""
    oldest_due_at: datetime | None
    """The earliest ``due_at`` of those jobs (how far the queue lags)."""
    leased_jobs: int
    """Jobs held by a live lease (running, or about to)."""
    leases_expiring: int
    """Live leases ending within the window asked for (after ``now``, up to ``now + within``)."""
    leases_expired: int
    """Jobs whose lease ended at or before ``now`` and that nobody has claimed again."""
    expired_leases: tuple[ExpiredLease, ...]
    """The oldest expired leases (at most :data:`EXPIRED_LEASES_SHOWN`), oldest first."""
    workers: tuple[WorkerSeen, ...]
    """Workers seen since the time asked for, most recently seen first."""
    schema_version: int | None
    """The store's schema version (``None``: the store has none, as in memory)."""
    schema_expected: int | None
    """The schema version this SquidMesh works with (``None`` with ``schema_version``)."""

    @property
    def total_runs(self) -> int:
        """All runs counted in ``runs``."""
        return sum(c.count for c in self.runs)


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneCount:
    """What ``RunStore.count_prunable`` found: one read, no write."""

    matched: int
    """Prunable runs (see the module's vocabulary)."""
    kept_cron: int
    """Runs that would be prunable but are kept cron runs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What ``prune_runs`` did (or, on a dry run, would do)."""

    matched: int
    """Runs that matched when pruning began: old enough, in a pruned status, not kept."""
    deleted: int
    """Runs deleted (0 on a dry run)."""
    kept_cron: int
    """Runs that matched too but were kept as the newest tick run of a cron trigger."""
    dry_run: bool
    batches: int
    """Transactions that deleted runs (0 on a dry run)."""
