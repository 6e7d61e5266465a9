"""Faults a test injects into a :class:`~squidmesh_backends.runtime.testing.TimeSkippingRuntime`.

A workflow's steps run at least once: a worker that dies after a step's side
effects but before its outcome is committed makes the step run again. These
hooks let a test produce exactly those situations, deterministically, and prove
that its steps are idempotent:

* :meth:`Faults.kill_worker_during` — the step runs to its end, then its
  worker "dies" before the outcome is committed. Nothing is written; the lease
  runs out (the time-skipping clock jumps there), the attempt is recorded
  ``lost`` and the step is retried per its policy.
* :meth:`Faults.deliver_twice` — the next delivery of a step arrives twice at
  once, as a duplicated broker message would.
* :meth:`Faults.conflict_next_commit` — the next commits fail with a version
  conflict, as when another writer got there first; the runtime decides again
  on the stored state.
* :meth:`Faults.jump_clock` — the clock jumps (forwards or back) without
  running anything, for example from inside a step to outlive its lease.

The hooks act through the memory store's commits (:class:`FaultyStore`) and
the time-skipping driver; the runtime itself is the real one.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from returns.result import Failure, Result

from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime.clock import FakeClock
from squidmesh_core.commands import Decision, FinishJob
from squidmesh_core.errors import CommitError, SquidmeshError, VersionConflict
from squidmesh_core.ids import JobId, parse_job_id
from squidmesh_core.ports import Fence


class WorkerKilled(SquidmeshError):
    """Raised in place of an outcome's commit: the worker "died" before writing it."""


def _step_of(job_id: str) -> str | None:
    key = parse_job_id(job_id).value_or(None)
    return None if key is None else key.step


class Faults:
    """The faults armed on one time-skipping runtime (its ``faults`` attribute)."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._kills: Counter[str] = Counter()
        self._twice: Counter[str] = Counter()
        self._conflicts = 0
        self.killed: list[JobId] = []
        """The jobs whose worker was killed, in order."""
        self.duplicated: list[JobId] = []
        """The jobs delivered twice, in order."""
        self.conflicts: int = 0
        """Commits refused with an injected version conflict so far."""

    def kill_worker_during(self, step: str, *, times: int = 1) -> None:
        """Let the next ``times`` attempts of ``step`` run, then lose their outcome."""
        self._kills[step] += times

    def deliver_twice(self, step: str, *, times: int = 1) -> None:
        """Deliver the next ``times`` jobs of ``step`` twice, concurrently."""
        self._twice[step] += times

    def conflict_next_commit(self, count: int = 1) -> None:
        """Refuse the next ``count`` commits with a ``VersionConflict`` (nothing is written)."""
        self._conflicts += count

    def jump_clock(self, delta: timedelta) -> datetime:
        """Move the clock by ``delta`` (negative goes back) without running anything."""
        self._clock.set(self._clock.now() + delta)
        return self._clock.now()

    # ---------------------------------------------------------------- driver side

    def take_duplicate(self, job_id: JobId) -> bool:
        """Whether this delivery of ``job_id`` is to arrive twice (consumes the fault)."""
        step = _step_of(job_id)
        if step is None or self._twice[step] <= 0:
            return False
        self._twice[step] -= 1
        self.duplicated.append(job_id)
        return True

    def check_commit(self, decision: Decision, fence: Fence | None) -> CommitError | None:
        """The injected refusal for this commit, if any; raises for a killed worker."""
        if self._conflicts > 0:
            self._conflicts -= 1
            self.conflicts += 1
            return VersionConflict(run_id=decision.state.id, expected=decision.expected_version)
        if fence is None or decision.reclaimed:
            return None
        step = _step_of(fence.job_id)
        ends_attempt = any(
            isinstance(c, FinishJob) and c.job_id == fence.job_id for c in decision.commands
        )
        if ends_attempt and step is not None and self._kills[step] > 0:
            self._kills[step] -= 1
            self.killed.append(fence.job_id)
            raise WorkerKilled(f"the worker running {fence.job_id} was killed before its commit")
        return None


class FaultyStore(MemoryRunStore):
    """The memory store, whose commits pass a fault check first (see :class:`Faults`)."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    async def commit(
        self, decision: Decision, *, fence: Fence | None = None
    ) -> Result[None, CommitError]:
        refused = self.faults.check_commit(decision, fence)
        if refused is not None:
            return Failure(refused)
        return await super().commit(decision, fence=fence)
