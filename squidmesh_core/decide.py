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
5. **Cancellation.** ``pending`` runs cancel at once. Active runs become
   ``cancelling``; scheduled jobs are made due immediately so the next delivery,
   or the end of the running attempt, converges the run to ``cancelled``.
6. **Terminal runs absorb.** Once ``failed``, ``completed`` or ``cancelled``, the
   status never changes and no job is scheduled again. An attempt still running
   at that point may report its outcome: it is recorded for history only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, assert_never

from returns.result import Failure, Result, Success

from squidmesh_core._table import (
    attempt_transition_allowed,
    run_transition_allowed,
    step_transition_allowed,
)
from squidmesh_core.commands import (
    CancelJob,
    Command,
    Decision,
    Emit,
    FinishJob,
    RescheduleJob,
    ScheduleJob,
    Topic,
)
from squidmesh_core.definition import (
    COMPLETE,
    Outcome,
    StepKind,
    StepSpec,
    WorkflowDefinition,
    WorkflowMode,
)
from squidmesh_core.errors import (
    InvalidPayload,
    InvalidTransition,
    InvariantViolatedError,
    Rejected,
    StaleDelivery,
    UnknownTrigger,
)
from squidmesh_core.events import (
    CancelRequested,
    Event,
    JobDelivered,
    LeaseExpired,
    ReplayRequested,
    RunRequested,
    StepFailed,
    StepSucceeded,
)
from squidmesh_core.ids import job_id_for, parse_run_id
from squidmesh_core.jsonvalue import JsonLimits, JsonObject, JsonValue, check_json_object
from squidmesh_core.payload import validate_payload
from squidmesh_core.retry import MAX_DELAY, GiveUp, RetryAt, decide_retry
from squidmesh_core.state import (
    INVALID_OUTPUT,
    WORKER_LOST,
    Attempt,
    AttemptStatus,
    Job,
    JobStatus,
    RunState,
    RunStatus,
    StepFailure,
    StepRunState,
    StepStatus,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace


RESERVED_CONTEXT_KEYS = frozenset({"schedule"})
"""Context keys set by the shell at run creation and kept by replay."""

_ZERO = timedelta(0)


def _ms(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds() * 1000))


MAX_FAILURE_TEXT = 4096
FAILURE_DETAIL_LIMITS = JsonLimits(max_bytes=64 * 1024, max_depth=16)


def _clean_text(text: object) -> str:
    raw = text if isinstance(text, str) else repr(text)
    cleaned = raw.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return cleaned if len(cleaned) <= MAX_FAILURE_TEXT else cleaned[: MAX_FAILURE_TEXT - 3] + "..."


def storable_failure(failure: StepFailure) -> StepFailure:
    """``failure`` with every field made storable: no NUL, no lone surrogate, bounded size.

    Steps build failures from arbitrary data; what cannot be stored is replaced
    by a description of the problem rather than refused, so a failing step can
    never wedge its run.
    """
    details = check_json_object(failure.details, limits=FAILURE_DETAIL_LIMITS)
    retry_after = failure.retry_after
    if retry_after is not None:
        retry_after = min(max(retry_after, _ZERO), MAX_DELAY)
    cleaned = StepFailure(
        kind=_clean_text(failure.kind)[:100],
        message=_clean_text(failure.message),
        retryable=bool(failure.retryable),
        retry_after=retry_after,
        details=(
            details.unwrap()
            if isinstance(details, Success)
            else {"unstorable_details": f"{details.failure().path} {details.failure().reason}"}
        ),
    )
    return failure if cleaned == failure else cleaned


def failure_attributes(failure: StepFailure) -> dict[str, JsonValue]:
    """The JSON description of a failure used in emitted events."""
    return {
        "kind": failure.kind,
        "message": failure.message,
        "retryable": failure.retryable,
    }


