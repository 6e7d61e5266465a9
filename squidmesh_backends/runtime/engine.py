"""The engine: the one imperative loop. Load -> decide -> commit -> publish -> run steps.

It depends on the ports only (never on a concrete store, broker or HTTP client).

Theory of operation for one job delivery (``execute_job``):

1. Parse the job id (a forged id is dropped) and load its run.
2. If the run's job is *started* under another lease, that lease expired and the
   store gave this worker a new one: record ``LeaseExpired`` (the attempt is
   lost; the core decides the retry) and stop.
3. Otherwise record ``JobDelivered``; the attempt starts, fenced by this lease.
4. Run the step while a heartbeat extends the lease.
5. Record ``StepSucceeded``/``StepFailed``. Every commit carries the fence, so a
   worker whose lease was taken over cannot write; a version conflict reloads the
   run and decides again.

A stale, duplicate or forged message therefore changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from returns.result import Failure, Result, Success

from squidmesh_backends.errors import ContentionError
from squidmesh_backends.logs import add_log_fields, get_logger, log_context
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.runtime.steps import run_step
from squidmesh_core.commands import Decision, Emit, RescheduleJob, combine
from squidmesh_core.context import StepContext, step_idempotency_key
from squidmesh_core.cron import CRON_KEY_PREFIX
from squidmesh_core.decide import decide
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import (
    DuplicateRun,
    InvalidOption,
    InvalidPayload,
    InvalidRunId,
    InvalidTransition,
    NotFound,
    Rejected,
    StaleDelivery,
    StaleLease,
    UnknownTrigger,
    UnknownWorkflow,
    VersionConflict,
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
from squidmesh_core.ids import (
    IdempotencyKey,
    JobId,
    JobKey,
    LeaseToken,
    RunId,
    parse_job_id,
    parse_run_id,
)
from squidmesh_core.jsonvalue import EMPTY_OBJECT, JsonObject
from squidmesh_core.ports import Clock, EventSink, Fence, IdSource, Lease, RunStore
from squidmesh_core.state import AttemptStatus, JobStatus, RunState, RunStatus
from squidmesh_core.views import Run, run_view

LOG = get_logger("squidmesh.runtime")

StartError: TypeAlias = UnknownWorkflow | UnknownTrigger | InvalidPayload | InvalidOption
LookupError_: TypeAlias = InvalidRunId | NotFound
CancelError: TypeAlias = InvalidRunId | NotFound | UnknownWorkflow | InvalidTransition
ReplayError: TypeAlias = InvalidRunId | NotFound | UnknownWorkflow | UnknownTrigger | InvalidPayload
ListError: TypeAlias = InvalidOption

MAX_LIST_LIMIT = 1000


def _schedule_of(run: RunState) -> JsonObject | None:
    found = run.context.get("schedule")
    return found if isinstance(found, Mapping) else None


def _clean_name(value: object, limit: int) -> bool:
    """A non-empty string every store can hold (no NUL, no lone surrogate)."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JobOutcome(StrEnum):
    """What one ``execute_job`` call amounted to."""

    FORGED = "forged"
    STALE = "stale"
    RECLAIMED = "reclaimed"
    CONVERGED = "converged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEASE_LOST = "lease_lost"


