"""The decider: ``decide(definition, state, event, *, now)`` -> new state plus commands.

Theory of operation. A run advances only through accepted events. For each one
``decide`` checks the event against the state (is the job live, does the lease
token match, does the status table allow the change) and answers with either a
:class:`Decision` or a ``Rejected`` value; it never performs the change itself.

Rules:

1. **Fencing.** Outcomes (success, failure, lease expiry) are accepted only for a
   *started* job whose recorded lease token equals the event's. Anything else —
   unknown, finished, cancelled, forged or duplicated — is ``StaleDelivery``.
2. **One attempt per job.** A job is delivered at most once; retries are new
   jobs with the next attempt number, due when the retry policy says.
3. **Transitions workflows** run one step at a time along ``ok``/``error``
   routes; a ``wait`` step delays the next job by its duration.
   **Dependency workflows** start every step whose dependencies have all
   completed; a ``wait`` delays the steps it unlocks.
4. **Context** is the shallow merge of step outputs in completion order. A step's
   input is payload + context (transitions) or payload + outputs of its
   ancestors (dependencies), narrowed by its ``input`` keys.
5. **Cancellation.** ``pending`` and ``paused`` runs cancel at once. Active runs
   become ``cancelling``; scheduled jobs are made due immediately so the next
   delivery, or the end of the running attempt, converges the run to ``cancelled``.
6. **Terminal runs absorb.** Once ``failed``, ``completed`` or ``cancelled``, the
   status never changes and no job is scheduled again. An attempt still running
   at that point may report its outcome: it is recorded for history only.
7. **People and signals.** Pause, approval and signal steps park the run instead
   of running (``_parking``); operator commands (cancel, unblock, approve,
   reject, signals) are audited and idempotent (``_operator``). The delivery of
   a parked step's timer is its timeout.
8. **An error lasts as long as its failure.** ``last_error`` is cleared when a
   step succeeds and no other step is retrying after a failure, so a recovered
   step leaves none.
9. **A lost attempt is not a failure.** An attempt whose worker died (its lease
   expired) runs again at once, without a retry policy and without using its
   attempts, up to the step's ``max_lost``; one more gives up like a failure.
   Failure retries count failed attempts only (ADR 0007).
10. **A timed-out attempt never commits an outcome.** An attempt of a step with
    a ``timeout`` must end by ``started_at + timeout``: any outcome reported at or
    after that (success, failure, re-check, or its lease expiring) is recorded as a
    ``timed_out`` failure instead, retried per the step's policy.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, assert_never

from returns.result import Failure, Result, Success

from squidmesh_core._creation import REPLAY_KEY_PREFIX, replay, replay_key, start_run
from squidmesh_core._draft import Draft, ms
from squidmesh_core._failure import (
    MAX_FAILURE_TEXT,
    failure_attributes,
    storable_failure,
    unknown_step,
)
from squidmesh_core._operator import decide_command
from squidmesh_core._parking import park, timed_out
from squidmesh_core._routing import (
    RESERVED_CONTEXT_KEYS,
    route_give_up,
    route_success,
    step_input,
)
from squidmesh_core.commands import Decision, StartedAttempt, Topic
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import (
    InvariantViolatedError,
    Rejected,
    StaleDelivery,
)
from squidmesh_core.events import (
    ApproveRequested,
    CancelRequested,
    Event,
    JobDelivered,
    LeaseExpired,
    RejectRequested,
    ReplayRequested,
    RunRequested,
    SignalSent,
    StepDeferred,
    StepFailed,
    StepSucceeded,
    UnblockRequested,
)
from squidmesh_core.jsonvalue import JsonObject, check_json_object
from squidmesh_core.retry import GiveUp, GiveUpReason, RetryAt, clamp_delay, decide_retry
from squidmesh_core.state import (
    DEFERRED_KIND,
    INVALID_OUTPUT,
    TIMED_OUT,
    WORKER_LOST,
    Attempt,
    AttemptStatus,
    Job,
    JobStatus,
    RunState,
    RunStatus,
    StepFailure,
    StepStatus,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

__all__ = [
    "REPLAY_KEY_PREFIX",
    "RESERVED_CONTEXT_KEYS",
    "decide",
    "replay_key",
    "step_input",
    "storable_failure",
]

_NO_DELAY = timedelta(0)


def _live_attempt(draft: Draft, job: Job) -> Attempt:
    attempt = next((a for a in draft.step_run(job.step).attempts if a.number == job.attempt), None)
    if attempt is None or attempt.status is not AttemptStatus.RUNNING:
        raise InvariantViolatedError(f"started job {job.id} has no running attempt")
    return attempt


def _stale(run: RunState, job_id: str) -> Failure[StaleDelivery]:
    reason = "no live job with this id"
    if run.status.terminal:
        reason += f" (run is {run.status})"
    return Failure(StaleDelivery(job_id=job_id, reason=reason))


def _started_job(run: RunState, job_id: str, token: str) -> Result[Job, StaleDelivery]:
    job = run.job(job_id)
    if job is None:
        return _stale(run, job_id)
    if job.status is not JobStatus.STARTED:
        return Failure(StaleDelivery(job_id=job_id, reason="the job has not been delivered"))
    if job.lease_token != token:
        return Failure(
            StaleDelivery(job_id=job_id, reason="lease token does not match the current lease")
        )
    return Success(job)


# ---------------------------------------------------------------- per event


def _deliver(
    definition: WorkflowDefinition, run: RunState, event: JobDelivered, now: datetime
) -> Result[Decision, Rejected]:
    job = run.job(event.job_id)
    if job is None:
        return _stale(run, event.job_id)
    if job.status is JobStatus.STARTED:
        reason = (
            "duplicate delivery: the attempt is already running"
            if job.lease_token == event.lease_token
            else "the job is leased to another worker"
        )
        return Failure(StaleDelivery(job_id=event.job_id, reason=reason))
    draft = Draft(definition, run, now)
    if run.status is RunStatus.CANCELLING:
        draft.converge_cancel()
        return Success(draft.finish())
    step_run = run.step_run(job.step)
    if step_run is not None and step_run.status is StepStatus.PARKED:
        timed_out(draft, step_run)  # the only job a parked step has is its timeout
        return Success(draft.finish())
    if run.status not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.RETRYING):
        return Failure(StaleDelivery(job_id=event.job_id, reason=f"run is {run.status}"))
    spec = definition.step(job.step)
    if spec is None:
        draft.fail_run(unknown_step(definition, job.step))
        return Success(draft.finish())
    if spec.kind.parks:
        if step_run is not None and step_run.status is not StepStatus.SCHEDULED:
            # A redeploy turned a step with a retry pending into a parking step.
            draft.fail_run(
                StepFailure(
                    kind="invalid_step",
                    message=f"step {job.step!r} is now a {spec.kind} step, but it has "
                    f"attempts in this run; it cannot park",
                    retryable=False,
                )
            )
        else:
            park(draft, spec, delivered=job)
        return Success(draft.finish())
    started = replace(job, status=JobStatus.STARTED, lease_token=event.lease_token)
    draft.set_jobs(tuple(started if j.id == job.id else j for j in run.jobs))
    current = draft.step_run(job.step)
    given = step_input(definition, run, job.step)
    draft.put_step(replace(current, status=StepStatus.RUNNING, input=given, updated_at=now))
    timeout_at = now + spec.timeout if spec.timeout is not None else None
    draft.put_attempt(
        job.step,
        Attempt(
            number=job.attempt,
            status=AttemptStatus.RUNNING,
            job_id=job.id,
            lease_token=event.lease_token,
            started_at=now,
            timeout_at=timeout_at,
        ),
    )
    draft.emit(
        Topic.STEP_STARTED,
        step=job.step,
        attempt=job.attempt,
        attributes={"job_id": job.id, "lateness_ms": ms(now - job.due_at)},
    )
    draft.started = StartedAttempt(
        job_id=job.id,
        lease_token=event.lease_token,
        step=job.step,
        attempt=job.attempt,
        input=given,
        started_at=now,
        timeout_at=timeout_at,
    )
    draft.settle_active()
    return Success(draft.finish())


def _invalid_output(message: str) -> StepFailure:
    return StepFailure(kind=INVALID_OUTPUT, message=message, retryable=False)


def _unusable_output(
    definition: WorkflowDefinition, job: Job, output: object
) -> Result[JsonObject, StepFailure]:
    """The step's output as a storable JSON object, or the failure it amounts to."""
    checked = check_json_object(output, limits=definition.limits)
    if isinstance(checked, Success):
        return checked
    problem = checked.failure()
    return Failure(
        _invalid_output(
            f"step {job.step!r} returned unstorable output: "
            f"output{problem.path[1:]} {problem.reason}"
        )
    )