class _Draft:
    """Accumulates one decision. Local mutation only; the inputs are never touched.

    The fields a decision changes live here as plain attributes, and the new
    ``RunState`` is built once, in :meth:`finish`: copying the 15-field run for
    every edit was most of the cost of a decision.
    """

    def __init__(self, definition: WorkflowDefinition, run: RunState, now: datetime) -> None:
        self.definition = definition
        self.origin = run
        self.now = now
        self.commands: list[Command] = []
        self.trailing: list[Command] = []
        self.started_status = run.status
        self.base = run if run.version > 0 else None
        self.status = run.status
        self.steps = run.steps
        self.jobs = run.jobs
        self.context = run.context
        self.last_error = run.last_error

    def set_last_error(self, failure: StepFailure | None) -> None:
        self.last_error = failure

    def set_context(self, context: JsonObject) -> None:
        self.context = context

    def set_jobs(self, jobs: tuple[Job, ...]) -> None:
        self.jobs = jobs

    def job(self, job_id: str) -> Job | None:
        for job in self.jobs:
            if job.id == job_id:
                return job
        return None

    def find_step(self, step: str) -> StepRunState | None:
        for step_run in self.steps:
            if step_run.step == step:
                return step_run
        return None

    # -- status changes (checked against the tables) --------------------------------

    def set_run_status(self, status: RunStatus) -> None:
        if not run_transition_allowed(self.status, status):
            raise InvariantViolatedError(f"run {self.status} -> {status} is not in the table")
        self.status = status

    def put_step(self, step_run: StepRunState) -> None:
        existing = self.find_step(step_run.step)
        if existing is not None and not step_transition_allowed(existing.status, step_run.status):
            raise InvariantViolatedError(
                f"step {step_run.step}: {existing.status} -> {step_run.status} is not in the table"
            )
        if existing is None:
            self.steps = (*self.steps, step_run)
        else:
            self.steps = tuple(step_run if s is existing else s for s in self.steps)

    def step_run(self, step: str) -> StepRunState:
        found = self.find_step(step)
        if found is None:
            raise InvariantViolatedError(f"step {step} has no step run")
        return found

    def put_attempt(self, step: str, attempt: Attempt) -> None:
        current = self.step_run(step)
        old = next((a for a in current.attempts if a.number == attempt.number), None)
        if old is not None and not attempt_transition_allowed(old.status, attempt.status):
            raise InvariantViolatedError(
                f"attempt {step}#{attempt.number}: {old.status} -> {attempt.status}"
            )
        attempts = tuple(attempt if a.number == attempt.number else a for a in current.attempts)
        if old is None:
            attempts = (*attempts, attempt)
        self.put_step(replace(current, attempts=attempts, updated_at=self.now))

    # -- jobs -----------------------------------------------------------------------

    def schedule(self, step: str, attempt: int, due_at: datetime) -> None:
        run_id = self.origin.id
        job = Job(
            id=job_id_for(run_id, step, attempt),
            run_id=run_id,
            step=step,
            attempt=attempt,
            due_at=due_at,
        )
        if self.find_step(step) is None:
            self.put_step(
                StepRunState(
                    step=step,
                    status=StepStatus.SCHEDULED,
                    scheduled_at=self.now,
                    updated_at=self.now,
                )
            )
        self.set_jobs((*self.jobs, job))
        self.commands.append(ScheduleJob(job=job))

    def drop_job(self, job: Job) -> None:
        self.set_jobs(tuple(j for j in self.jobs if j.id != job.id))
        if job.status is JobStatus.STARTED:
            self.commands.append(FinishJob(job_id=job.id))
        else:
            self.commands.append(CancelJob(job_id=job.id))

    def cancel_scheduled(self, reason: str) -> None:
        """Drop every scheduled job and mark its step cancelled (skipped, for ``reason``)."""
        for job in self.jobs:
            if job.status is JobStatus.SCHEDULED:
                self.drop_job(job)
                current = self.step_run(job.step)
                self.put_step(replace(current, status=StepStatus.CANCELLED, updated_at=self.now))
                self.emit(
                    Topic.STEP_CANCELLED,
                    step=job.step,
                    attempt=job.attempt,
                    attributes={"reason": reason},
                )

    # -- events ---------------------------------------------------------------------

    def emit(
        self,
        topic: Topic,
        *,
        step: str | None = None,
        attempt: int | None = None,
        attributes: JsonObject | None = None,
    ) -> None:
        self.commands.append(
            Emit(
                topic=topic,
                run_id=self.origin.id,
                workflow=self.origin.workflow,
                step=step,
                attempt=attempt,
                attributes=attributes or {},
            )
        )

    def finish(self) -> Decision:
        if self.status != self.started_status:
            self.emit(
                Topic.RUN_TRANSITION,
                attributes={"from": self.started_status.value, "to": self.status.value},
            )
        final = replace(
            self.origin,
            status=self.status,
            steps=self.steps,
            jobs=self.jobs,
            context=self.context,
            last_error=self.last_error,
            version=self.origin.version + 1,
            updated_at=self.now,
        )
        return Decision(state=final, commands=(*self.commands, *self.trailing), base=self.base)


