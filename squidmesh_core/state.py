"""Run state: frozen values describing one run, its step runs, attempts and live jobs.

Vocabulary (one word, one meaning):

* **Run**: one execution of a workflow, started by a trigger with a payload.
* **StepRun** (:class:`StepRunState`): one step within a run; holds its attempts.
* **Attempt**: one try of a step by a worker, fenced by a lease token.
* **Job**: the durable, scheduled delivery of one attempt. It is *scheduled*
  until a worker claims it and *started* once the attempt runs. A run's live
  jobs are exactly the ``jobs`` tuple; a job leaves it when its attempt ends or
  it is cancelled.

All mappings inside are JSON objects and are never mutated: every change builds
a new value with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject, JsonValue

DEADLINE_STEP = "__deadline__"
"""The step name of a run's deadline timer (reserved: no workflow may declare it)."""

COMPENSATE_SUFFIX = ":compensate"
"""A step's compensation runs as the pseudo-step ``<step>:compensate`` (no step
name may hold a ``:``, so it never meets a declared step)."""

SCHEMA_VERSION = 4
"""Version of the persisted shape of :class:`RunState` (see ``codec``).

Version 2 added parked steps, the audit trail and the signal inbox; version 3
the compensation record and the recovery route of a step; version 4 the worker
of an attempt. Older records decode with none of them.
"""


def compensation_step(step: str) -> str:
    """The pseudo-step that runs ``step``'s compensation.

    >>> compensation_step("charge")
    'charge:compensate'
    """
    return step + COMPENSATE_SUFFIX


def compensated_step(name: str) -> str | None:
    """The step a compensation pseudo-step undoes, or ``None`` for any other name.

    >>> compensated_step("charge:compensate"), compensated_step("charge")
    ('charge', None)
    """
    return name[: -len(COMPENSATE_SUFFIX)] if name.endswith(COMPENSATE_SUFFIX) else None


class RunStatus(StrEnum):
    """Lifecycle of a run; legal changes are listed in ``_table.RUN_TRANSITIONS``."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    FAILED = "failed"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    """It failed (or was cancelled) and is undoing its completed steps."""
    COMPENSATION_FAILED = "compensation_failed"
    """It failed (or was cancelled) and a compensation gave up: a person must look."""

    @property
    def terminal(self) -> bool:
        """True for ``failed``, ``completed``, ``cancelled`` and ``compensation_failed``."""
        return self in _TERMINAL_RUNS


_TERMINAL_RUNS = frozenset(
    {RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.COMPENSATION_FAILED}
)


class StepStatus(StrEnum):
    """Lifecycle of a step run; legal changes are listed in ``_table.STEP_TRANSITIONS``."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRY_SCHEDULED = "retry_scheduled"
    PARKED = "parked"
    """Waiting for a person (pause, approval) or a signal; no worker holds it."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``."""
        return self in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED)


class AttemptStatus(StrEnum):
    """Lifecycle of an attempt; legal changes are listed in ``_table.ATTEMPT_TRANSITIONS``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    DEFERRED = "deferred"
    """The step said "not yet, look again later" (a re-check; no retry used)."""


class JobStatus(StrEnum):
    """A live job is waiting to be claimed (``scheduled``) or running its attempt (``started``)."""

    SCHEDULED = "scheduled"
    STARTED = "started"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailure:
    """Why an attempt failed, with its retry semantics.

    Steps return it inside ``Failure(...)``; the shell builds one from a raised
    exception; the core builds one when a lease expires.
    """

    kind: str
    """Stable category, e.g. ``exception``, ``worker_lost``, ``invalid_output``, ``http``."""
    message: str
    """Human-readable description."""
    retryable: bool = True
    """``False`` skips the retry policy and goes straight to error routing."""
    retry_after: timedelta | None = None
    """If set, the next attempt is due exactly this long after the failure."""
    details: JsonObject = field(default_factory=lambda: EMPTY_OBJECT)
    """Extra JSON facts (exception type, HTTP status, ...)."""

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool = True) -> StepFailure:
        """A failure describing a raised exception: its type, message and ``code``.

        A ``code`` attribute that is a string is kept in ``details``, so a domain
        error raised (or returned in ``Failure``) keeps its stable code.
        """
        details: dict[str, JsonValue] = {"type": f"{type(exc).__module__}.{type(exc).__qualname__}"}
        code = getattr(exc, "code", None)
        if isinstance(code, str):
            details["code"] = code
        return cls(
            kind="exception",
            message=str(exc) or type(exc).__name__,
            retryable=retryable,
            details=details,
        )


WORKER_LOST = "worker_lost"
TIMED_OUT = "timed_out"
DEADLINE_EXCEEDED = "deadline_exceeded"
INVALID_OUTPUT = "invalid_output"
DEFERRED_KIND = "deferred"
"""The ``error`` kind recorded on a deferred attempt (why, and when to look again)."""
REJECTED = "rejected"
"""Failure kind of an approval step a reviewer rejected."""
SIGNAL_TIMEOUT = "signal_timeout"
"""Failure kind of a signal wait whose timeout passed first."""


class ParkKind(StrEnum):
    """What a parked step waits for."""

    PAUSE = "pause"
    APPROVAL = "approval"
    SIGNAL = "signal"


@dataclass(frozen=True, slots=True, kw_only=True)
class Parked:
    """How a parked step resumes, written when it parks (so a redeploy cannot change it).

    ``ok_target`` is where an unblock, an approval or a signal leads; ``error_target``
    where a rejection or a signal timeout leads (``None``: the run fails). Targets
    are step names or ``complete``.
    """

    kind: ParkKind
    since: datetime
    ok_target: str
    error_target: str | None = None
    output_key: str | None = None
    signal: str | None = None
    """The awaited signal's name (signal waits)."""
    timeout_at: datetime | None = None
    """When the signal wait gives up (its timer job is due then)."""
    timeout_job: JobId | None = None
    """The timer job of the timeout, while it is live."""


