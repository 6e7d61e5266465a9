"""What the core asks the shell to do: data, never callbacks.

A :class:`Decision` is the new run state plus the commands that go with it.
The store commits the state *and* the job commands in one transaction (a timer
can never exist without its state); ``Emit`` commands are published after the
commit. How job commands become job-row writes is decided once, for every
store, by :func:`squidmesh_core.jobwrites.job_writes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from squidmesh_core._evolve import evolve
from squidmesh_core.ids import JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject
from squidmesh_core.state import Job, RunState


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease granted on a job as it is inserted: held by ``owner`` until ``until``.

    The shell mints the token and computes ``until``; the core only says which
    job the lease goes with (see :func:`squidmesh_core.handoff.decide_outcome`).
    """

    token: LeaseToken
    until: datetime
    owner: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleJob:
    """Insert ``job`` (due at ``job.due_at``).

    With ``lease`` the job is inserted already leased: the worker that committed
    the decision runs it next, at once, and no dispatcher may claim it. Every
    store must honour the lease, since the run already records that job as
    started (``RunStoreContract`` checks it).
    """

    job: Job
    lease: Lease | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RescheduleJob:
    """Move the scheduled job ``job_id`` to ``due_at``."""

    job_id: JobId
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelJob:
    """Drop the scheduled job ``job_id``: it must never be delivered."""

    job_id: JobId


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishJob:
    """The attempt of the started job ``job_id`` ended; drop the job and its lease."""

    job_id: JobId


class Topic(StrEnum):
    """Names of the observable events the core emits (see docs/architecture.md)."""

    RUN_CREATED = "run.created"
    RUN_REPLAYED = "run.replayed"
    RUN_TRANSITION = "run.transition"
    STEP_STARTED = "step.started"
    STEP_COMPLETED = "step.completed"
    STEP_FAILED = "step.failed"
    STEP_RETRY_SCHEDULED = "step.retry_scheduled"
    STEP_DEFERRED = "step.deferred"
    STEP_CANCELLED = "step.cancelled"
    STEP_PARKED = "step.parked"
    STEP_COMPENSATION_ROUTED = "step.compensation_routed"
    STEP_UNDO_ROUTED = "step.undo_routed"
    COMPENSATION_STARTED = "compensation.started"
    COMPENSATION_GAVE_UP = "compensation.gave_up"
    COMPENSATION_FINISHED = "compensation.finished"
    SIGNAL_RECEIVED = "signal.received"
    COMMAND_ACCEPTED = "command.accepted"
    LEASE_RECLAIMED = "lease.reclaimed"
    CRON_TICKS_SKIPPED = "cron.ticks_skipped"
    DELIVERY_REFUSED = "delivery.refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class Emit:
    """Publish an observable event after the commit."""

    topic: Topic
    run_id: RunId
    workflow: str
    step: str | None = None
    attempt: int | None = None
    attributes: JsonObject = field(default_factory=lambda: EMPTY_OBJECT)
    at: datetime | None = None
    """When the decision that emitted it was made (the core's ``now``)."""
    run_status: str | None = None
    """The run's status once the decision is committed."""


Command: TypeAlias = ScheduleJob | RescheduleJob | CancelJob | FinishJob | Emit


@dataclass(frozen=True, slots=True, kw_only=True)
class StartedAttempt:
    """The attempt a decision started: everything a worker needs to run it."""

    job_id: JobId
    lease_token: LeaseToken
    step: str
    attempt: int
    input: JsonObject
    started_at: datetime
    timeout_at: datetime | None = None
    """When the attempt must have ended (the step's ``timeout``); the worker stops it then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The new state of a run and the commands that must accompany it.

    ``state.version`` is one more than the version the decision was based on
    (1 for a new run); stores use it for optimistic concurrency.

    ``started`` is the attempt this decision started (a delivery, or the next
    step handed to the same worker), if any; ``reclaimed`` is true when the
    decision recorded a lost attempt for a job whose lease had expired.
    """

    state: RunState
    commands: tuple[Command, ...] = ()
    started: StartedAttempt | None = None
    reclaimed: bool = False

    @property
    def expected_version(self) -> int:
        """The stored version this decision must replace (0 for a new run)."""
        return self.state.version - 1

    @property
    def jobs_scheduled(self) -> tuple[Job, ...]:
        """Jobs this decision inserts."""
        return tuple(c.job for c in self.commands if isinstance(c, ScheduleJob))

    @property
    def emitted(self) -> tuple[Emit, ...]:
        """Events to publish after the commit."""
        return tuple(c for c in self.commands if isinstance(c, Emit))

    def due_now(self, now: datetime) -> tuple[Job, ...]:
        """Jobs this decision inserts unleased and due by ``now``: work for a dispatcher."""
        return tuple(
            c.job
            for c in self.commands
            if isinstance(c, ScheduleJob) and c.lease is None and c.job.due_at <= now
        )

    def wakes_dispatcher(self, now: datetime) -> bool:
        """Whether a dispatcher should look for due jobs now (new due work or a moved job)."""
        return bool(self.due_now(now)) or any(isinstance(c, RescheduleJob) for c in self.commands)


def combine(first: Decision, second: Decision, *, lease: Lease | None = None) -> Decision:
    """One decision that commits ``first`` and then ``second`` (made on ``first.state``).

    The store applies it as a single change of one version, so two facts that
    belong together (a step's outcome, and the start of the next step by the same
    worker) cost one transaction. A job that ``first`` schedules and ``second``
    starts is inserted as ``second`` left it, carrying ``lease`` when given.

    Raises:
        ValueError: ``second`` was not decided on ``first.state``.
    """
    if second.state.id != first.state.id or second.state.version != first.state.version + 1:
        raise ValueError("the second decision must be made on the first one's state")
    after = {job.id: job for job in second.state.jobs}
    started = None if second.started is None else second.started.job_id
    commands = tuple(
        ScheduleJob(
            job=after.get(c.job.id, c.job),
            lease=lease if c.job.id == started else c.lease,
        )
        if isinstance(c, ScheduleJob)
        else c
        for c in first.commands
    )
    return Decision(
        state=evolve(second.state, version=first.state.version),
        commands=commands + second.commands,
        started=second.started or first.started,
        reclaimed=first.reclaimed or second.reclaimed,
    )