# ---------------------------------------------------------------- helpers


def _active_status(steps: tuple[StepRunState, ...]) -> RunStatus:
    """Status of a run that is neither terminal, cancelling nor paused."""
    if not any(s.attempts for s in steps):
        return RunStatus.PENDING
    if any(s.status is StepStatus.RETRY_SCHEDULED for s in steps):
        return RunStatus.RETRYING
    return RunStatus.RUNNING


def _spec(definition: WorkflowDefinition, step: str) -> StepSpec:
    spec = definition.step(step)
    if spec is None:
        raise InvariantViolatedError(f"workflow {definition.name} has no step {step}")
    return spec


def step_input(definition: WorkflowDefinition, run: RunState, step: str) -> JsonObject:
    """The input an attempt of ``step`` receives, given the run as it is now."""
    spec = _spec(definition, step)
    assembled: dict[str, JsonValue] = dict(run.payload)
    if definition.mode is WorkflowMode.TRANSITIONS:
        assembled.update(run.context)
    else:
        assembled.update({k: v for k, v in run.context.items() if k in RESERVED_CONTEXT_KEYS})
        for ancestor in definition.ancestors(step):
            done = run.step_run(ancestor)
            if done is not None and done.output is not None:
                assembled.update(done.output)
    if spec.input_keys is not None:
        return {k: assembled[k] for k in spec.input_keys if k in assembled}
    return assembled


def _live_attempt(draft: _Draft, job: Job) -> Attempt:
    attempt = next((a for a in draft.step_run(job.step).attempts if a.number == job.attempt), None)
    if attempt is None or attempt.status is not AttemptStatus.RUNNING:
        raise InvariantViolatedError(f"started job {job.id} has no running attempt")
    return attempt


def _started_job(run: RunState, job_id: str, token: str) -> Result[Job, StaleDelivery]:
    job = run.job(job_id)
    if job is None:
        reason = "no live job with this id"
        if run.status.terminal:
            reason += f" (run is {run.status})"
        return Failure(StaleDelivery(job_id=job_id, reason=reason))
    if job.status is not JobStatus.STARTED:
        return Failure(StaleDelivery(job_id=job_id, reason="the job has not been delivered"))
    if job.lease_token != token:
        return Failure(
            StaleDelivery(job_id=job_id, reason="lease token does not match the current lease")
        )
    return Success(job)


def _due_after_waits(
    definition: WorkflowDefinition, steps: tuple[StepRunState, ...], step: str, now: datetime
) -> datetime:
    """When a dependency step may start: now, or later if it depends on ``wait`` steps.

    A ``wait`` dependency holds its dependents until its own completion plus its duration.
    """
    due = now
    for dep in _spec(definition, step).after:
        spec = _spec(definition, dep)
        done = next((s for s in steps if s.step == dep), None)
        if spec.kind is StepKind.WAIT and spec.duration and done is not None:
            finished = max((a.finished_at for a in done.attempts if a.finished_at), default=now)
            due = max(due, finished + spec.duration)
    return due


def _unknown_step(definition: WorkflowDefinition, step: str) -> StepFailure:
    """The failure recorded when a run meets a definition that no longer declares its step."""
    return StepFailure(
        kind="unknown_step",
        message=f"step {step!r} is no longer declared by workflow {definition.name!r}",
        retryable=False,
    )


def _converge_cancel(draft: _Draft) -> None:
    draft.cancel_scheduled("run_cancelled")
    draft.set_run_status(RunStatus.CANCELLED)