def _succeed(
    definition: WorkflowDefinition, run: RunState, event: StepSucceeded, now: datetime
) -> Result[Decision, Rejected]:
    found = _started_job(run, event.job_id, event.lease_token)
    if isinstance(found, Failure):
        return found
    job = found.unwrap()
    spec = definition.step(job.step)
    output = _unusable_output(definition, job, event.output)
    if isinstance(output, Failure):
        return Success(_fail(definition, run, job=job, failure=output.failure(), now=now))
    if spec is None:
        failure = unknown_step(definition, job.step)
        return Success(_fail(definition, run, job=job, failure=failure, now=now))
    mapped: JsonObject = (
        {spec.output_key: dict(output.unwrap())} if spec.output_key else output.unwrap()
    )
    reserved = sorted(RESERVED_CONTEXT_KEYS.intersection(mapped))
    if reserved:
        failure = _invalid_output(
            f"step {job.step!r} returned the reserved key {reserved[0]!r} "
            "(set by SquidMesh for cron runs)"
        )
        return Success(_fail(definition, run, job=job, failure=failure, now=now))
    draft = Draft(definition, run, now)
    attempt = _live_attempt(draft, job)
    draft.put_attempt(job.step, replace(attempt, status=AttemptStatus.SUCCEEDED, finished_at=now))
    draft.put_step(
        replace(
            draft.step_run(job.step),
            status=StepStatus.COMPLETED,
            output=mapped,
            updated_at=now,
            replay_guard=definition.replay_guard(job.step),
        )
    )
    draft.drop_job(draft.job(job.id) or job)
    draft.emit(
        Topic.STEP_COMPLETED,
        step=job.step,
        attempt=job.attempt,
        attributes={"duration_ms": ms(now - attempt.started_at)},
    )
    if run.status.terminal:
        return Success(draft.finish())
    draft.set_context({**draft.context, **mapped})
    if run.status is RunStatus.CANCELLING:
        draft.converge_cancel()
        return Success(draft.finish())
    if not any(
        s.step != job.step
        and s.error is not None
        and s.status in (StepStatus.RETRY_SCHEDULED, StepStatus.RUNNING)
        for s in draft.steps
    ):
        draft.set_last_error(None)  # no other step is recovering from a failure
    route_success(draft, spec, job)
    return Success(draft.finish())


