"""``OperationsContract``: the operator queries every RunStore answers the same way.

Part of :class:`~squidmesh_core.testing.contracts.RunStoreContract` (which
inherits it): the status snapshot, workers seen, pruning, paged listings and the
worker recorded on each attempt.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from squidmesh_core.commands import Lease
from squidmesh_core.decide import decide
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.events import CancelRequested, StepSucceeded
from squidmesh_core.handoff import decide_outcome
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.operations import ExpiredLease, RunCount, StoreStatus
from squidmesh_core.ports import Fence, RunStore
from squidmesh_core.state import RunState, RunStatus
from squidmesh_core.testing.contracts._kit import (
    FLOW,
    LEASE,
    OTHER,
    T0,
    committed,
    deliver,
    new_run,
    run_id,
)

DAY = timedelta(days=1)
FINISHED = frozenset({RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED})


async def cancelled(
    store: RunStore,
    n: int,
    at: datetime,
    *,
    key: str | None = None,
    definition: WorkflowDefinition = FLOW,
) -> RunState:
    """Run ``n`` created and cancelled at ``at`` (finished, no jobs left)."""
    state = await committed(store, new_run(n, at=at, key=key, definition=definition))
    return await committed(store, decide(definition, state, CancelRequested(), now=at).unwrap())


async def completed(store: RunStore, n: int, at: datetime) -> RunState:
    """Run ``n`` of ``OTHER`` created at ``at`` and completed then (one attempt recorded)."""
    state = await committed(store, new_run(n, at=at, definition=OTHER))
    state, token = await deliver(store, state, at, definition=OTHER, worker="contract-worker")
    only = JobId(f"{state.id}/only/1")
    done = decide(
        OTHER, state, StepSucceeded(job_id=only, lease_token=token, output={}), now=at
    ).unwrap()
    return await committed(store, done, Fence(job_id=only, lease_token=token))


async def status(store: RunStore, now: datetime, *, since: datetime | None = None) -> StoreStatus:
    return await store.operations_status(
        now=now, expiring_within=timedelta(seconds=20), workers_since=since or now - DAY
    )


async def prune(
    store: RunStore,
    *,
    before: datetime = T0 + DAY,
    statuses: frozenset[RunStatus] = FINISHED,
    limit: int | None = None,
    dry_run: bool = False,
) -> int:
    return await store.prune_runs(
        finished_before=before, statuses=statuses, limit=limit, dry_run=dry_run
    )


async def counted(
    store: RunStore, *, before: datetime = T0 + DAY, statuses: frozenset[RunStatus] = FINISHED
) -> tuple[int, int]:
    """``count_prunable`` as ``(matched, kept_cron)``."""
    found = await store.count_prunable(finished_before=before, statuses=statuses)
    return found.matched, found.kept_cron


def tick(trigger: str, hour: int) -> str:
    """The idempotency key the cron loop gives ``trigger``'s tick at ``hour`` on the first."""
    return f"cron:{trigger}:2026-01-01T{hour:02d}:00:00Z"


async def present(store: RunStore, *numbers: int) -> list[int]:
    """Which of the runs ``numbers`` still load."""
    return [n for n in numbers if await store.load(run_id(n)) is not None]