def _complete(draft: _Draft) -> None:
    draft.cancel_scheduled("run_completed")
    draft.set_last_error(None)
    draft.set_run_status(RunStatus.COMPLETED)


# ---------------------------------------------------------------- per event


def _start(
    definition: WorkflowDefinition, event: RunRequested, now: datetime
) -> Result[Decision, Rejected]:
    parsed = parse_run_id(event.run_id)
    if isinstance(parsed, Failure):
        return parsed
    trigger = (
        definition.default_trigger if event.trigger is None else definition.trigger(event.trigger)
    )
    if trigger is None:
        return Failure(UnknownTrigger(workflow=definition.name, trigger=str(event.trigger)))
    context = check_json_object(event.context, limits=definition.limits)
    if isinstance(context, Failure):
        problem = context.failure()
        return Failure(
            InvalidPayload(
                workflow=definition.name,
                trigger=trigger.name,
                reason=f"initial context{problem.path[1:]} {problem.reason}",
            )
        )
    return validate_payload(
        definition.contract(trigger.name),
        event.payload,
        workflow=definition.name,
        trigger=trigger.name,
        now=now,
        limits=definition.limits,
    ).map(
        lambda payload: _new_run(
            definition,
            RunState(
                id=event.run_id,
                workflow=definition.name,
                trigger=trigger.name,
                status=RunStatus.PENDING,
                payload=payload,
                context=context.unwrap(),
                created_at=now,
                updated_at=now,
                version=0,
                idempotency_key=event.idempotency_key,
            ),
            now,
            Topic.RUN_CREATED,
        )
    )


def _new_run(
    definition: WorkflowDefinition, run: RunState, now: datetime, topic: Topic
) -> Decision:
    draft = _Draft(definition, run, now)
    attributes: dict[str, JsonValue] = {"trigger": run.trigger}
    if run.replayed_from is not None:
        attributes["replayed_from"] = run.replayed_from
    draft.emit(topic, attributes=attributes)
    for entry in definition.entry_steps:
        draft.schedule(entry, 1, now)
    return draft.finish()


def _replay(
    definition: WorkflowDefinition, source: RunState, event: ReplayRequested, now: datetime
) -> Result[Decision, Rejected]:
    parsed = parse_run_id(event.new_run_id)
    if isinstance(parsed, Failure):
        return parsed
    if definition.trigger(source.trigger) is None:
        return Failure(UnknownTrigger(workflow=definition.name, trigger=source.trigger))
    return validate_payload(
        definition.contract(source.trigger),
        source.payload,
        workflow=definition.name,
        trigger=source.trigger,
        now=source.created_at,
        limits=definition.limits,
    ).map(
        lambda payload: _new_run(
            definition,
            RunState(
                id=event.new_run_id,
                workflow=definition.name,
                trigger=source.trigger,
                status=RunStatus.PENDING,
                payload=payload,
                context={k: v for k, v in source.context.items() if k in RESERVED_CONTEXT_KEYS},
                created_at=now,
                updated_at=now,
                version=0,
                replayed_from=source.id,
            ),
            now,
            Topic.RUN_REPLAYED,
        )
    )


