"""``RunStoreContract``: the executable copy of the ``RunStore`` docstring."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

from returns.result import Failure, Success

from squidmesh_core.commands import Decision, Lease
from squidmesh_core.decide import decide
from squidmesh_core.errors import DuplicateRun, StaleLease, VersionConflict
from squidmesh_core.events import (
    ApproveRequested,
    CancelRequested,
    JobDelivered,
    Operator,
    SignalSent,
    StepSucceeded,
)
from squidmesh_core.handoff import decide_outcome
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken
from squidmesh_core.ports import Fence, RunStore
from squidmesh_core.state import RunState, RunStatus
from squidmesh_core.testing.contracts._kit import (
    FLOW,
    LEASE,
    OTHER,
    PEOPLE,
    T0,
    Tokens,
    claim,
    committed,
    deliver,
    first_succeeded,
    new_run,
    run_id,
)
from squidmesh_core.testing.contracts.operations import OperationsContract

__all__ = [
    "FLOW",
    "LEASE",
    "OTHER",
    "PEOPLE",
    "T0",
    "RunStoreContract",
    "Tokens",
    "claim",
    "committed",
    "deliver",
    "first_succeeded",
    "new_run",
    "run_id",
]


async def _success_and_next_start(
    store: RunStore,
) -> tuple[RunState, LeaseToken, Decision, Lease]:
    """A run whose ``first`` step runs; its success and the start of ``pause``, combined."""
    state = await committed(store, new_run(1))
    state, token = await deliver(store, state, T0)
    first, pause = JobId(f"{state.id}/first/1"), JobId(f"{state.id}/pause/1")
    succeeded = StepSucceeded(job_id=first, lease_token=token, output={"a": 1})
    lease = Lease(token=LeaseToken("next-token"), until=T0 + LEASE, owner="c")
    both = decide_outcome(FLOW, state, succeeded, now=T0, next_lease=lease).unwrap()
    assert both.started is not None and both.started.job_id == pause
    return state, token, both, lease


class RunStoreContract(OperationsContract):
    """Every RunStore passes these. Subclass and provide a ``run_store`` fixture.

    The operator queries' cases (status, workers, pruning, paged listings, the
    worker of an attempt) come from :class:`OperationsContract`.
    """

    async def test_a_parked_run_with_its_audit_and_signals_loads_back_equal(
        self, run_store: RunStore
    ) -> None:
        parked = await committed(run_store, new_run(1, definition=PEOPLE))
        assert parked.status is RunStatus.PAUSED and not parked.jobs
        early = decide(
            PEOPLE, parked, SignalSent(name="go", payload={"code": "x", "weight": 1e23}), now=T0
        ).unwrap()
        state = await committed(run_store, early)
        assert await run_store.load(state.id) == state
        approved = decide(
            PEOPLE,
            state,
            ApproveRequested(by=Operator(actor="ana", note="ok", idempotency_key="k1")),
            now=T0 + LEASE,
        ).unwrap()
        state = await committed(run_store, approved)
        loaded = await run_store.load(state.id)
        assert loaded == state
        assert [e.command.value for e in loaded.audit] == ["signal", "approve"]
        assert loaded.signals[0].consumed_by == "go"
        assert repr(loaded.signals[0].payload["weight"]) == "1e+23"  # exactly as sent
        assert [j.step for j in loaded.jobs] == ["last"]

    async def test_a_signal_waits_timer_is_a_job_and_leases_are_reported(
        self, run_store: RunStore
    ) -> None:
        parked = await committed(run_store, new_run(1, definition=PEOPLE))
        approved = decide(
            PEOPLE, parked, ApproveRequested(by=Operator(actor="ana")), now=T0
        ).unwrap()
        state = await committed(run_store, approved)
        [timer] = state.jobs
        assert timer.due_at == T0 + timedelta(hours=1)
        [free] = await run_store.leases(state.id)
        assert (free.job_id, free.owner, free.expires_at) == (timer.id, None, None)
        assert await claim(run_store, T0 + timedelta(hours=1)) == [timer.id]
        [held] = await run_store.leases(state.id)
        assert held.owner == "contract"
        assert held.expires_at == T0 + timedelta(hours=1) + LEASE
        assert await run_store.leases(run_id(99)) == []

    async def test_open_may_repeat_and_a_closed_store_opens_again(
        self, run_store: RunStore
    ) -> None:
        state = await committed(run_store, new_run(1))
        await run_store.open()
        await run_store.open()
        await run_store.close()
        await run_store.open()
        assert await run_store.load(state.id) == state

    async def test_loading_an_unknown_run_gives_none(self, run_store: RunStore) -> None:
        assert await run_store.load(run_id(1)) is None

    async def test_a_committed_run_loads_back_equal(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        assert await run_store.load(state.id) == state

    async def test_creating_the_same_run_twice_is_a_duplicate(self, run_store: RunStore) -> None:
        await committed(run_store, new_run(1))
        assert await run_store.commit(new_run(1)) == Failure(
            DuplicateRun(run_id=run_id(1), existing_run_id=run_id(1))
        )

    async def test_idempotency_keys_are_unique_per_workflow(self, run_store: RunStore) -> None:
        await committed(run_store, new_run(1, key="k"))
        assert await run_store.commit(new_run(2, key="k")) == Failure(
            DuplicateRun(run_id=run_id(2), existing_run_id=run_id(1))
        )
        await committed(run_store, new_run(3, key="k", definition=OTHER))
        found = await run_store.find_by_idempotency_key(FLOW.name, IdempotencyKey("k"))
        assert found is not None and found.id == run_id(1)
        assert await run_store.find_by_idempotency_key(FLOW.name, IdempotencyKey("nope")) is None

    async def test_a_stale_version_is_refused_and_nothing_is_written(
        self, run_store: RunStore
    ) -> None:
        state = await committed(run_store, new_run(1))
        first = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
        await committed(run_store, first)
        stale = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
        assert await run_store.commit(stale) == Failure(
            VersionConflict(run_id=state.id, expected=1)
        )
        assert await run_store.load(state.id) == first.state

    async def test_refused_commits_leave_the_jobs_alone(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        await committed(run_store, decide(FLOW, state, CancelRequested(), now=T0).unwrap())
        stale = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
        assert isinstance((await run_store.commit(stale)).failure(), VersionConflict)
        assert await claim(run_store, T0 + timedelta(days=1)) == []
        fresh = await committed(run_store, new_run(2))
        [job] = await claim(run_store, T0)
        forged = decide(
            FLOW, fresh, JobDelivered(job_id=job, lease_token=LeaseToken("x")), now=T0
        ).unwrap()
        assert isinstance(
            (
                await run_store.commit(forged, fence=Fence(job_id=job, lease_token=LeaseToken("x")))
            ).failure(),
            StaleLease,
        )
        duplicate = new_run(2)
        assert isinstance((await run_store.commit(duplicate)).failure(), DuplicateRun)
        assert await claim(run_store, T0 + LEASE) == [job]
        assert await run_store.load(fresh.id) == fresh

    async def test_an_update_of_a_missing_run_is_a_conflict(self, run_store: RunStore) -> None:
        decision = new_run(1)
        ghost = Decision(state=replace(decision.state, version=2), commands=())
        assert isinstance((await run_store.commit(ghost)).failure(), VersionConflict)

    async def test_due_jobs_are_claimed_once_until_their_lease_expires(
        self, run_store: RunStore
    ) -> None:
        await committed(run_store, new_run(1))
        assert await claim(run_store, T0 - timedelta(seconds=1)) == []
        assert await claim(run_store, T0) == [JobId(f"{run_id(1)}/first/1")]
        assert await claim(run_store, T0 + timedelta(seconds=29)) == []
        assert await claim(run_store, T0 + LEASE) == [JobId(f"{run_id(1)}/first/1")]

    async def test_every_claim_mints_a_new_token(self, run_store: RunStore) -> None:
        await committed(run_store, new_run(1))
        mint = Tokens()
        first = await run_store.claim_due(now=T0, limit=1, lease_for=LEASE, owner="a", mint=mint)
        again = await run_store.claim_due(
            now=T0 + LEASE, limit=1, lease_for=LEASE, owner="b", mint=mint
        )
        assert first[0].lease_token != again[0].lease_token
        assert again[0].lease_expires_at == T0 + LEASE + LEASE
        assert again[0].run_id == run_id(1)

    async def test_claims_come_earliest_first_up_to_the_limit(self, run_store: RunStore) -> None:
        for n in (3, 1, 2):
            await committed(run_store, new_run(n, at=T0 + timedelta(seconds=n)))
        claimed = await claim(run_store, T0 + timedelta(minutes=1), limit=2)
        assert claimed == [JobId(f"{run_id(1)}/first/1"), JobId(f"{run_id(2)}/first/1")]

    async def test_expired_leases_are_reclaimed_before_any_backlog(
        self, run_store: RunStore
    ) -> None:
        # A worker took run 1's job and died; jobs due long before its expiry
        # (a backlog) must not keep it waiting.
        await committed(run_store, new_run(1, at=T0 + timedelta(seconds=10)))
        assert await claim(run_store, T0 + timedelta(seconds=10)) == [JobId(f"{run_id(1)}/first/1")]
        for n in range(2, 12):
            await committed(run_store, new_run(n, at=T0 + timedelta(seconds=n - 2)))
        after_expiry = T0 + timedelta(seconds=10) + LEASE
        claimed = await claim(run_store, after_expiry, limit=3)
        assert claimed == [
            JobId(f"{run_id(1)}/first/1"),
            JobId(f"{run_id(2)}/first/1"),
            JobId(f"{run_id(3)}/first/1"),
        ]

    async def test_concurrent_claims_never_share_a_job(self, run_store: RunStore) -> None:
        for n in range(1, 7):
            await committed(run_store, new_run(n))
        batches = await asyncio.gather(*(claim(run_store, T0, limit=2) for _ in range(5)))
        claimed = [job for batch in batches for job in batch]
        assert len(claimed) == len(set(claimed)) == 6

    async def test_commit_with_a_foreign_fence_writes_nothing(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        [job] = await claim(run_store, T0)
        decision = decide(
            FLOW, state, JobDelivered(job_id=job, lease_token=LeaseToken("forged")), now=T0
        ).unwrap()
        fence = Fence(job_id=job, lease_token=LeaseToken("forged"))
        assert await run_store.commit(decision, fence=fence) == Failure(StaleLease(job_id=job))
        assert await run_store.load(state.id) == state

    async def test_one_job_is_claimed_by_name_only_when_due_and_free(
        self, run_store: RunStore
    ) -> None:
        state = await committed(run_store, new_run(1))
        job = state.jobs[0].id

        async def take(at: datetime, token: str) -> bool:
            claim = await run_store.claim_job(
                job, now=at, lease_for=LEASE, owner="inline", lease_token=LeaseToken(token)
            )
            if claim is not None:
                assert (claim.job_id, claim.run_id, claim.lease_token) == (job, state.id, token)
            return claim is not None

        assert not await take(T0 - timedelta(seconds=1), "early")
        assert await take(T0, "first")
        assert not await take(T0, "second")
        assert await claim(run_store, T0) == []
        assert await run_store.heartbeat(job, LeaseToken("first"), until=T0 + LEASE)
        assert await take(T0 + LEASE, "after-expiry")
        assert not await run_store.heartbeat(job, LeaseToken("first"), until=T0 + LEASE * 2)
        assert (
            await run_store.claim_job(
                JobId("nope/none/1"),
                now=T0,
                lease_for=LEASE,
                owner="x",
                lease_token=LeaseToken("t"),
            )
            is None
        )

    async def test_the_latest_key_with_a_prefix_is_found(self, run_store: RunStore) -> None:
        keys = ["cron:nightly:2026-02-01T09:00:00Z", "cron:nightly:2026-02-02T09:00:00Z",
                "cron:night:2026-02-09T09:00:00Z", "cron:nightly_x:2026-03-01T00:00:00Z", "manual-1"]  # fmt: skip
        for n, key in enumerate(keys, 1):
            await committed(run_store, new_run(n, key=key))
        await committed(
            run_store, new_run(99, key="cron:nightly:2026-09-09T09:00:00Z", definition=OTHER)
        )
        found = await run_store.latest_idempotency_key("contract.flow", "cron:nightly:")
        assert found == "cron:nightly:2026-02-02T09:00:00Z"
        assert await run_store.latest_idempotency_key("contract.flow", "cron:weekly:") is None
        assert await run_store.latest_idempotency_key("contract.nope", "cron:") is None

    async def test_a_renewing_fence_extends_the_lease_in_the_commit(
        self, run_store: RunStore
    ) -> None:
        state = await committed(run_store, new_run(1))
        claims = await run_store.claim_due(
            now=T0, limit=1, lease_for=LEASE, owner="c", mint=Tokens()
        )
        job, token = claims[0].job_id, claims[0].lease_token
        late = T0 + LEASE + timedelta(seconds=5)  # the message arrives after its lease lapsed
        started = decide(FLOW, state, JobDelivered(job_id=job, lease_token=token), now=late)
        fence = Fence(job_id=job, lease_token=token, renew_until=late + LEASE)
        await committed(run_store, started.unwrap(), fence)
        assert await claim(run_store, late + timedelta(seconds=1)) == []
        assert await claim(run_store, late + LEASE, mint=lambda: LeaseToken("reclaimed")) == [job]
        stale = Fence(job_id=job, lease_token=token, renew_until=late + LEASE * 3)
        again = decide(FLOW, started.unwrap().state, CancelRequested(), now=late)
        assert await run_store.commit(again.unwrap(), fence=stale) == Failure(
            StaleLease(job_id=job)
        )

    async def test_a_combined_commit_starts_the_next_job_under_its_own_lease(
        self, run_store: RunStore
    ) -> None:
        state, token, both, lease = await _success_and_next_start(run_store)
        pause = JobId(f"{state.id}/pause/1")
        fence = Fence(job_id=JobId(f"{state.id}/first/1"), lease_token=token)
        assert await run_store.commit(both, fence=fence) == Success(None)
        assert await run_store.load(state.id) == both.state
        assert both.state.version == state.version + 1
        assert await claim(run_store, T0 + timedelta(seconds=1)) == []  # leased, not claimable
        assert not await run_store.heartbeat(pause, token, until=T0 + LEASE * 2)
        assert await run_store.heartbeat(pause, lease.token, until=T0 + LEASE * 2)
        assert await claim(run_store, T0 + LEASE) == []
        assert await claim(run_store, T0 + LEASE * 2) == [pause]  # an expired lease is reclaimed

    async def test_a_combined_commit_under_a_stale_fence_writes_nothing(
        self, run_store: RunStore
    ) -> None:
        state, _, both, _ = await _success_and_next_start(run_store)
        first = JobId(f"{state.id}/first/1")
        fence = Fence(job_id=first, lease_token=LeaseToken("forged"))
        refused = await run_store.commit(both, fence=fence)
        assert refused == Failure(StaleLease(job_id=first))
        assert await run_store.load(state.id) == state

    async def test_heartbeat_extends_only_the_holders_lease(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        _, token = await deliver(run_store, state, T0)
        job = JobId(f"{state.id}/first/1")
        assert not await run_store.heartbeat(
            job, LeaseToken("other"), until=T0 + timedelta(hours=1)
        )
        assert await run_store.heartbeat(job, token, until=T0 + timedelta(minutes=2))
        assert await claim(run_store, T0 + timedelta(minutes=1)) == []
        assert await claim(run_store, T0 + timedelta(minutes=2)) == [job]

    async def test_release_makes_a_job_claimable_at_once(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        _, token = await deliver(run_store, state, T0)
        job = JobId(f"{state.id}/first/1")
        assert not await run_store.release(job, LeaseToken("other"))
        assert await run_store.release(job, token)
        assert await claim(run_store, T0) == [job]

    async def test_finished_jobs_are_gone_and_new_ones_are_scheduled(
        self, run_store: RunStore
    ) -> None:
        state = await first_succeeded(run_store, {"a": 1})
        assert await claim(run_store, T0 + timedelta(hours=1)) == [JobId(f"{state.id}/pause/1")]

    async def test_cancelled_jobs_are_never_claimed(self, run_store: RunStore) -> None:
        state = await committed(run_store, new_run(1))
        await committed(run_store, decide(FLOW, state, CancelRequested(), now=T0).unwrap())
        assert await claim(run_store, T0 + timedelta(days=1)) == []
        assert await run_store.next_due_at() is None

    async def test_rescheduled_jobs_move(self, run_store: RunStore) -> None:
        state = await first_succeeded(run_store)
        state, token = await deliver(run_store, state, T0)
        pause = JobId(f"{state.id}/pause/1")
        done = decide(
            FLOW, state, StepSucceeded(job_id=pause, lease_token=token, output={}), now=T0
        ).unwrap()
        state = await committed(run_store, done, Fence(job_id=pause, lease_token=token))
        assert await run_store.next_due_at() == T0 + timedelta(minutes=5)
        later = T0 + timedelta(minutes=1)
        await committed(run_store, decide(FLOW, state, CancelRequested(), now=later).unwrap())
        assert await run_store.next_due_at() == later
        assert await claim(run_store, later) == [JobId(f"{state.id}/last/1")]

    async def test_next_due_counts_lease_expiry(self, run_store: RunStore) -> None:
        await committed(run_store, new_run(1))
        assert await run_store.next_due_at() == T0
        await claim(run_store, T0)
        assert await run_store.next_due_at() == T0 + LEASE

    async def test_runs_are_listed_newest_first_with_filters(self, run_store: RunStore) -> None:
        for n in range(1, 5):
            await committed(run_store, new_run(n, at=T0 + timedelta(seconds=n)))
        await committed(run_store, new_run(9, definition=OTHER))
        cancelled = await run_store.load(run_id(2))
        assert cancelled is not None
        await committed(run_store, decide(FLOW, cancelled, CancelRequested(), now=T0).unwrap())
        listed = await run_store.list_runs(workflow=FLOW.name, status=None, limit=3)
        assert [r.id for r in listed] == [run_id(4), run_id(3), run_id(2)]
        only = await run_store.list_runs(workflow=None, status=RunStatus.CANCELLED, limit=10)
        assert [r.id for r in only] == [run_id(2)]
        everything = await run_store.list_runs(workflow=None, status=None, limit=100)
        assert len(everything) == 5