class RecoveryStrategy(StrEnum):
    """How an ``error`` route that recovers from a failure is labelled."""

    COMPENSATION = "compensation"
    UNDO = "undo"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryRoute:
    """A failed step left along an error route marked ``recovery=``: which, and where to."""

    strategy: RecoveryStrategy
    target: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Compensation:
    """A run undoing its completed steps, written when it starts compensating.

    ``plan`` lists the steps whose compensation runs, latest completion first;
    each runs as the pseudo-step ``<step>:compensate`` (its attempts are in the
    history). The run ends ``ends_as`` when every one succeeded, or
    ``compensation_failed`` when one gave up.
    """

    ends_as: RunStatus
    """``failed`` or ``cancelled``: what the run ends as once compensated."""
    started_at: datetime
    plan: tuple[str, ...]
    cause: StepFailure | None = None
    """The failure that ended the run (``None`` for a cancelled one)."""
    finished_at: datetime | None = None


class OperatorCommand(StrEnum):
    """Operator commands, as the audit trail names them."""

    CANCEL = "cancel"
    UNBLOCK = "unblock"
    APPROVE = "approve"
    REJECT = "reject"
    SIGNAL = "signal"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One accepted operator command: who, when, why, with which key, and what it did.

    Written in the same commit as the change it made; ``outcome`` is the receipt
    (e.g. ``{"from": "paused", "to": "running", "step": "review"}``).
    """

    command: OperatorCommand
    at: datetime
    actor: str | None = None
    note: str | None = None
    idempotency_key: str | None = None
    outcome: JsonObject = field(default_factory=lambda: EMPTY_OBJECT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A signal received by a run: consumed by the step that waited for it, or kept."""

    name: str
    payload: JsonObject
    received_at: datetime
    consumed_by: str | None = None
    """The step that took it; ``None`` while it waits in the inbox."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A durable delivery of attempt ``attempt`` of ``step``, due at ``due_at``."""

    id: JobId
    run_id: RunId
    step: str
    attempt: int
    due_at: datetime
    status: JobStatus = JobStatus.SCHEDULED
    lease_token: LeaseToken | None = None
    """The fencing token of the claim whose delivery started the attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try of a step."""

    number: int
    status: AttemptStatus
    job_id: JobId
    lease_token: LeaseToken
    started_at: datetime
    finished_at: datetime | None = None
    error: StepFailure | None = None
    timeout_at: datetime | None = None
    """When the attempt times out (its step's ``timeout`` after it started)."""
    worker: str | None = None
    """The worker that ran it (its ``RuntimeSettings.owner``); ``None`` when unknown."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRunState:
    """One step within a run."""

    step: str
    status: StepStatus
    scheduled_at: datetime
    updated_at: datetime
    input: JsonObject | None = None
    """Input handed to the latest attempt (snapshot taken when it started)."""
    output: JsonObject | None = None
    """Output as merged into the run context (after ``output`` mapping)."""
    error: StepFailure | None = None
    """The latest failure of this step."""
    attempts: tuple[Attempt, ...] = ()
    parked: Parked | None = None
    """How a pause, approval or signal step resumes (kept after it resumed)."""
    replay_guard: str | None = None
    """``irreversible`` or ``not_compensatable``: recorded when the step completed
    under such a marker; a replay that would run it again needs ``allow_irreversible``."""
    recovery: RecoveryRoute | None = None
    """The marked error route this failed step took, if its route carries ``recovery=``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """Everything known about one run. ``version`` increases by one per accepted decision."""

    id: RunId
    workflow: str
    trigger: str
    status: RunStatus
    payload: JsonObject
    context: JsonObject
    created_at: datetime
    updated_at: datetime
    version: int = 1
    steps: tuple[StepRunState, ...] = ()
    jobs: tuple[Job, ...] = ()
    last_error: StepFailure | None = None
    replayed_from: RunId | None = None
    idempotency_key: IdempotencyKey | None = None
    audit: tuple[AuditEntry, ...] = ()
    """Accepted operator commands, oldest first."""
    signals: tuple[Signal, ...] = ()
    """Signals received, oldest first (consumed ones are kept as history)."""
    compensation: Compensation | None = None
    """Set once the run starts compensating (kept after it finished)."""

    def step_run(self, step: str) -> StepRunState | None:
        """The step run of ``step``, if the step has been scheduled in this run."""
        return next((s for s in self.steps if s.step == step), None)

    def job(self, job_id: str) -> Job | None:
        """The live job with this id, if any."""
        return next((j for j in self.jobs if j.id == job_id), None)

    @property
    def parked_step(self) -> StepRunState | None:
        """The step the run is parked at, if any."""
        return next((s for s in self.steps if s.status is StepStatus.PARKED), None)

    @property
    def current_steps(self) -> tuple[str, ...]:
        """Steps that are scheduled, running, awaiting a retry or parked (not the deadline).

        A compensating run's current step is the compensation it runs.
        """
        return tuple(
            s.step for s in self.steps if not s.status.terminal and s.step != DEADLINE_STEP
        )
