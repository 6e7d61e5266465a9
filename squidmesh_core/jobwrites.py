"""The one interpreter of job commands: a decision becomes job-row writes.

Every store keeps a jobs table (or dictionary): the outbox and the timers. What
a decision does to it is decided here, once, so memory, SQLite and PostgreSQL
cannot drift apart; each store only carries the writes out, in its own
transaction, together with the run state.

Rules:

1. **Inserts carry the final job.** A job is inserted as the decision's state
   holds it, so a job scheduled and started by the same decision (the inline
   hand-off) goes in already started, with the lease its ``ScheduleJob`` names.
   Inserts keep the order in which the decision scheduled them.
2. **Nothing is written twice.** A job inserted and ended by the same decision is
   not written at all; a job inserted and moved is inserted at its final due time.
3. **A started attempt of an existing job is a start.** When the decision
   started the attempt of a job that was already stored, the row is marked
   started under that attempt's lease token (stores that keep job status in the
   run document may ignore it).
4. **Ended jobs are deleted.** ``CancelJob`` and ``FinishJob`` both remove the row
   and its lease.
5. **Other dispatchers are woken** (``wake_others``) when the decision inserted a
   job nobody holds or moved one: they may have work, or a nearer due time. A
   job inserted with a lease is run by the committing worker and wakes nobody.

>>> from datetime import UTC, datetime
>>> from squidmesh_core.state import RunState, RunStatus
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> state = RunState(id="r", workflow="w", trigger="t", status=RunStatus.PENDING,
...                  payload={}, context={}, created_at=t, updated_at=t)
>>> job_writes(Decision(state=state)).wake_others
False
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from squidmesh_core.commands import (
    CancelJob,
    Decision,
    Emit,
    FinishJob,
    Lease,
    RescheduleJob,
    ScheduleJob,
)
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.state import Job


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInsert:
    """Insert ``job`` as it stands; leased to ``lease.owner`` when ``lease`` is given."""

    job: Job
    lease: Lease | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMove:
    """Make the stored job ``job_id`` due at ``due_at``."""

    job_id: JobId
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStart:
    """Mark the stored job ``job_id`` started by the attempt under ``lease_token``."""

    job_id: JobId
    lease_token: LeaseToken


@dataclass(frozen=True, slots=True, kw_only=True)
class JobWrites:
    """Everything one decision writes to the jobs table (see the module rules)."""

    inserts: tuple[JobInsert, ...] = ()
    moves: tuple[JobMove, ...] = ()
    starts: tuple[JobStart, ...] = ()
    deletes: tuple[JobId, ...] = ()
    wake_others: bool = False

    @property
    def touched(self) -> frozenset[JobId]:
        """Every job id this plan writes."""
        return frozenset(
            [i.job.id for i in self.inserts]
            + [m.job_id for m in self.moves]
            + [s.job_id for s in self.starts]
            + list(self.deletes)
        )


def job_writes(decision: Decision) -> JobWrites:
    """The job-row writes that carry out ``decision`` (pure; see the module rules)."""
    ended: set[JobId] = set()
    moved: dict[JobId, datetime] = {}
    scheduled: list[ScheduleJob] = []
    for command in decision.commands:
        match command:
            case ScheduleJob():
                scheduled.append(command)
            case RescheduleJob(job_id=job_id, due_at=due_at):
                moved[job_id] = due_at
            case CancelJob(job_id=job_id) | FinishJob(job_id=job_id):
                ended.add(job_id)
            case Emit():
                pass
    final = {job.id: job for job in decision.state.jobs}
    inserted: set[JobId] = set()
    inserts: list[JobInsert] = []
    for command in scheduled:
        job_id = command.job.id
        inserted.add(job_id)
        if job_id in ended:
            continue
        inserts.append(JobInsert(job=final.get(job_id, command.job), lease=command.lease))
    moves = tuple(
        JobMove(job_id=job_id, due_at=due_at)
        for job_id, due_at in moved.items()
        if job_id not in inserted and job_id not in ended
    )
    started = decision.started
    starts = (
        (JobStart(job_id=started.job_id, lease_token=started.lease_token),)
        if started is not None and started.job_id not in inserted
        else ()
    )
    return JobWrites(
        inserts=tuple(inserts),
        moves=moves,
        starts=starts,
        deletes=tuple(sorted(ended - inserted)),
        wake_others=bool(moves) or any(i.lease is None for i in inserts),
    )