def _fail(
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
    attempt = _live_attempt(draft, job)
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
    spec = definition.step(job.step)
    attempts = draft.step_run(job.step).attempts
    verdict: RetryAt | GiveUp
    if attempt_status is AttemptStatus.LOST:  # the worker died: the step did not fail
        lost = sum(1 for a in attempts if a.status is AttemptStatus.LOST)
        bound = 0 if spec is None else spec.max_lost
        verdict = (
            RetryAt(attempt=job.attempt + 1, delay=_NO_DELAY, at=now)
            if lost <= bound
            else GiveUp(reason=GiveUpReason.EXHAUSTED, attempts=job.attempt)
        )
    else:
        failed = sum(1 for a in attempts if a.status is AttemptStatus.FAILED)
        verdict = decide_retry(
            None if spec is None else spec.retry,
            failed_attempt=failed,
            retryable=failure.retryable,
            retry_after=failure.retry_after,
            run_id=run.id,
            step=job.step,
            now=now,
        )
        if isinstance(verdict, RetryAt):  # attempt numbers count lost attempts too
            verdict = RetryAt(attempt=job.attempt + 1, delay=verdict.delay, at=verdict.at)
    match verdict:
        case RetryAt(attempt=next_attempt, delay=delay, at=due_at):
            settle_step(StepStatus.RETRY_SCHEDULED)
            draft.schedule(job.step, next_attempt, due_at)
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
            route_give_up(draft, job, failure)
        case _:
            assert_never(verdict)
    return draft.finish()


def _step_failed(
    definition: WorkflowDefinition, run: RunState, event: StepFailed, now: datetime
) -> Result[Decision, Rejected]:
    return _started_job(run, event.job_id, event.lease_token).map(
        lambda job: _fail(
            definition,
            run,
            job=job,
            failure=event.failure,
            attempt_status=AttemptStatus.FAILED,
            now=now,
        )
    )


def _deferred(
    definition: WorkflowDefinition, run: RunState, event: StepDeferred, now: datetime
) -> Result[Decision, Rejected]:
    found = _started_job(run, event.job_id, event.lease_token)
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
        return Success(_fail(definition, run, job=job, failure=limit, now=now))
    draft = Draft(definition, run, now)
    attempt = _live_attempt(draft, job)
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
    if run.status.terminal or run.status is RunStatus.CANCELLING:  # nobody looks again
        draft.put_step(replace(draft.step_run(job.step), status=StepStatus.FAILED, updated_at=now))
        if run.status is RunStatus.CANCELLING:
            draft.converge_cancel()
        return Success(draft.finish())
    draft.put_step(replace(draft.step_run(job.step), status=StepStatus.SCHEDULED, updated_at=now))
    draft.schedule(job.step, job.attempt + 1, now + delay)
    draft.settle_active()
    return Success(draft.finish())


def _lease_expired(
    definition: WorkflowDefinition, run: RunState, event: LeaseExpired, now: datetime
) -> Result[Decision, Rejected]:
    lost = StepFailure(
        kind=WORKER_LOST,
        message="the worker's lease expired before the attempt reported an outcome",
        retryable=True,
    )
    return _started_job(run, event.job_id, event.lease_token).map(
        lambda job: _fail(
            definition, run, job=job, failure=lost, attempt_status=AttemptStatus.LOST, now=now
        )
    )


def _past_timeout(
    definition: WorkflowDefinition,
    run: RunState,
    event: StepSucceeded | StepFailed | StepDeferred | LeaseExpired,
    now: datetime,
) -> Result[Decision, Rejected] | None:
    """Rule 10: an outcome at or after the attempt's timeout is a ``timed_out`` failure."""
    found = _started_job(run, event.job_id, event.lease_token)
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
    return Success(_fail(definition, run, job=job, failure=failure, now=now))


def _outcome(
    definition: WorkflowDefinition,
    run: RunState,
    event: StepSucceeded | StepFailed | StepDeferred | LeaseExpired,
    now: datetime,
) -> Result[Decision, Rejected]:
    """What an attempt's outcome does (a timed-out attempt's first, rule 10)."""
    timed_out = _past_timeout(definition, run, event, now)
    if timed_out is not None:
        return timed_out
    match event:
        case StepSucceeded():
            return _succeed(definition, run, event, now)
        case StepFailed():
            return _step_failed(definition, run, event, now)
        case StepDeferred():
            return _deferred(definition, run, event, now)
        case LeaseExpired():
            return _lease_expired(definition, run, event, now)
        case _:
            assert_never(event)


def decide(
    definition: WorkflowDefinition, state: RunState | None, event: Event, *, now: datetime
) -> Result[Decision, Rejected]:
    """Decide what ``event`` does to the run ``state`` at time ``now``.

    Args:
        definition: the run's validated workflow.
        state: the run as last committed; ``None`` only for :class:`RunRequested`.
        event: the fact to apply.
        now: current time (UTC), supplied by the shell's clock.

    Returns:
        ``Success(Decision)`` with the next state (version + 1) and commands, or
        ``Failure`` with ``UnknownTrigger`` / ``InvalidPayload`` (new runs and
        replays), ``StaleDelivery`` (job not live, token mismatch, duplicate) or
        ``InvalidTransition`` (cancelling a finished or cancelling run).

    Raises:
        InvariantViolatedError: ``state`` is missing when required (or given for a
            new run), or belongs to another workflow.
    """
    if isinstance(event, RunRequested):
        if state is not None:
            raise InvariantViolatedError("RunRequested takes no existing state")
        return start_run(definition, event, now)
    if state is None:
        raise InvariantViolatedError(f"{type(event).__name__} needs the run's state")
    if state.workflow != definition.name:
        raise InvariantViolatedError(
            f"run {state.id} belongs to {state.workflow}, not {definition.name}"
        )
    match event:
        case ReplayRequested():
            return replay(definition, state, event, now)
        case JobDelivered():
            return _deliver(definition, state, event, now)
        case StepSucceeded() | StepFailed() | StepDeferred() | LeaseExpired():
            return _outcome(definition, state, event, now)
        case (
            CancelRequested()
            | UnblockRequested()
            | ApproveRequested()
            | RejectRequested()
            | SignalSent()
        ):
            return decide_command(definition, state, event, now)
        case _:
            assert_never(event)
