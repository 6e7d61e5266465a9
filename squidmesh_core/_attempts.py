"""Attempts ending: failures and their retries, re-checks, timeouts (used by ``decide``).

The rules are ``decide``'s (fencing 1, one attempt per job 2, lost attempts 9,
timeouts 10); this module holds the functions that apply them to one attempt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, assert_never

from returns.result import Failure, Result, Success

from squidmesh_core._compensation import advance, gave_up
from squidmesh_core._draft import Draft, ms
from squidmesh_core._failure import MAX_FAILURE_TEXT, failure_attributes, storable_failure
from squidmesh_core._routing import route_give_up
from squidmesh_core.commands import Decision, Topic
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import InvariantViolatedError, Rejected, StaleDelivery
from squidmesh_core.events import StepDeferred, StepFailed, StepSucceeded
from squidmesh_core.retry import GiveUp, GiveUpReason, RetryAt, clamp_delay, decide_retry
from squidmesh_core.state import (
    DEFERRED_KIND,
    TIMED_OUT,
    Attempt,
    AttemptStatus,
    Job,
    JobStatus,
    RunState,
    RunStatus,
    StepFailure,
    StepStatus,
    compensated_step,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

_NO_DELAY = timedelta(0)


def live_attempt(draft: Draft, job: Job) -> Attempt:
    attempt = next((a for a in draft.step_run(job.step).attempts if a.number == job.attempt), None)
    if attempt is None or attempt.status is not AttemptStatus.RUNNING:
        raise InvariantViolatedError(f"started job {job.id} has no running attempt")
    return attempt


def stale(run: RunState, job_id: str) -> Failure[StaleDelivery]:
    reason = "no live job with this id"
    if run.status.terminal:
        reason += f" (run is {run.status})"
    return Failure(StaleDelivery(job_id=job_id, reason=reason))


def started_job(run: RunState, job_id: str, token: str) -> Result[Job, StaleDelivery]:
    job = run.job(job_id)
    if job is None:
        return stale(run, job_id)
    if job.status is not JobStatus.STARTED:
        return Failure(StaleDelivery(job_id=job_id, reason="the job has not been delivered"))
    if job.lease_token != token:
        return Failure(
            StaleDelivery(job_id=job_id, reason="lease token does not match the current lease")
        )
    return Success(job)


# ---------------------------------------------------------------- per event


def fail_attempt(
    definition: WorkflowDefinition,
    run: RunState,
    *,
    job: Job,
    failure: StepFailure,
    now: datetime,
    attempt_status: AttemptStatus = AttemptStatus.FAILED,
) -> Decision:
    failure = storable_failure(failure)
    draft = Draft(definition, run, now)
    attempt = live_attempt(draft, job)
    draft.put_attempt(
        job.step, replace(attempt, status=attempt_status, finished_at=now, error=failure)
    )
    draft.drop_job(draft.job(job.id) or job)
    draft.emit(
        Topic.STEP_FAILED,
        step=job.step,
        attempt=job.attempt,
        attributes={
            "error": failure_attributes(failure),
            "duration_ms": ms(now - attempt.started_at),
        },
    )
    if attempt_status is AttemptStatus.LOST:
        draft.emit(Topic.LEASE_RECLAIMED, step=job.step, attempt=job.attempt)

    def settle_step(status: StepStatus) -> None:
        draft.put_step(
            replace(draft.step_run(job.step), status=status, error=failure, updated_at=now)
        )

    if run.status.terminal:
        settle_step(StepStatus.FAILED)
        return draft.finish()
    if run.status is RunStatus.CANCELLING:
        settle_step(StepStatus.FAILED)
        draft.converge_cancel()
        return draft.finish()
    undoes = compensated_step(job.step)
    if run.status is RunStatus.COMPENSATING and undoes is None:  # forward: history only
        settle_step(StepStatus.FAILED)
        advance(draft)
        return draft.finish()
    verdict = _verdict(
        definition, draft, job=job, failure=failure, lost=attempt_status is AttemptStatus.LOST
    )
    match verdict:
        case RetryAt(attempt=next_attempt, delay=delay, at=due_at):
            settle_step(StepStatus.RETRY_SCHEDULED)
            draft.schedule(job.step, next_attempt, due_at)
            if undoes is None:  # a compensation keeps the run's cause as its error
                draft.set_last_error(failure)
            draft.emit(
                Topic.STEP_RETRY_SCHEDULED,
                step=job.step,
                attempt=next_attempt,
                attributes={
                    "failed_attempt": job.attempt,
                    "next_attempt": next_attempt,
                    "delay_ms": ms(delay),
                    "due_at": due_at.isoformat(),
                },
            )
            draft.settle_active()
        case GiveUp():
            settle_step(StepStatus.FAILED)
            if undoes is None:
                route_give_up(draft, job, failure)
            else:
                gave_up(draft, job, failure)
        case _:
            assert_never(verdict)
    return draft.finish()


def _verdict(
    definition: WorkflowDefinition, draft: Draft, *, job: Job, failure: StepFailure, lost: bool
) -> RetryAt | GiveUp:
    """Whether an attempt that ended runs again, and when (rules 2 and 9)."""
    spec = definition.step(job.step)
    attempts = draft.step_run(job.step).attempts
    now = draft.now
    if lost:  # the worker died: the step did not fail
        count = sum(1 for a in attempts if a.status is AttemptStatus.LOST)
        bound = 0 if spec is None else spec.max_lost
        if count <= bound:
            return RetryAt(attempt=job.attempt + 1, delay=_NO_DELAY, at=now)
        return GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=job.attempt)
    failed = sum(1 for a in attempts if a.status is AttemptStatus.FAILED)
    verdict = decide_retry(
        None if spec is None else spec.retry,
        failed_attempt=failed,
        retryable=failure.retryable,
        retry_after=failure.retry_after,
        run_id=draft.origin.id,
        step=job.step,
        now=now,
    )
    if isinstance(verdict, RetryAt):  # attempt numbers count lost attempts too
        return RetryAt(attempt=job.attempt + 1, delay=verdict.delay, at=verdict.at)
    return verdict


def deferred(
    definition: WorkflowDefinition, run: RunState, event: StepDeferred, now: datetime
) -> Result[Decision, Rejected]:
    found = started_job(run, event.job_id, event.lease_token)
    if isinstance(found, Failure):
        return found
    job = found.unwrap()
    spec = definition.step(job.step)
    delay = clamp_delay(event.after)
    note = StepFailure(
        kind=DEFERRED_KIND,
        message=(event.reason or "not yet")[:MAX_FAILURE_TEXT],
        retryable=True,
        retry_after=delay,
    )
    step_run = run.step_run(job.step)
    attempts = () if step_run is None else step_run.attempts
    deferred = sum(1 for a in attempts if a.status is AttemptStatus.DEFERRED)
    if spec is None or deferred >= spec.max_rechecks:
        limit = StepFailure(
            kind="recheck_limit",
            message=f"step {job.step!r} deferred {deferred + 1} times, more than its "
            f"max_rechecks allows",
            retryable=False,
        )
        return Success(fail_attempt(definition, run, job=job, failure=limit, now=now))
    draft = Draft(definition, run, now)
    attempt = live_attempt(draft, job)
    draft.put_attempt(
        job.step,
        replace(attempt, status=AttemptStatus.DEFERRED, finished_at=now, error=note),
    )
    draft.drop_job(draft.job(job.id) or job)
    draft.emit(
        Topic.STEP_DEFERRED,
        step=job.step,
        attempt=job.attempt,
        attributes={
            "reason": note.message,
            "due_at": (now + delay).isoformat(),
            "next_attempt": job.attempt + 1,
        },
    )
    forward_while_undoing = (
        run.status is RunStatus.COMPENSATING and compensated_step(job.step) is None
    )
    if run.status.terminal or run.status is RunStatus.CANCELLING or forward_while_undoing:
        draft.put_step(replace(draft.step_run(job.step), status=StepStatus.FAILED, updated_at=now))
        if run.status is RunStatus.CANCELLING:
            draft.converge_cancel()
        elif forward_while_undoing:
            advance(draft)
        return Success(draft.finish())
    draft.put_step(replace(draft.step_run(job.step), status=StepStatus.SCHEDULED, updated_at=now))
    draft.schedule(job.step, job.attempt + 1, now + delay)
    draft.settle_active()
    return Success(draft.finish())


def past_timeout(
    definition: WorkflowDefinition,
    run: RunState,
    event: StepSucceeded | StepFailed | StepDeferred,
    now: datetime,
) -> Result[Decision, Rejected] | None:
    """Rule 10: an outcome at or after the attempt's timeout is a ``timed_out`` failure."""
    if not definition.timed_steps:  # the common case costs one attribute read
        return None
    found = started_job(run, event.job_id, event.lease_token)
    if isinstance(found, Failure):
        return None  # the event's own handler refuses it
    job = found.unwrap()
    step_run = run.step_run(job.step)
    attempt = None if step_run is None else step_run.attempts[-1]
    if attempt is None or attempt.timeout_at is None or now < attempt.timeout_at:
        return None
    failure = StepFailure(
        kind=TIMED_OUT,
        message=f"attempt {job.attempt} of {job.step!r} ran past its timeout "
        f"({attempt.timeout_at - attempt.started_at})",
        retryable=True,
        details={"timeout_at": attempt.timeout_at.isoformat()},
    )
    return Success(fail_attempt(definition, run, job=job, failure=failure, now=now))