def _deliver(
    definition: WorkflowDefinition, run: RunState, event: JobDelivered, now: datetime
) -> Result[Decision, Rejected]:
    job = run.job(event.job_id)
    if job is None:
        reason = "no live job with this id"
        if run.status.terminal:
            reason += f" (run is {run.status})"
        return Failure(StaleDelivery(job_id=event.job_id, reason=reason))
    if job.status is JobStatus.STARTED:
        reason = (
            "duplicate delivery: the attempt is already running"
            if job.lease_token == event.lease_token
            else "the job is leased to another worker"
        )
        return Failure(StaleDelivery(job_id=event.job_id, reason=reason))
    draft = _Draft(definition, run, now)
    if run.status is RunStatus.CANCELLING:
        _converge_cancel(draft)
        return Success(draft.finish())
    if run.status not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.RETRYING):
        return Failure(StaleDelivery(job_id=event.job_id, reason=f"run is {run.status}"))
    if definition.step(job.step) is None:
        draft.set_last_error(_unknown_step(definition, job.step))
        draft.cancel_scheduled("run_failed")
        draft.set_run_status(RunStatus.FAILED)
        return Success(draft.finish())
    started = replace(job, status=JobStatus.STARTED, lease_token=event.lease_token)
    draft.set_jobs(tuple(started if j.id == job.id else j for j in run.jobs))
    current = draft.step_run(job.step)
    draft.put_step(
        replace(
            current,
            status=StepStatus.RUNNING,
            input=step_input(definition, run, job.step),
            updated_at=now,
        )
    )
    draft.put_attempt(
        job.step,
        Attempt(
            number=job.attempt,
            status=AttemptStatus.RUNNING,
            job_id=job.id,
            lease_token=event.lease_token,
            started_at=now,
        ),
    )
    draft.emit(
        Topic.STEP_STARTED,
        step=job.step,
        attempt=job.attempt,
        attributes={"job_id": job.id, "lateness_ms": _ms(now - job.due_at)},
    )
    draft.set_run_status(_active_status(draft.steps))
    return Success(draft.finish())


def _succeed(
    definition: WorkflowDefinition, run: RunState, event: StepSucceeded, now: datetime
) -> Result[Decision, Rejected]:
    found = _started_job(run, event.job_id, event.lease_token)
    if isinstance(found, Failure):
        return found
    job = found.unwrap()
    checked = check_json_object(event.output, limits=definition.limits)
    if isinstance(checked, Failure):
        problem = checked.failure()
        failure = StepFailure(
            kind=INVALID_OUTPUT,
            message=f"step {job.step!r} returned unstorable output: "
            f"output{problem.path[1:]} {problem.reason}",
            retryable=False,
        )
        return Success(
            _fail(
                definition,
                run,
                job=job,
                failure=failure,
                attempt_status=AttemptStatus.FAILED,
                now=now,
            )
        )
    spec = definition.step(job.step)
    if spec is None:
        return Success(
            _fail(
                definition,
                run,
                job=job,
                failure=_unknown_step(definition, job.step),
                attempt_status=AttemptStatus.FAILED,
                now=now,
            )
        )
    output = checked.unwrap()
    mapped: JsonObject = {spec.output_key: dict(output)} if spec.output_key else output
    reserved = sorted(RESERVED_CONTEXT_KEYS.intersection(mapped))
    if reserved:
        return Success(
            _fail(
                definition,
                run,
                job=job,
                failure=StepFailure(
                    kind=INVALID_OUTPUT,
                    message=f"step {job.step!r} returned the reserved key {reserved[0]!r} "
                    "(set by SquidMesh for cron runs)",
                    retryable=False,
                ),
                attempt_status=AttemptStatus.FAILED,
                now=now,
            )
        )
    draft = _Draft(definition, run, now)
    attempt = _live_attempt(draft, job)
    draft.put_attempt(job.step, replace(attempt, status=AttemptStatus.SUCCEEDED, finished_at=now))
    draft.put_step(
        replace(
            draft.step_run(job.step), status=StepStatus.COMPLETED, output=mapped, updated_at=now
        )
    )
    draft.drop_job(draft.job(job.id) or job)
    draft.emit(
        Topic.STEP_COMPLETED,
        step=job.step,
        attempt=job.attempt,
        attributes={"duration_ms": _ms(now - attempt.started_at)},
    )
    if run.status.terminal:
        return Success(draft.finish())
    draft.set_context({**draft.context, **mapped})
    if run.status is RunStatus.CANCELLING:
        _converge_cancel(draft)
        return Success(draft.finish())
    if definition.mode is WorkflowMode.TRANSITIONS:
        delay = spec.duration if spec.kind is StepKind.WAIT and spec.duration else _ZERO
        target = definition.target(job.step, Outcome.OK)
        if target is None:
            raise InvariantViolatedError(f"step {job.step} has no ok route")
        if target == COMPLETE:
            _complete(draft)
        else:
            draft.schedule(target, 1, now + delay)
            draft.set_run_status(_active_status(draft.steps))
        return Success(draft.finish())
    completed = frozenset(s.step for s in draft.steps if s.status is StepStatus.COMPLETED)
    if completed == frozenset(definition.step_names()):
        _complete(draft)
        return Success(draft.finish())
    started = frozenset(s.step for s in draft.steps)
    for ready in definition.dependents_ready(completed, started):
        draft.schedule(ready, 1, _due_after_waits(definition, draft.steps, ready, now))
    draft.set_run_status(_active_status(draft.steps))
    return Success(draft.finish())