def run_logger(
    run: RunState, step: str | None = None, attempt: int | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger that attaches run id, workflow, step and attempt to every record."""
    return logging.LoggerAdapter(
        get_logger("squidmesh.step"),
        {"run_id": run.id, "workflow": run.workflow, "step": step, "attempt": attempt},
    )


class Engine:
    """Carries decisions out over the ports; built by ``Runtime``."""

    def __init__(
        self,
        *,
        store: RunStore,
        workflows: Iterable[WorkflowDefinition],
        clock: Clock,
        ids: IdSource,
        settings: RuntimeSettings,
        sinks: Sequence[EventSink] = (),
    ) -> None:
        self.store = store
        self.clock = clock
        self.ids = ids
        self.settings = settings
        self.sinks = list(sinks)
        self.inline_steps = 0
        """Steps this engine ran on the inline fast path (a counter for tests and benchmarks)."""
        self.registry: dict[str, WorkflowDefinition] = {}
        for definition in workflows:
            if (
                definition.name in self.registry
                and self.registry[definition.name] is not definition
            ):
                raise ValueError(f"two different workflows are named {definition.name!r}")
            self.registry[definition.name] = definition
        self.on_job_due: Callable[[], None] = lambda: None
        """Called after a commit that scheduled a job due now (the dispatcher's doorbell)."""

    # ---------------------------------------------------------------- plumbing

    def workflow(self, workflow: object) -> Result[WorkflowDefinition, UnknownWorkflow]:
        """The registered definition for a name or definition (anything else is unknown)."""
        if not isinstance(workflow, str | WorkflowDefinition):
            return Failure(UnknownWorkflow(workflow=repr(workflow)[:80]))
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        found = self.registry.get(name)
        if found is None or (isinstance(workflow, WorkflowDefinition) and found is not workflow):
            return Failure(UnknownWorkflow(workflow=str(name)))
        return Success(found)

    def publish(self, decision: Decision, *, kick: bool = True) -> None:
        for event in decision.emitted:
            self._publish_one(event)
        if kick:
            self._kick_for(decision, self.clock.now())

    def _kick_for(self, decision: Decision, now: datetime) -> None:
        if any(job.due_at <= now for job in decision.jobs_scheduled) or any(
            isinstance(c, RescheduleJob) for c in decision.commands
        ):
            self.on_job_due()

    def publish_event(self, event: Emit) -> None:
        """Hand one event to every sink (after whatever commit it reports)."""
        self._publish_one(event)

    def _publish_one(self, event: Emit) -> None:
        job_id = event.attributes.get("job_id")
        LOG.debug(
            "%s %s",
            event.topic,
            dict(event.attributes),
            extra={  # the event's own run, not whatever delivery publishes it
                "run_id": event.run_id,
                "workflow": event.workflow,
                "step": event.step,
                "attempt": event.attempt,
                "job_id": job_id if isinstance(job_id, str) else None,
            },
        )
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception:  # a failing subscriber must never break the runtime
                LOG.exception("event sink %r failed on %s", sink, event.topic)

    async def apply(
        self,
        definition: WorkflowDefinition,
        run_id: RunId,
        event: Event,
        *,
        fence: Fence | None = None,
        state: RunState | None = None,
        kick: bool = True,
    ) -> Result[Decision, Rejected | NotFound]:
        """Decide ``event`` on the latest state and commit it, re-deciding after conflicts.

        ``kick=False`` does not wake the dispatcher for jobs the decision makes
        due (the caller runs one of them inline and wakes it for the rest).
        """
        for _ in range(self.settings.max_conflict_retries):
            current = state if state is not None else await self.store.load(run_id)
            state = None
            if current is None:
                return Failure(NotFound(run_id=run_id))
            decided = decide(definition, current, event, now=self.clock.now())
            if isinstance(decided, Failure):
                return decided
            decision = decided.unwrap()
            committed = await self.store.commit(decision, fence=fence)
            match committed:
                case Success(_):
                    self.publish(decision, kick=kick)
                    return Success(decision)
                case Failure(VersionConflict()):
                    continue
                case Failure(StaleLease(job_id=job_id)):
                    return Failure(
                        StaleDelivery(job_id=job_id, reason="the lease is no longer held")
                    )
                case Failure(DuplicateRun() as duplicate):
                    raise ContentionError(f"unexpected duplicate while updating a run: {duplicate}")
        raise ContentionError(
            f"run {run_id} changed {self.settings.max_conflict_retries} times in a row"
        )

    # ---------------------------------------------------------------- public API

    async def start_run(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None = None,
        idempotency_key: str | None = None,
        context: JsonObject | None = None,
        reserved_key: bool = False,
    ) -> Result[Run, StartError]:
        found = self.workflow(workflow)
        if isinstance(found, Failure):
            return found
        definition = found.unwrap()
        if idempotency_key is not None and not _clean_name(idempotency_key, 200):
            return Failure(
                InvalidOption(
                    option="idempotency_key",
                    reason="must be a non-empty string of at most 200 characters without NUL "
                    "or lone surrogates",
                )
            )
        if (
            not reserved_key
            and isinstance(idempotency_key, str)
            and idempotency_key.startswith(CRON_KEY_PREFIX)
        ):
            return Failure(
                InvalidOption(
                    option="idempotency_key",
                    reason=f"keys beginning with {CRON_KEY_PREFIX!r} belong to cron triggers",
                )
            )
        key = None if idempotency_key is None else IdempotencyKey(idempotency_key)
        if key is not None:
            existing = await self.store.find_by_idempotency_key(definition.name, key)
            if existing is not None:
                return Success(run_view(existing, existing=True))
        event = RunRequested(
            run_id=self.ids.new_run_id(),
            payload=payload,
            trigger=trigger,
            idempotency_key=key,
            context=context if context is not None else EMPTY_OBJECT,
        )
        decided = decide(definition, None, event, now=self.clock.now())
        if isinstance(decided, Failure):
            problem = decided.failure()
            assert isinstance(
                problem, UnknownTrigger | InvalidPayload
            )  # the only refusals of a new run
            return Failure(problem)
        decision = decided.unwrap()
        committed = await self.store.commit(decision)
        if isinstance(committed, Failure):
            clash = committed.failure()
            if isinstance(clash, DuplicateRun) and clash.existing_run_id != decision.state.id:
                winner = await self.store.load(RunId(clash.existing_run_id))
                if winner is not None:
                    return Success(run_view(winner, existing=True))
            raise ContentionError(f"could not create run {decision.state.id}: {clash}")
        self.publish(decision)
        return Success(run_view(decision.state))

    async def inspect_run(
        self, run_id: str, *, include_history: bool = False
    ) -> Result[Run, LookupError_]:
        parsed = parse_run_id(run_id)
        if isinstance(parsed, Failure):
            return parsed
        state = await self.store.load(parsed.unwrap())
        if state is None:
            return Failure(NotFound(run_id=run_id))
        return Success(run_view(state, include_history=include_history))

    async def list_runs(
        self,
        *,
        workflow: str | WorkflowDefinition | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
    ) -> Result[tuple[Run, ...], ListError]:
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            return Failure(
                InvalidOption(
                    option="limit", reason=f"must be an integer from 1 to {MAX_LIST_LIMIT}"
                )
            )
        wanted: RunStatus | None = None
        if status is not None:
            try:
                wanted = RunStatus(status)
            except ValueError:
                return Failure(
                    InvalidOption(
                        option="status",
                        reason=f"must be one of {', '.join(s.value for s in RunStatus)}",
                    )
                )
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        if name is not None and not _clean_name(name, 200):
            return Failure(InvalidOption(option="workflow", reason="must be a workflow name"))
        states = await self.store.list_runs(workflow=name, status=wanted, limit=limit)
        return Success(tuple(run_view(s) for s in states))

    async def _existing(
        self, run_id: str
    ) -> Result[tuple[RunState, WorkflowDefinition], CancelError]:
        parsed = parse_run_id(run_id)
        if isinstance(parsed, Failure):
            return parsed
        state = await self.store.load(parsed.unwrap())
        if state is None:
            return Failure(NotFound(run_id=run_id))
        found = self.workflow(state.workflow)
        if isinstance(found, Failure):
            return found
        return Success((state, found.unwrap()))

    async def cancel_run(self, run_id: str) -> Result[Run, CancelError]:
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            return existing
        state, definition = existing.unwrap()
        applied = await self.apply(definition, state.id, CancelRequested(), state=state)
        match applied:
            case Success(decision):
                return Success(run_view(decision.state))
            case Failure(InvalidTransition() as refused):
                return Failure(refused)
            case Failure(NotFound() as missing):
                return Failure(missing)
            case Failure(other):
                raise ContentionError(f"cancel of {run_id} was refused unexpectedly: {other}")
        raise AssertionError(applied)

    async def replay_run(self, run_id: str) -> Result[Run, ReplayError]:
        existing = await self._existing(run_id)
        if isinstance(existing, Failure):
            problem = existing.failure()
            assert not isinstance(problem, InvalidTransition)
            return Failure(problem)
        state, definition = existing.unwrap()
        decided = decide(
            definition,
            state,
            ReplayRequested(new_run_id=self.ids.new_run_id()),
            now=self.clock.now(),
        )
        if isinstance(decided, Failure):
            problem = decided.failure()
            assert isinstance(problem, UnknownTrigger | InvalidPayload)
            return Failure(problem)
        decision = decided.unwrap()
        committed = await self.store.commit(decision)
        if isinstance(committed, Failure):
            raise ContentionError(f"could not create replay run: {committed.failure()}")
        self.publish(decision)
        return Success(run_view(decision.state))

    # ---------------------------------------------------------------- worker path

    async def execute_chain(
        self,
        job_id: str,
        lease_token: str,
        *,
        on_next: Callable[[JobId, LeaseToken], None] = lambda job, token: None,
    ) -> JobOutcome:
        """Deliver a claimed job; then, on the inline fast path, run the steps it makes due now.

        Every delivery renews its lease in the commit that starts the attempt (see
        ``_begin``), so a message that waited in a broker for most of its lease
        does not start an attempt that is then reclaimed and run twice. After a step
        succeeds and its decision schedules a job due at once, the worker records
        the outcome *and* starts that job under a new lease of its own in one
        commit (``combine`` and ``Fence.lease_next``), then runs it with the state
        that commit wrote: one write transaction per step transition and no
        reload, up to ``inline_chain_limit`` steps. ``on_next`` hears of each new
        lease so shutdown can release the right one. Any other due job is left to
        the dispatcher, which is woken for it.
        """
        return await self._chain(
            job_id,
            lease_token,
            heartbeat=True,
            inline=self.settings.inline_next_step,
            on_next=on_next,
        )

    async def execute_job(
        self, job_id: str, lease_token: str, *, heartbeat: bool = True
    ) -> JobOutcome:
        """Deliver one claimed job (see the module docstring)."""
        return await self._chain(
            job_id, lease_token, heartbeat=heartbeat, inline=False, on_next=lambda j, t: None
        )

    async def _chain(
        self,
        job_id: str,
        lease_token: str,
        *,
        heartbeat: bool,
        inline: bool,
        on_next: Callable[[JobId, LeaseToken], None],
    ) -> JobOutcome:
        parsed = parse_job_id(job_id)
        if isinstance(parsed, Failure):
            LOG.warning("dropping a message with a malformed job id %r", parsed.failure().value)
            return JobOutcome.FORGED
        key = parsed.unwrap()
        with log_context(run_id=key.run_id, step=key.step, attempt=key.attempt, job_id=job_id):
            outcome, started = await self._begin(key, JobId(job_id), LeaseToken(lease_token))
        limit = self.settings.inline_chain_limit
        step_number = 0
        while started is not None:
            step_number += 1
            with log_context(
                run_id=started.state.id,
                workflow=started.state.workflow,
                step=started.step,
                attempt=started.attempt,
                job_id=started.job_id,
            ):
                outcome, started = await self._finish(
                    started, heartbeat=heartbeat, inline=inline and step_number < limit
                )
            if started is not None:
                self.inline_steps += 1
                on_next(started.job_id, started.token)
        return outcome

    async def _begin(
        self, key: JobKey, jid: JobId, token: LeaseToken
    ) -> tuple[JobOutcome, _Started | None]:
        """Start the attempt of a claimed job: load its run and commit the delivery."""
        state = await self.store.load(key.run_id)
        if state is None:
            LOG.warning("dropping job %s: its run does not exist", jid)
            return JobOutcome.FORGED, None
        add_log_fields(workflow=state.workflow)
        found = self.workflow(state.workflow)
        if isinstance(found, Failure):
            LOG.error(
                "job %s belongs to workflow %r, which is not registered here; releasing it",
                jid,
                state.workflow,
            )
            await self.store.release(jid, token)
            return JobOutcome.STALE, None
        definition = found.unwrap()
        job = state.job(jid)
        if job is None:
            return JobOutcome.STALE, None
        if job.status is JobStatus.STARTED:
            if job.lease_token == token or job.lease_token is None:
                return JobOutcome.STALE, None
            expired = await self.apply(
                definition,
                state.id,
                LeaseExpired(job_id=jid, lease_token=job.lease_token),
                fence=Fence(job_id=jid, lease_token=token),
                state=state,
            )
            return (
                JobOutcome.RECLAIMED if isinstance(expired, Success) else JobOutcome.STALE
            ), None
        # The attempt starts on a fresh lease, renewed in the commit that records
        # the start: a message that waited in a broker cannot be reclaimed under it.
        renewing = Fence(
            job_id=jid, lease_token=token, renew_until=self.clock.now() + self.settings.lease
        )
        delivered = await self.apply(
            definition,
            state.id,
            JobDelivered(job_id=jid, lease_token=token),
            fence=renewing,
            state=state,
        )
        if isinstance(delivered, Failure):
            return JobOutcome.STALE, None
        started = _started(definition, delivered.unwrap().state, jid, token)
        return (JobOutcome.CONVERGED if started is None else JobOutcome.STALE), started

    async def _finish(
        self, started: _Started, *, heartbeat: bool, inline: bool
    ) -> tuple[JobOutcome, _Started | None]:
        """Run a started attempt and record its outcome; on the inline path, start the next."""
        definition, running = started.definition, started.state
        spec = definition.step(started.step)
        assert spec is not None
        ctx = StepContext(
            run_id=running.id,
            workflow=running.workflow,
            step=started.step,
            attempt=started.attempt,
            idempotency_key=step_idempotency_key(running.id, started.step),
            started_at=started.started_at,
            schedule=_schedule_of(running),
        )
        logger = run_logger(running, started.step, started.attempt)
        jid, token = started.job_id, started.token
        beat = asyncio.create_task(self._heartbeat(jid, token)) if heartbeat else None
        try:
            outcome = await run_step(spec, started.input, ctx, logger)
        finally:
            if beat is not None:
                beat.cancel()
        event: Event
        match outcome:
            case Success(output):
                event = StepSucceeded(job_id=jid, lease_token=token, output=output)
            case Failure(failure):
                logger.warning("step attempt failed: %s", failure.message)
                event = StepFailed(job_id=jid, lease_token=token, failure=failure)
        succeeded = isinstance(event, StepSucceeded)
        done = JobOutcome.SUCCEEDED if succeeded else JobOutcome.FAILED
        fence = Fence(job_id=jid, lease_token=token)
        held: RunState | None = running
        if inline and succeeded:
            recorded_inline = await self._record_inline(started, event, fence)
            if recorded_inline is not None:
                return recorded_inline
            held = None  # the run changed while the step ran: decide on the stored state
        # The dispatcher is woken for what the outcome makes due, unless a success
        # on the inline path is about to lease the next step itself.
        recorded = await self.apply(
            definition,
            running.id,
            event,
            fence=fence,
            state=held,
            kick=not (inline and succeeded),
        )
        if isinstance(recorded, Failure):
            logger.warning("outcome discarded: %s", recorded.failure())
            return JobOutcome.LEASE_LOST, None
        if not (inline and succeeded):
            return done, None
        return done, await self._claim_next(recorded.unwrap())

    async def _record_inline(
        self, started: _Started, event: Event, fence: Fence
    ) -> tuple[JobOutcome, _Started | None] | None:
        """Commit a step's success, with the start of the next step if one is due now.

        The outcome is decided once, on the state the worker holds. When it makes
        a step due at once, that step's start is decided on top and both go in
        one commit that leases the new job to this worker (``combine`` and
        ``Fence.lease_next``); the started attempt is returned to run next.
        ``None`` when the run changed while the step ran: the caller decides
        again on the stored state.
        """
        definition, running = started.definition, started.state
        now = self.clock.now()
        first = decide(definition, running, event, now=now)
        if isinstance(first, Failure):
            return None
        decision = first.unwrap()
        due = [job for job in decision.jobs_scheduled if job.due_at <= now]
        lease = None
        if due:
            token = self.ids.new_lease_token()
            second = decide(
                definition,
                decision.state,
                JobDelivered(job_id=due[0].id, lease_token=token),
                now=now,
            )
            if isinstance(second, Success):
                decision = combine(decision, second.unwrap())
                lease = Lease(
                    job_id=due[0].id,
                    lease_token=token,
                    until=now + self.settings.lease,
                    owner=self.settings.owner,
                )
        committed = await self.store.commit(
            decision,
            fence=Fence(job_id=fence.job_id, lease_token=fence.lease_token, lease_next=lease),
        )
        match committed:
            case Success(_):
                self.publish(decision, kick=lease is None)
                if lease is None:
                    return JobOutcome.SUCCEEDED, None
                if len(due) > 1:
                    self.on_job_due()
                nxt = _started(definition, decision.state, lease.job_id, lease.lease_token)
                return JobOutcome.SUCCEEDED, nxt
            case Failure(StaleLease()):
                LOG.warning("outcome discarded: the lease on %s is no longer held", fence.job_id)
                return JobOutcome.LEASE_LOST, None
            case Failure(_):
                return None
        raise AssertionError(committed)

    async def _claim_next(self, recorded: Decision) -> _Started | None:
        """After an outcome recorded the ordinary way: lease a step it made due and start it."""
        now = self.clock.now()
        due = [j for j in recorded.jobs_scheduled if j.due_at <= now]
        claim = None
        if due:
            try:
                claim = await self.store.claim_job(
                    due[0].id,
                    now=now,
                    lease_for=self.settings.lease,
                    owner=self.settings.owner,
                    lease_token=self.ids.new_lease_token(),
                )
            except Exception:
                LOG.exception("inline claim of %s failed; leaving it to the dispatcher", due[0].id)
        if claim is None or len(due) > 1:
            self._kick_for(recorded, now)
        if claim is None:
            return None
        key = parse_job_id(claim.job_id).unwrap()
        _, started = await self._begin(key, claim.job_id, claim.lease_token)
        return started

    async def _heartbeat(self, job_id: JobId, token: LeaseToken) -> None:
        interval = self.settings.heartbeat_every.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.store.heartbeat(
                    job_id, token, until=self.clock.now() + self.settings.lease
                )
            except Exception:  # a transient store fault must not let the lease lapse
                LOG.exception("heartbeat for %s failed; trying again", job_id)
                continue
            if not held:
                LOG.warning("lease on %s was lost; the outcome will be discarded", job_id)
                return


@dataclass(frozen=True, slots=True)
class _Started:
    """An attempt whose start is committed: what running it needs."""

    definition: WorkflowDefinition
    state: RunState
    """The run as that commit wrote it."""
    job_id: JobId
    token: LeaseToken
    step: str
    attempt: int
    input: JsonObject
    started_at: datetime


def _started(
    definition: WorkflowDefinition, state: RunState, jid: JobId, token: LeaseToken
) -> _Started | None:
    """The running attempt of job ``jid`` in ``state``, if the delivery started one."""
    job = state.job(jid)
    step_run = None if job is None else state.step_run(job.step)
    if job is None or step_run is None:
        return None
    for attempt in step_run.attempts:
        if attempt.job_id == jid and attempt.status is AttemptStatus.RUNNING:
            return _Started(
                definition=definition,
                state=state,
                job_id=jid,
                token=token,
                step=job.step,
                attempt=attempt.number,
                input=step_run.input or EMPTY_OBJECT,
                started_at=attempt.started_at,
            )
    return None
