"""The time-skipping runtime: test workflows in milliseconds, deterministically.

``TimeSkippingRuntime`` runs on the memory store with a fake clock and no
background tasks. Its driver methods execute due jobs one at a time, in due
order, and jump the clock straight to the next due job when nothing is due, so a
``wait`` of six hours or an exponential retry schedule costs nothing::

    rt = TimeSkippingRuntime(workflows=[my_workflow])
    run = (await rt.start_run(my_workflow, {"account_id": "a1"})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPLETED

``rt.faults`` injects the faults of a real deployment (a worker killed
mid-step, a duplicated message, a commit conflict, a clock jump; see
``_faults``), so a test can prove its steps are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from returns.result import Failure

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime._delivery import JobOutcome
from squidmesh_backends.runtime._faults import Faults, FaultyStore, WorkerKilled
from squidmesh_backends.runtime.clock import FakeClock
from squidmesh_backends.runtime.ids import SequenceIds
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import SquidmeshError
from squidmesh_core.ports import EventSink
from squidmesh_core.state import RunStatus
from squidmesh_core.views import Run

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class StuckRunError(SquidmeshError, AssertionError):
    """``run_until_complete`` found a run that can never finish, or ran out of budget."""


class TimeSkippingRuntime(Runtime):
    """A runtime whose clock jumps to the next due job. Use it to test workflows."""

    def __init__(
        self,
        *,
        workflows: Iterable[WorkflowDefinition],
        start: datetime = DEFAULT_START,
        sinks: Sequence[EventSink] = (),
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.fake_clock = FakeClock(start)
        self.faults = Faults(self.fake_clock)
        """Faults to inject: ``kill_worker_during``, ``deliver_twice``,
        ``conflict_next_commit``, ``jump_clock``."""
        self.memory: MemoryRunStore = FaultyStore(self.faults)
        """The memory store (its commits pass the fault check first)."""
        super().__init__(
            store=self.memory,
            workflows=workflows,
            clock=self.fake_clock,
            ids=SequenceIds(),
            sinks=sinks,
            settings=settings,
        )
        self.outcomes: list[tuple[str, JobOutcome]] = []
        """Every job this runtime executed, with what it amounted to."""

    async def start(self) -> None:
        """Nothing runs in the background: the driver methods do the work."""

    async def stop(self) -> None:
        """Nothing to stop."""

    @property
    def now(self) -> datetime:
        """The fake clock's time."""
        return self.fake_clock.now()

    async def run_due(self) -> int:
        """Execute every job due now (including ones they schedule for now); return how many."""
        executed = 0
        while True:
            claims = await self.store.claim_due(
                now=self.clock.now(),
                limit=1,
                lease_for=self.settings.lease,
                owner="time-skipping",
                mint=self.ids.new_lease_token,
            )
            if not claims:
                return executed
            claim = claims[0]
            copies = 2 if self.faults.take_duplicate(claim.job_id) else 1
            for outcome in await asyncio.gather(
                *(self._execute(claim.job_id, claim.lease_token) for _ in range(copies))
            ):
                self.outcomes.append((claim.job_id, outcome))
            executed += 1

    async def _execute(self, job_id: str, lease_token: str) -> JobOutcome:
        try:
            return await self.worker.execute_job(job_id, lease_token, heartbeat=False)
        except WorkerKilled:
            return JobOutcome.LEASE_LOST  # nothing committed: the lease runs out

    async def advance(self, delta: timedelta) -> int:
        """Move the clock forward by ``delta``, running every job that falls due on the way."""
        target = self.clock.now() + delta
        executed = await self.run_due()
        while True:
            upcoming = await self.store.next_due_at()
            if upcoming is None or upcoming > target:
                break
            self.fake_clock.set(max(upcoming, self.clock.now()))
            executed += await self.run_due()
        self.fake_clock.set(target)
        return executed + await self.run_due()

    async def run_until_complete(self, run_id: str, *, max_jobs: int = 10_000) -> Run:
        """Run jobs, skipping time as needed, until the run is finished; return it with history.

        A run parked at a signal wait with a timeout is carried to its timeout, and
        a run with a deadline to its deadline (where it fails).

        Raises:
            StuckRunError: the run has no job left but is not finished (it waits
                for a person, say), or ``max_jobs`` jobs ran without it finishing.
        """
        return await self._run_until(run_id, parked=False, max_jobs=max_jobs)

    async def run_until_parked(self, run_id: str, *, max_jobs: int = 10_000) -> Run:
        """Like ``run_until_complete``, but stop as soon as the run is parked (``paused``).

        Use it to get a run to its approval, pause or signal step, then act on it.
        """
        return await self._run_until(run_id, parked=True, max_jobs=max_jobs)

    async def _run_until(self, run_id: str, *, parked: bool, max_jobs: int) -> Run:
        for _ in range(max_jobs):
            await self.run_due()
            found = await self.inspect_run(run_id, include_history=True)
            if isinstance(found, Failure):
                raise StuckRunError(f"run {run_id}: {found.failure()}")
            run = found.unwrap()
            if run.status.terminal or (parked and run.status is RunStatus.PAUSED):
                return run
            upcoming = await self.store.next_due_at()
            if upcoming is None:
                raise StuckRunError(f"run {run_id} is {run.status} with nothing left to run")
            self.fake_clock.set(max(upcoming, self.clock.now()))
        raise StuckRunError(f"run {run_id} did not finish within {max_jobs} jobs")
