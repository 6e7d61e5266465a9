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
    after that by its worker (success, failure, re-check) is recorded as a
    ``timed_out`` failure instead, retried per the step's policy. An attempt whose
    lease expired is lost (rule 9), whatever its timeout.
11. **Deadlines are timers.** A run with a deadline (its workflow's, or its
    own) has a ``__deadline__`` job due then; delivered before the run
    finished, it fails the run with ``deadline_exceeded`` (attempts still
    running may report, for history only). A run that ends drops it.
12. **A failed run undoes what it did.** Before ending ``failed`` (or
    ``cancelled``, if the workflow opts in) a run whose completed steps declare
    ``compensate`` is ``compensating``: their compensations run one at a time,
    latest completion first, as durable jobs (``_compensation``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, assert_never

from returns.result import Failure, Result, Success

from squidmesh_core._attempts import (
    deferred,
    fail_attempt,
    live_attempt,
    past_timeout,
    stale,
    started_job,
)
from squidmesh_core._compensation import (
    advance,
    compensation_input,
    late_success,
    removed,
)
from squidmesh_core._creation import REPLAY_KEY_PREFIX, replay, replay_key, start_run
from squidmesh_core._draft import Draft, ms
from squidmesh_core._failure import (
    storable_failure,
    unknown_step,
)
from squidmesh_core._operator import decide_command
from squidmesh_core._parking import park, timed_out
from squidmesh_core._routing import (
    RESERVED_CONTEXT_KEYS,
    route_success,
    step_input,
)
from squidmesh_core.commands import Decision, StartedAttempt, Topic
from squidmesh_core.definition import DEADLINE, WorkflowDefinition
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
from squidmesh_core.state import (
    DEADLINE_EXCEEDED,
    INVALID_OUTPUT,
    WORKER_LOST,
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

__all__ = [
    "REPLAY_KEY_PREFIX",
    "RESERVED_CONTEXT_KEYS",
    "decide",
    "replay_key",
    "step_input",
    "storable_failure",
]


_DELIVERABLE = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.RETRYING})


def _deadline_passed(draft: Draft, job: Job) -> None:
    """Rule 11: the run's deadline timer fired before the run finished."""
    draft.drop_job(job)
    timer = draft.step_run(DEADLINE)
    draft.put_step(replace(timer, status=StepStatus.COMPLETED, updated_at=draft.now))
    draft.fail_run(
        StepFailure(
            kind=DEADLINE_EXCEEDED,
            message=f"the run did not finish by its deadline ({job.due_at.isoformat()})",
            retryable=False,
            details={"deadline": job.due_at.isoformat()},
        )
    )


def _deadline_or_cancel(draft: Draft, job: Job) -> None:
    """A delivery to a cancelling run converges it; a deadline timer fires (rules 5, 11)."""
    if job.step != DEADLINE:
        draft.converge_cancel()
    elif draft.status is RunStatus.CANCELLING:  # it is ending anyway: drop the timer
        draft.drop_job(job)
        draft.put_step(
            replace(draft.step_run(DEADLINE), status=StepStatus.COMPLETED, updated_at=draft.now)
        )
    else:
        _deadline_passed(draft, job)


def _deliver(
    definition: WorkflowDefinition, run: RunState, event: JobDelivered, now: datetime
) -> Result[Decision, Rejected]:
    job = run.job(event.job_id)
    if job is None:
        return stale(run, event.job_id)
    if job.status is JobStatus.STARTED:
        reason = (
            "duplicate delivery: the attempt is already running"
            if job.lease_token == event.lease_token
            else "the job is leased to another worker"
        )
        return Failure(StaleDelivery(job_id=event.job_id, reason=reason))
    draft = Draft(definition, run, now)
    if run.status is RunStatus.CANCELLING or job.step == DEADLINE:
        _deadline_or_cancel(draft, job)
        return Success(draft.finish())
    step_run = run.step_run(job.step)
    if step_run is not None and step_run.status is StepStatus.PARKED:
        timed_out(draft, step_run)  # the only job a parked step has is its timeout
        return Success(draft.finish())
    undoes = compensated_step(job.step)
    deliverable = (
        run.status in _DELIVERABLE if undoes is None else run.status is RunStatus.COMPENSATING
    )
    if not deliverable:
        return Failure(StaleDelivery(job_id=event.job_id, reason=f"run is {run.status}"))
    spec = definition.step(job.step)
    if spec is None:
        if undoes is not None:  # a redeploy removed the compensation
            removed(draft, job, unknown_step(definition, job.step))
        else:
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
    given = (
        step_input(definition, run, job.step)
        if undoes is None
        else compensation_input(run, job.step)
    )
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
            worker=event.worker,
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
    found = started_job(run, event.job_id, event.lease_token)
    if isinstance(found, Failure):
        return found
    job = found.unwrap()
    spec = definition.step(job.step)
    output = _unusable_output(definition, job, event.output)
    if isinstance(output, Failure):
        return Success(fail_attempt(definition, run, job=job, failure=output.failure(), now=now))
    if spec is None:
        failure = unknown_step(definition, job.step)
        return Success(fail_attempt(definition, run, job=job, failure=failure, now=now))
    mapped: JsonObject = (
        {spec.output_key: dict(output.unwrap())} if spec.output_key else output.unwrap()
    )
    reserved = sorted(RESERVED_CONTEXT_KEYS.intersection(mapped))
    if reserved:
        failure = _invalid_output(
            f"step {job.step!r} returned the reserved key {reserved[0]!r} "
            "(set by SquidMesh for cron runs)"
        )
        return Success(fail_attempt(definition, run, job=job, failure=failure, now=now))
    draft = Draft(definition, run, now)
    attempt = live_attempt(draft, job)
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
    if run.status is RunStatus.COMPENSATING:  # rule 12: a compensation, or a late success
        if compensated_step(job.step) is None:
            late_success(draft, job.step)
        advance(draft)
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


def _step_failed(
    definition: WorkflowDefinition, run: RunState, event: StepFailed, now: datetime
) -> Result[Decision, Rejected]:
    return started_job(run, event.job_id, event.lease_token).map(
        lambda job: fail_attempt(
            definition,
            run,
            job=job,
            failure=event.failure,
            attempt_status=AttemptStatus.FAILED,
            now=now,
        )
    )


def _lease_expired(
    definition: WorkflowDefinition, run: RunState, event: LeaseExpired, now: datetime
) -> Result[Decision, Rejected]:
    lost = StepFailure(
        kind=WORKER_LOST,
        message="the worker's lease expired before the attempt reported an outcome",
        retryable=True,
    )
    return started_job(run, event.job_id, event.lease_token).map(
        lambda job: fail_attempt(
            definition, run, job=job, failure=lost, attempt_status=AttemptStatus.LOST, now=now
        )
    )


def _outcome(
    definition: WorkflowDefinition,
    run: RunState,
    event: StepSucceeded | StepFailed | StepDeferred | LeaseExpired,
    now: datetime,
) -> Result[Decision, Rejected]:
    """What an attempt's outcome does (a timed-out attempt's first, rule 10)."""
    if not isinstance(event, LeaseExpired):  # a dead worker's attempt is lost (rule 9)
        timed_out = past_timeout(definition, run, event, now)
        if timed_out is not None:
            return timed_out
    match event:
        case StepSucceeded():
            return _succeed(definition, run, event, now)
        case StepFailed():
            return _step_failed(definition, run, event, now)
        case StepDeferred():
            return deferred(definition, run, event, now)
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