class OperationsContract:
    """Every RunStore passes these. Subclass and provide a ``run_store`` fixture."""

    # ---------------------------------------------------------------- attempts

    async def test_an_attempt_records_the_worker_that_ran_it(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        state, token = await deliver(run_store, state, T0, worker="worker-a")
        first, pause = JobId(f"{state.id}/first/1"), JobId(f"{state.id}/pause/1")
        handed = Lease(token=LeaseToken("next"), until=T0 + LEASE, owner="worker-b")
        succeeded = StepSucceeded(job_id=first, lease_token=token, output={})
        both = decide_outcome(FLOW, state, succeeded, now=T0, next_lease=handed).unwrap()
        await committed(run_store, both, Fence(job_id=first, lease_token=token))
        loaded = await run_store.load(state.id)
        assert loaded == both.state
        workers = {s.step: [a.worker for a in s.attempts] for s in loaded.steps}
        assert workers == {"first": ["worker-a"], "pause": ["worker-b"]}
        assert (await run_store.leases(state.id))[0].job_id == pause

    # ---------------------------------------------------------------- status

    async def test_the_status_counts_runs_by_workflow_and_status(self, run_store: RunStore) -> None:
        await committed(run_store, new_run(1))
        await committed(run_store, new_run(2, at=T0 + timedelta(seconds=1)))
        await committed(run_store, new_run(3, definition=OTHER))
        await cancelled(run_store, 4, T0)
        found = await status(run_store, T0 + timedelta(minutes=1))
        assert found.runs == (
            RunCount(workflow=FLOW.name, status=RunStatus.CANCELLED, count=1),
            RunCount(workflow=FLOW.name, status=RunStatus.PENDING, count=2),
            RunCount(workflow=OTHER.name, status=RunStatus.PENDING, count=1),
        )
        assert found.total_runs == 4

    async def test_an_empty_store_has_an_empty_status(self, run_store: RunStore) -> None:
        found = await status(run_store, T0)
        assert (found.runs, found.due_jobs, found.oldest_due_at) == ((), 0, None)
        assert (found.leased_jobs, found.leases_expiring, found.leases_expired) == (0, 0, 0)
        assert (found.expired_leases, found.workers) == ((), ())

    async def test_the_status_reports_due_jobs_and_live_expiring_and_expired_leases(
        self, run_store: RunStore
    ) -> None:
        # given: two unleased due jobs, one live lease, one expired lease, one future job
        await committed(run_store, new_run(1))
        await committed(run_store, new_run(2, at=T0 + timedelta(seconds=10)))
        held = await committed(run_store, new_run(3, definition=OTHER))
        lapsed = await committed(run_store, new_run(4, at=T0 - timedelta(minutes=2)))
        await committed(run_store, new_run(5, at=T0 + timedelta(hours=1)))
        for state, at, owner in ((held, T0, "w-live"), (lapsed, lapsed.created_at, "w-gone")):
            claimed = await run_store.claim_job(
                state.jobs[0].id,
                now=at,
                lease_for=LEASE,
                owner=owner,
                lease_token=LeaseToken(owner),
            )
            assert claimed is not None
        # when
        found = await status(run_store, T0 + timedelta(seconds=20))
        # then: the lapsed job is due again; the live lease ends within 20 seconds
        assert (found.due_jobs, found.oldest_due_at) == (3, T0 - timedelta(minutes=2))
        assert (found.leased_jobs, found.leases_expiring, found.leases_expired) == (1, 1, 1)
        assert found.expired_leases == (
            ExpiredLease(
                job_id=lapsed.jobs[0].id,
                run_id=lapsed.id,
                step="first",
                owner="w-gone",
                expired_at=lapsed.created_at + LEASE,
            ),
        )
        later = await status(run_store, T0 + timedelta(seconds=40))
        assert (later.leased_jobs, later.leases_expiring, later.leases_expired) == (0, 0, 2)
        assert [e.owner for e in later.expired_leases] == ["w-gone", "w-live"]
        earlier = await status(run_store, T0 - timedelta(seconds=1))
        assert (earlier.leased_jobs, earlier.leases_expiring, earlier.due_jobs) == (1, 0, 1)

    async def test_the_status_names_its_schema_versions(self, run_store: RunStore) -> None:
        found = await status(run_store, T0)
        assert found.schema_version == found.schema_expected
        assert (found.schema_version is None) == (found.schema_expected is None)

    # ---------------------------------------------------------------- workers

    async def test_workers_are_upserted_and_listed_newest_first(self, run_store: RunStore) -> None:
        minute = timedelta(minutes=1)
        await run_store.record_worker("w-a", at=T0, details={"pid": 1})
        await run_store.record_worker("w-b", at=T0 + minute, details={"pid": 7})
        await run_store.record_worker("w-a", at=T0 + 2 * minute, details={"pid": 2})
        await run_store.record_worker("w-b", at=T0 + 3 * minute, details={}, stopped=True)
        seen = (await status(run_store, T0 + 4 * minute, since=T0 + timedelta(seconds=90))).workers
        assert [(w.name, w.first_seen, w.last_seen, w.stopped_at) for w in seen] == [
            ("w-b", T0 + minute, T0 + 3 * minute, T0 + 3 * minute),
            ("w-a", T0, T0 + 2 * minute, None),
        ]
        assert [dict(w.details) for w in seen] == [{}, {"pid": 2}]
        recent = await status(run_store, T0 + 4 * minute, since=T0 + timedelta(seconds=150))
        assert [w.name for w in recent.workers] == ["w-b"]
        await run_store.record_worker("w-b", at=T0 + 5 * minute, details={"pid": 8})
        [again, _] = (await status(run_store, T0 + 5 * minute, since=T0)).workers
        assert (again.name, again.stopped_at, again.first_seen) == ("w-b", None, T0 + minute)

    async def test_workers_unseen_for_a_week_are_forgotten(self, run_store: RunStore) -> None:
        await run_store.record_worker("w-old", at=T0 - 8 * DAY, details={})
        await run_store.record_worker("w-week", at=T0 - 6 * DAY, details={})
        assert len((await status(run_store, T0, since=T0 - 30 * DAY)).workers) == 2
        await run_store.record_worker("w-new", at=T0, details={"workflows": ["a", "b"]})
        seen = (await status(run_store, T0, since=T0 - 30 * DAY)).workers
        assert [w.name for w in seen] == ["w-new", "w-week"]
        assert seen[0].details == {"workflows": ["a", "b"]}

    # ---------------------------------------------------------------- prune

    async def test_prune_deletes_old_finished_runs_only(self, run_store: RunStore) -> None:
        await cancelled(run_store, 1, T0)
        await completed(run_store, 2, T0 + timedelta(seconds=1))
        await committed(run_store, new_run(3))  # old, but pending
        await cancelled(run_store, 4, T0 + 2 * DAY)  # finished after the cutoff
        assert await prune(run_store) == 2
        assert await present(run_store, 1, 2, 3, 4) == [3, 4]
        assert await prune(run_store) == 0

    async def test_prune_takes_only_the_statuses_asked_for(self, run_store: RunStore) -> None:
        await cancelled(run_store, 1, T0)
        await completed(run_store, 2, T0)
        assert await prune(run_store, statuses=frozenset({RunStatus.COMPLETED})) == 1
        assert await present(run_store, 1, 2) == [1]
        assert await prune(run_store, statuses=frozenset()) == 0

    async def test_prune_keeps_the_newest_tick_run_of_each_cron_trigger(
        self, run_store: RunStore
    ) -> None:
        # given: three nightly ticks, two of "night" (a prefix of "nightly"), one of
        # another workflow, a key that only looks like a tick, and a manual run
        for n, hour in ((1, 3), (2, 1), (3, 2)):
            await cancelled(run_store, n, T0 + timedelta(seconds=n), key=tick("nightly", hour))
        await cancelled(run_store, 4, T0, key=tick("night", 5))
        await cancelled(run_store, 5, T0, key=tick("night", 4))
        await cancelled(run_store, 6, T0, key=tick("nightly", 1), definition=OTHER)
        await cancelled(run_store, 7, T0, key="cron:nightly")
        await cancelled(run_store, 8, T0 + timedelta(seconds=9))
        # then: each workflow's greatest key of each trigger stays, however created
        assert await counted(run_store) == (5, 3)
        assert await prune(run_store, dry_run=True) == 5
        assert await prune(run_store) == 5
        assert await present(run_store, *range(1, 9)) == [1, 4, 6]
        assert await counted(run_store) == (0, 3)
        for workflow, trigger, n in (
            (FLOW.name, "nightly", 1),
            (FLOW.name, "night", 4),
            (OTHER.name, "nightly", 6),
        ):  # the runs kept are those the cron loop reads
            latest = await run_store.latest_idempotency_key(workflow, f"cron:{trigger}:")
            assert latest is not None
            kept = await run_store.find_by_idempotency_key(workflow, latest)
            assert kept is not None and kept.id == run_id(n)

    async def test_a_later_replay_of_an_older_tick_displaces_nothing(
        self, run_store: RunStore
    ) -> None:
        # given: ticks at 1 and 2, then a run of tick 1 again (a replay: no cron key)
        await cancelled(run_store, 1, T0, key=tick("nightly", 1))
        await cancelled(run_store, 2, T0 + timedelta(seconds=1), key=tick("nightly", 2))
        await cancelled(run_store, 3, T0 + timedelta(seconds=2))
        # then: the tick the cron loop reads stays; the replay and the old tick go
        assert await counted(run_store) == (2, 1)
        assert await prune(run_store) == 2
        assert await present(run_store, 1, 2, 3) == [2]

    async def test_keys_compare_bytewise_as_the_cron_loop_reads_them(
        self, run_store: RunStore
    ) -> None:
        # "a" (0x61) is after "B" (0x42) bytewise, though not in most locales' order
        await cancelled(run_store, 1, T0, key="cron:nightly:a")
        await cancelled(run_store, 2, T0 + timedelta(seconds=1), key="cron:nightly:B")
        assert await run_store.latest_idempotency_key(FLOW.name, "cron:nightly:") == (
            "cron:nightly:a"
        )
        assert await prune(run_store) == 1
        assert await present(run_store, 1, 2) == [1]

    async def test_the_newest_tick_run_may_be_active_and_older_ticks_go(
        self, run_store: RunStore
    ) -> None:
        await cancelled(run_store, 1, T0, key=tick("nightly", 1))
        await committed(run_store, new_run(2, at=T0 + timedelta(seconds=1), key=tick("nightly", 2)))
        assert await counted(run_store) == (1, 0)
        assert await prune(run_store) == 1
        assert await present(run_store, 1, 2) == [2]

    async def test_prune_with_a_limit_takes_the_oldest_first(self, run_store: RunStore) -> None:
        for n in (5, 3, 1, 4, 2):
            key = tick("nightly", 1) if n == 5 else None
            await cancelled(run_store, n, T0 + timedelta(seconds=n), key=key)
        assert await prune(run_store, limit=2) == 2
        assert await present(run_store, 1, 2, 3, 4, 5) == [3, 4, 5]
        assert await prune(run_store, limit=2, dry_run=True) == 2
        assert await prune(run_store, limit=2) == 2
        assert await prune(run_store, limit=2) == 0
        assert await present(run_store, 1, 2, 3, 4, 5) == [5]

    async def test_a_dry_run_counts_and_deletes_nothing(self, run_store: RunStore) -> None:
        await cancelled(run_store, 1, T0)
        await completed(run_store, 2, T0)
        assert await prune(run_store, dry_run=True) == 2
        assert await prune(run_store, dry_run=True, limit=1) == 1
        assert await prune(run_store, dry_run=True, limit=0) == 0
        assert await counted(run_store) == (2, 0)
        assert await present(run_store, 1, 2) == [1, 2]

    async def test_a_pruned_run_is_gone_with_its_key_and_its_history(
        self, run_store: RunStore
    ) -> None:
        await cancelled(run_store, 1, T0, key="k")
        await completed(run_store, 2, T0)
        assert await prune(run_store) == 2
        assert await run_store.find_by_idempotency_key(FLOW.name, IdempotencyKey("k")) is None
        assert await run_store.list_runs(workflow=None, status=None, limit=10) == []
        assert await run_store.leases(run_id(2)) == []
        assert (await status(run_store, T0 + DAY)).runs == ()
        fresh = await committed(run_store, new_run(3, key="k"))  # the key is free again
        assert (await run_store.find_by_idempotency_key(FLOW.name, IdempotencyKey("k"))) == fresh

    async def test_a_run_that_still_has_jobs_is_never_pruned(self, run_store: RunStore) -> None:
        created = new_run(1)
        odd = replace(created, state=replace(created.state, status=RunStatus.COMPLETED))
        await committed(run_store, odd)  # a finished run whose job is still there
        assert await counted(run_store) == (0, 0)
        assert await prune(run_store, dry_run=True) == 0
        assert await prune(run_store) == 0
        assert await present(run_store, 1) == [1]

    async def test_a_pruned_runs_id_can_hold_a_new_run(self, run_store: RunStore) -> None:
        # A store that keeps known states (the base of later commits) must forget them.
        state = await committed(run_store, new_run(1))
        await run_store.load(state.id)
        await committed(run_store, decide(FLOW, state, CancelRequested(), now=T0).unwrap())
        assert await prune(run_store) == 1
        again = await committed(run_store, new_run(1, at=T0 + timedelta(hours=2)))
        again, _ = await deliver(run_store, again, again.created_at, worker="w")
        assert await run_store.load(again.id) == again

    # ---------------------------------------------------------------- listing

    async def test_runs_are_listed_within_a_creation_range(self, run_store: RunStore) -> None:
        for n in range(1, 6):
            await committed(run_store, new_run(n, at=T0 + timedelta(minutes=n)))
        listed = await run_store.list_runs(
            workflow=None,
            status=None,
            limit=10,
            created_after=T0 + timedelta(minutes=2),
            created_before=T0 + timedelta(minutes=4),
        )
        assert [r.id for r in listed] == [run_id(3), run_id(2)]
        since = await run_store.list_runs(
            workflow=FLOW.name,
            status=RunStatus.PENDING,
            limit=10,
            created_after=T0 + timedelta(minutes=4),
        )
        assert [r.id for r in since] == [run_id(5), run_id(4)]

    async def test_runs_are_paged_with_a_keyset_cursor(self, run_store: RunStore) -> None:
        for n in range(1, 4):
            await committed(run_store, new_run(n, at=T0 + timedelta(minutes=n)))
        for n in range(4, 8):  # created at the same moment: ordered by id
            await committed(run_store, new_run(n, at=T0 + timedelta(hours=1)))
        pages: list[list[RunId]] = []
        cursor: tuple[datetime, RunId] | None = None
        while True:
            page = await run_store.list_runs(workflow=None, status=None, limit=3, before=cursor)
            if not page:
                break
            pages.append([r.id for r in page])
            cursor = (page[-1].created_at, page[-1].id)
        assert pages == [
            [run_id(7), run_id(6), run_id(5)],
            [run_id(4), run_id(3), run_id(2)],
            [run_id(1)],
        ]
        older = await run_store.list_runs(
            workflow=FLOW.name, status=None, limit=10, before=(T0 + timedelta(hours=1), run_id(5))
        )
        assert [r.id for r in older] == [run_id(4), run_id(3), run_id(2), run_id(1)]
