"""The client's operator commands over a whole store: its status, pruning, paged listings.

Rules:

1. **Status is a snapshot at the client's now.** ``store_status`` asks the store
   for :class:`~squidmesh_core.operations.StoreStatus` as of ``clock.now()``:
   leases ending within ``expiring_within`` count as expiring, workers seen
   within ``workers_within`` are listed.
2. **Pruning deletes finished runs only.** ``prune_runs`` refuses any status
   that is not terminal. By default it prunes ``completed``, ``cancelled`` and
   ``failed`` runs; ``compensation_failed`` runs are left alone unless named,
   since a person still has to look at what their compensation left behind.
3. **The newest tick run of every cron trigger stays.** A run whose
   idempotency key is the greatest ``cron:<trigger>:<tick>`` key of its
   workflow (bytewise) is kept, whatever its status and whether or not this
   application registers the workflow: the cron loop reads that key
   (``latest_idempotency_key``) to know the last tick it started, so deleting
   the run would start that tick again. A replay or a manual run of the
   trigger has no such key and displaces nothing. Every run with jobs stays too.
4. **Pruning goes in batches.** One count first (``count_prunable``: the
   report's ``matched`` and ``kept_cron``), then batches: each is one store
   transaction deleting at most ``batch_size`` runs, oldest first, so no
   transaction holds many locks for long. Batches run until one deletes
   nothing (a batch may come back short while runs remain, when another
   transaction holds some of them), and ``on_batch`` hears of each. A dry run
   only counts.
5. **Listings page by keyset.** ``list_runs`` takes ``after``, the id of the
   last run of the previous page, and returns the runs after it in the
   newest-first order (creation time, then id): strictly older ones. Paging so
   never skips or repeats a run however many are added meanwhile. An ``after``
   that names no run is refused (``InvalidOption``), as is a creation range
   whose ``created_after`` is not earlier than its ``created_before``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypedDict

from returns.result import Failure, Result, Success

from squidmesh_core.errors import InvalidOption
from squidmesh_core.ids import RunId, parse_run_id
from squidmesh_core.operations import PruneReport, StoreStatus
from squidmesh_core.ports import Clock, RunStore
from squidmesh_core.state import RunStatus

DEFAULT_PRUNE_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED)
"""What ``prune_runs`` deletes when no statuses are named (rule 2)."""
MAX_BATCH = 10_000
"""The largest ``batch_size`` (runs deleted in one transaction)."""


def _aware(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() is not None


async def store_status(
    store: RunStore, clock: Clock, *, expiring_within: timedelta, workers_within: timedelta
) -> StoreStatus:
    """The store's snapshot as of ``clock.now()`` (rule 1).

    Raises:
        ValueError: a window that is not a timedelta of zero or more.
    """
    for name, window in (("expiring_within", expiring_within), ("workers_within", workers_within)):
        if not isinstance(window, timedelta) or window < timedelta(0):
            raise ValueError(f"{name} must be a timedelta of zero or more, not {window!r}")
    now = clock.now()
    return await store.operations_status(
        now=now, expiring_within=expiring_within, workers_since=now - workers_within
    )


def prune_statuses(statuses: object) -> Result[frozenset[RunStatus], InvalidOption]:
    """The statuses to prune: the default ones, or those named if all are terminal (rule 2)."""
    if statuses is None:
        return Success(frozenset(DEFAULT_PRUNE_STATUSES))
    terminal = ", ".join(s.value for s in RunStatus if s.terminal)
    refused = InvalidOption(option="statuses", reason=f"must name finished statuses: {terminal}")
    if isinstance(statuses, str) or not isinstance(statuses, Iterable):
        return Failure(refused)
    wanted: set[RunStatus] = set()
    for value in statuses:
        try:
            status = RunStatus(value)
        except ValueError:
            return Failure(refused)
        if not status.terminal:
            return Failure(
                InvalidOption(
                    option="statuses",
                    reason=f"may not include {status.value}, which is not finished "
                    f"(finished statuses: {terminal})",
                )
            )
        wanted.add(status)
    return Success(frozenset(wanted)) if wanted else Failure(refused)


async def prune_runs(
    store: RunStore,
    clock: Clock,
    *,
    older_than: object,
    statuses: object,
    batch_size: object,
    dry_run: object,
    on_batch: Callable[[int], None] | None,
) -> Result[PruneReport, InvalidOption]:
    """Delete finished runs last updated more than ``older_than`` ago (rules 2-4)."""
    if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
        return Failure(InvalidOption(option="older_than", reason="must be a positive timedelta"))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        return Failure(InvalidOption(option="batch_size", reason="must be an integer"))
    if not 1 <= batch_size <= MAX_BATCH:
        return Failure(InvalidOption(option="batch_size", reason=f"must be from 1 to {MAX_BATCH}"))
    if not isinstance(dry_run, bool):
        return Failure(InvalidOption(option="dry_run", reason="must be True or False"))
    wanted = prune_statuses(statuses)
    if isinstance(wanted, Failure):
        return wanted
    chosen = wanted.unwrap()
    cutoff = clock.now() - older_than
    counted = await store.count_prunable(finished_before=cutoff, statuses=chosen)
    deleted = batches = 0
    while not dry_run:
        gone = await store.prune_runs(
            finished_before=cutoff, statuses=chosen, limit=batch_size, dry_run=False
        )
        if gone == 0:
            break
        deleted += gone
        batches += 1
        if on_batch is not None:
            on_batch(gone)
    return Success(
        PruneReport(
            matched=counted.matched,
            deleted=deleted,
            kept_cron=counted.kept_cron,
            dry_run=dry_run,
            batches=batches,
        )
    )


class ListQuery(TypedDict):
    """The checked filters of a listing, as ``RunStore.list_runs`` takes them (but ``workflow``)."""

    status: RunStatus | None
    limit: int
    created_after: datetime | None
    created_before: datetime | None
    before: tuple[datetime, RunId] | None


async def listing(
    store: RunStore,
    *,
    limit: object,
    max_limit: int,
    status: object,
    created_after: object,
    created_before: object,
    after: object,
) -> Result[ListQuery, InvalidOption]:
    """Check a listing's options and find its keyset cursor (rule 5)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_limit:
        return Failure(
            InvalidOption(option="limit", reason=f"must be an integer from 1 to {max_limit}")
        )
    known = [s.value for s in RunStatus]
    if status is not None and (not isinstance(status, str) or status not in known):
        return Failure(InvalidOption(option="status", reason=f"must be one of {', '.join(known)}"))
    wanted = None if status is None else RunStatus(status)
    bounds = _time_range(created_after, created_before)
    if isinstance(bounds, Failure):
        return bounds
    cursor = await _cursor(store, after)
    if isinstance(cursor, Failure):
        return cursor
    since, until = bounds.unwrap()
    return Success(
        ListQuery(
            status=wanted,
            limit=limit,
            created_after=since,
            created_before=until,
            before=cursor.unwrap(),
        )
    )


