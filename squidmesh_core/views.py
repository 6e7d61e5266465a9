"""What the public API returns: read-only views of a run.

A :class:`Run` is built from a :class:`RunState`; its ``history`` (step runs in
the order they were scheduled, each with its attempts, input, output, error and
times) is filled only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from squidmesh_core.definition import DEADLINE
from squidmesh_core.ids import IdempotencyKey, JobId, RunId
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.state import (
    AuditEntry,
    Compensation,
    JobStatus,
    RunState,
    RunStatus,
    Signal,
    StepFailure,
    StepRunState,
    StepStatus,
    compensated_step,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledJob:
    """A live job of the run: when it is due, and what it is for."""

    id: JobId
    step: str
    attempt: int
    due_at: datetime
    status: JobStatus
    purpose: str
    """``step`` (a first attempt or the step after a wait), ``retry``, ``timeout``
    (a signal wait's), ``deadline`` (the run's) or ``compensation``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """What an operator command did: its audit entry, and whether it was a repeat."""

    entry: AuditEntry
    repeated: bool = False
    """``True`` when the same command with the same idempotency key had been accepted
    before: nothing changed and ``entry`` is the first receipt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A run as the public API shows it."""

    id: RunId
    workflow: str
    trigger: str
    status: RunStatus
    payload: JsonObject
    context: JsonObject
    current_steps: tuple[str, ...]
    """Steps scheduled, running or awaiting a retry."""
    last_error: StepFailure | None
    created_at: datetime
    updated_at: datetime
    version: int
    replayed_from: RunId | None = None
    idempotency_key: IdempotencyKey | None = None
    history: tuple[StepRunState, ...] | None = None
    """Step runs with their attempts, in scheduling order; ``None`` unless requested."""
    existing: bool = False
    """``True`` when ``start_run`` returned an earlier run with the same idempotency key."""
    jobs: tuple[ScheduledJob, ...] = ()
    """Live jobs with their due times, earliest first."""
    parked_step: str | None = None
    """The pause, approval or signal step the run waits at, if any."""
    failed_step: str | None = None
    """For a failed run, the step whose failure ended it."""
    audit: tuple[AuditEntry, ...] | None = None
    """Accepted operator commands, oldest first; ``None`` unless history is requested."""
    signals: tuple[Signal, ...] | None = None
    """Signals received (taken and waiting); ``None`` unless history is requested."""
    receipt: Receipt | None = None
    """For the run an operator command returns: what the command did."""
    compensation: Compensation | None = None
    """For a run that compensated (or is compensating): why, the plan, when it ended."""


def _purpose(state: RunState, step: str, attempt: int) -> str:
    if step == DEADLINE:
        return "deadline"
    if compensated_step(step) is not None:
        return "compensation"
    step_run = state.step_run(step)
    if step_run is not None and step_run.status is StepStatus.PARKED:
        return "timeout"
    return "retry" if attempt > 1 else "step"


def _failed_step(state: RunState) -> str | None:
    if state.status not in (
        RunStatus.FAILED,
        RunStatus.COMPENSATING,
        RunStatus.COMPENSATION_FAILED,
    ):
        return None
    failed = [
        s for s in state.steps if s.status is StepStatus.FAILED and compensated_step(s.step) is None
    ]
    return max(failed, key=lambda s: s.updated_at).step if failed else None


def run_view(
    state: RunState,
    *,
    include_history: bool = False,
    existing: bool = False,
    receipt: Receipt | None = None,
) -> Run:
    """Build the public view of ``state``."""
    parked = state.parked_step
    return Run(
        id=state.id,
        workflow=state.workflow,
        trigger=state.trigger,
        status=state.status,
        payload=state.payload,
        context=state.context,
        current_steps=state.current_steps,
        last_error=state.last_error,
        created_at=state.created_at,
        updated_at=state.updated_at,
        version=state.version,
        replayed_from=state.replayed_from,
        idempotency_key=state.idempotency_key,
        history=tuple(s for s in state.steps if s.step != DEADLINE) if include_history else None,
        existing=existing,
        jobs=tuple(
            ScheduledJob(
                id=j.id,
                step=j.step,
                attempt=j.attempt,
                due_at=j.due_at,
                status=j.status,
                purpose=_purpose(state, j.step, j.attempt),
            )
            for j in sorted(state.jobs, key=lambda j: (j.due_at, j.id))
        ),
        parked_step=None if parked is None else parked.step,
        failed_step=_failed_step(state),
        audit=state.audit if include_history else None,
        signals=state.signals if include_history else None,
        receipt=receipt,
        compensation=state.compensation,
    )