def _fail(
    definition: WorkflowDefinition,
    run: RunState,
    *,
    job: Job,
    failure: StepFailure,
    attempt_status: AttemptStatus,
    now: datetime,
) -> Decision:
    failure = storable_failure(failure)
    draft = _Draft(definition, run, now)
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
            "duration_ms": _ms(now - attempt.started_at),
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
        _converge_cancel(draft)
        return draft.finish()
    spec = definition.step(job.step)
    verdict = decide_retry(
        None if spec is None else spec.retry,
        failed_attempt=job.attempt,
        retryable=failure.retryable,
        retry_after=failure.retry_after,
        run_id=run.id,
        step=job.step,
        now=now,
    )
    match verdict:
        case RetryAt(attempt=next_attempt, delay=delay, at=due_at):
            settle_step(StepStatus.RETRY_SCHEDULED)
            draft.schedule(job.step, next_attempt, due_at)
            draft.set_last_error(failure)
            draft.emit(
                Topic.STEP_RETRY_SCHEDULED,
                step=job.step,
                attempt=next_attempt,
                attributes={"delay_ms": _ms(delay), "due_at": due_at.isoformat()},
            )
            draft.set_run_status(_active_status(draft.steps))
        case GiveUp():
            settle_step(StepStatus.FAILED)
            target = (
                definition.target(job.step, Outcome.ERROR)
                if definition.mode is WorkflowMode.TRANSITIONS
                else None
            )
            if target == COMPLETE:
                _complete(draft)
            elif target is not None:
                draft.set_last_error(None)
                draft.schedule(target, 1, now)
                draft.set_run_status(_active_status(draft.steps))
            else:
                draft.set_last_error(failure)
                draft.cancel_scheduled("run_failed")
                draft.set_run_status(RunStatus.FAILED)
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


def _cancel(
    definition: WorkflowDefinition, run: RunState, now: datetime
) -> Result[Decision, Rejected]:
    draft = _Draft(definition, run, now)
    match run.status:
        case RunStatus.PENDING | RunStatus.PAUSED:
            _converge_cancel(draft)
        case RunStatus.RUNNING | RunStatus.RETRYING:
            draft.set_run_status(RunStatus.CANCELLING)
            for job in run.jobs:
                if job.status is JobStatus.SCHEDULED and job.due_at > now:
                    draft.set_jobs(
                        tuple(replace(j, due_at=now) if j.id == job.id else j for j in draft.jobs)
                    )
                    draft.commands.append(RescheduleJob(job_id=job.id, due_at=now))
        case RunStatus.CANCELLING | RunStatus.FAILED | RunStatus.COMPLETED | RunStatus.CANCELLED:
            return Failure(
                InvalidTransition(
                    run_id=run.id,
                    from_status=run.status.value,
                    to_status=RunStatus.CANCELLING.value,
                )
            )
        case _:
            assert_never(run.status)
    return Success(draft.finish())


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
        return _start(definition, event, now)
    if state is None:
        raise InvariantViolatedError(f"{type(event).__name__} needs the run's state")
    if state.workflow != definition.name:
        raise InvariantViolatedError(
            f"run {state.id} belongs to {state.workflow}, not {definition.name}"
        )
    match event:
        case ReplayRequested():
            return _replay(definition, state, event, now)
        case JobDelivered():
            return _deliver(definition, state, event, now)
        case StepSucceeded():
            return _succeed(definition, state, event, now)
        case StepFailed():
            return _step_failed(definition, state, event, now)
        case LeaseExpired():
            return _lease_expired(definition, state, event, now)
        case CancelRequested():
            return _cancel(definition, state, now)
        case _:
            assert_never(event)