async def _cursor(
    store: RunStore, after: object
) -> Result[tuple[datetime, RunId] | None, InvalidOption]:
    """The keyset cursor ``after`` names: that run's creation time and id."""
    if after is None:
        return Success(None)
    parsed = parse_run_id(after) if isinstance(after, str) else None
    if parsed is None or isinstance(parsed, Failure):
        return Failure(InvalidOption(option="after", reason="must be a run id"))
    run = await store.load(parsed.unwrap())
    if run is None:
        return Failure(InvalidOption(option="after", reason=f"names no run: {after}"))
    return Success((run.created_at, run.id))


def _time_range(
    created_after: object, created_before: object
) -> Result[tuple[datetime | None, datetime | None], InvalidOption]:
    """Checked creation-time bounds: timezone-aware, the first earlier than the second."""
    for option, value in (("created_after", created_after), ("created_before", created_before)):
        if value is not None and not _aware(value):
            return Failure(
                InvalidOption(option=option, reason="must be a datetime with a timezone")
            )
    since = created_after if isinstance(created_after, datetime) else None
    until = created_before if isinstance(created_before, datetime) else None
    if since is not None and until is not None and since >= until:
        return Failure(
            InvalidOption(option="created_after", reason="must be earlier than created_before")
        )
    return Success((since, until))
