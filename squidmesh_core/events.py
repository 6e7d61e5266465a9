"""Facts the core accepts: everything that can happen to a run.

Each event is a past-tense fact reported by the shell. ``decide`` either turns
it into a :class:`~squidmesh_core.commands.Decision` or refuses it with a typed
``Rejected`` value. Events carry ids and data only, never callables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeAlias

from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject
from squidmesh_core.state import StepFailure


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequested:
    """Someone asked for a new run (the state passed to ``decide`` is ``None``)."""

    run_id: RunId
    payload: object
    """The caller's payload, not yet validated."""
    trigger: str | None = None
    """Trigger name; ``None`` means the workflow's default (first) trigger."""
    idempotency_key: IdempotencyKey | None = None
    context: JsonObject = field(default_factory=lambda: EMPTY_OBJECT)
    """Initial run context supplied by the shell (e.g. cron schedule metadata)."""
    deadline: timedelta | None = None
    """This run's deadline (after its start), instead of the workflow's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDelivered:
    """A worker holding lease ``lease_token`` received job ``job_id`` and is about to run it."""

    job_id: JobId
    lease_token: LeaseToken
    worker: str | None = None
    """The worker's name (its ``RuntimeSettings.owner``), recorded on the attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSucceeded:
    """The attempt of ``job_id`` finished with ``output`` (checked to be a JSON object)."""

    job_id: JobId
    lease_token: LeaseToken
    output: object


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDeferred:
    """The attempt of ``job_id`` said "not yet": look again in ``after`` (a re-check)."""

    job_id: JobId
    lease_token: LeaseToken
    after: timedelta
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed:
    """The attempt of ``job_id`` failed with ``failure``."""

    job_id: JobId
    lease_token: LeaseToken
    failure: StepFailure


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseExpired:
    """The store found the lease ``lease_token`` on ``job_id`` expired: the worker is lost."""

    job_id: JobId
    lease_token: LeaseToken


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """Who issued an operator command, why, and the key that makes repeating it safe.

    The shell checks the strings' length and characters; the core checks what a
    command requires (an approval needs an actor).
    """

    actor: str | None = None
    note: str | None = None
    idempotency_key: str | None = None


ANONYMOUS = Operator()


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    """Someone asked to cancel the run."""

    by: Operator = ANONYMOUS


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayRequested:
    """Someone asked for a new run, ``new_run_id``, from this run's payload."""

    new_run_id: RunId
    by: Operator = ANONYMOUS
    allow_irreversible: object = False
    """Only the exact value ``True`` lets a replay repeat guarded steps."""
    from_step: str | None = None
    """Reuse the recorded outputs of the steps before this one and start there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnblockRequested:
    """Someone asked a run parked at a ``pause`` step to go on."""

    by: Operator


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproveRequested:
    """A reviewer approved the run parked at an ``approval`` step."""

    by: Operator


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectRequested:
    """A reviewer rejected the run parked at an ``approval`` step."""

    by: Operator


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalSent:
    """Signal ``name`` arrived for the run with ``payload`` (not yet validated)."""

    name: str
    payload: object
    by: Operator = ANONYMOUS


OperatorEvent: TypeAlias = (
    CancelRequested | UnblockRequested | ApproveRequested | RejectRequested | SignalSent
)
"""Commands audited on the run they change (a replay is audited on the run it creates)."""

Event: TypeAlias = (
    RunRequested
    | JobDelivered
    | StepSucceeded
    | StepFailed
    | StepDeferred
    | LeaseExpired
    | CancelRequested
    | ReplayRequested
    | UnblockRequested
    | ApproveRequested
    | RejectRequested
    | SignalSent
)
