"""The worker path: one claimed job, from its delivery to its outcome and beyond.

Theory of operation for one delivery (``Delivery.execute``):

1. Parse the job id (a forged id is dropped) and load its run.
2. Decide the delivery (``squidmesh_core.handoff.decide_delivery``): it starts
   the attempt, reclaims a lost one (starting its retry at once, under this
   delivery's token, when the retry is due now), converges the run, or
   changes nothing. The commit is fenced by this lease, and renews it when it
   starts an attempt.
3. Run the step while a heartbeat extends the lease.
4. Decide the outcome (``decide_outcome``). On the inline path a success also
   starts the next step due at once, under a new lease of this worker's, in the
   same commit; the worker then runs that step with the state the commit wrote
   (no claim, no reload), up to ``inline_chain_limit`` steps. Every other job
   due at once is left to the dispatchers, which the ledger wakes.

Every commit carries the fence, so a worker whose lease was taken over cannot
write; a stale, duplicate or forged message changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from returns.result import Failure, Success

from squidmesh_backends.errors import BackendError
from squidmesh_backends.logs import add_log_fields, get_logger, log_context
from squidmesh_backends.outage import Outage, log_failure
from squidmesh_backends.probe import INLINE_STEPS, NO_PROBE, Probe
from squidmesh_backends.runtime._refusals import Refusals
from squidmesh_backends.runtime._transactional import run_in_transaction, timed_out
from squidmesh_backends.runtime.client import Client
from squidmesh_backends.runtime.steps import StepOutcome, run_step
from squidmesh_core.commands import Decision, Lease, StartedAttempt
from squidmesh_core.context import ReadOnlyObject, Recheck, StepContext, step_idempotency_key
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import NotFound, Rejected, StaleDelivery
from squidmesh_core.events import StepDeferred, StepFailed, StepSucceeded
from squidmesh_core.handoff import decide_delivery, decide_outcome
from squidmesh_core.ids import JobId, JobKey, LeaseToken, parse_job_message
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.ports import Fence, RefusalReason
from squidmesh_core.state import TIMED_OUT, RunState, StepFailure

LOG = get_logger("squidmesh.runtime")

OnNext = Callable[[JobId, LeaseToken], None]


class JobOutcome(StrEnum):
    """What one delivery amounted to (the last step's, on the inline path)."""

    FORGED = "forged"
    STALE = "stale"
    RECLAIMED = "reclaimed"
    CONVERGED = "converged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEFERRED = "deferred"
    LEASE_LOST = "lease_lost"


def _forget(task: asyncio.Future[StepOutcome]) -> None:
    """Read an abandoned attempt's end, so its exception is never reported as lost."""
    if not task.cancelled():
        task.exception()


def run_logger(
    run: RunState, step: str | None = None, attempt: int | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger that attaches run id, workflow, step and attempt to every record."""
    return logging.LoggerAdapter(
        get_logger("squidmesh.step"),
        {"run_id": run.id, "workflow": run.workflow, "step": step, "attempt": attempt},
    )


def _why(refused: Rejected | NotFound) -> str:
    return refused.reason if isinstance(refused, StaleDelivery) else refused.code


def _schedule_of(run: RunState) -> JsonObject | None:
    found = run.context.get("schedule")
    return found if isinstance(found, Mapping) else None


@dataclass(frozen=True, slots=True)
class _Running:
    """An attempt whose start is committed, with the run as that commit wrote it."""

    definition: WorkflowDefinition
    state: RunState
    attempt: StartedAttempt


class Delivery:
    """Carries claimed jobs through the core for a worker (see the module docstring)."""

    def __init__(self, *, client: Client, refusals: Refusals, probe: Probe = NO_PROBE) -> None:
        self.client = client
        self.refusals = refusals
        self.heartbeats = Outage("the store (heartbeats)", logger="squidmesh.runtime")
        """Heartbeat failures on a store outage, reported once for every running step."""
        self.store = client.store
        self.ledger = client.ledger
        self.settings = client.settings
        self.probe = probe

    async def execute(
        self,
        job_id: str,
        lease_token: str,
        *,
        heartbeat: bool = True,
        inline: bool = False,
        on_next: OnNext = lambda job, token: None,
    ) -> JobOutcome:
        """Deliver one claimed job; with ``inline``, run the steps it hands to this worker.

        ``on_next`` hears of each new lease taken on the inline path (and by a
        reclaim that starts its retry at once), so shutdown can release the one
        held at that moment.
        """
        parsed = parse_job_message(job_id, lease_token)
        if isinstance(parsed, Failure):
            reason = RefusalReason(parsed.failure().code)
            self.refusals.malformed(reason, [job_id, lease_token], job_id=job_id)
            return JobOutcome.FORGED
        message = parsed.unwrap()
        key = message.key
        with log_context(run_id=key.run_id, step=key.step, attempt=key.attempt, job_id=job_id):
            outcome, running = await self._begin(key, message.job_id, message.lease_token)
        if running is not None and running.attempt.job_id != message.job_id:
            on_next(running.attempt.job_id, running.attempt.lease_token)  # a reclaim's retry
        steps = 0
        while running is not None:
            steps += 1
            attempt = running.attempt
            with log_context(
                run_id=running.state.id,
                workflow=running.state.workflow,
                step=attempt.step,
                attempt=attempt.attempt,
                job_id=attempt.job_id,
            ):
                outcome, running = await self._finish(
                    running,
                    heartbeat=heartbeat,
                    inline=inline and steps < self.settings.inline_chain_limit,
                )
            if running is not None:
                self.probe.record(INLINE_STEPS)
                on_next(running.attempt.job_id, running.attempt.lease_token)
        return outcome

    async def _begin(
        self, key: JobKey, jid: JobId, token: LeaseToken
    ) -> tuple[JobOutcome, _Running | None]:
        """Decide and commit the delivery of a claimed job (steps 1 and 2)."""
        state = await self.store.load(key.run_id)
        if state is None:
            self.refusals.malformed(RefusalReason.UNKNOWN_RUN, jid, job_id=jid)
            return JobOutcome.FORGED, None
        add_log_fields(workflow=state.workflow)
        found = self.client.registry.lookup(state.workflow)
        if isinstance(found, Failure):
            LOG.error(
                "job %s belongs to workflow %r, which is not registered here; releasing it",
                jid,
                state.workflow,
            )
            await self.store.release(jid, token)
            return JobOutcome.STALE, None
        definition = found.unwrap()
        # Used only by a reclaim whose retry is due now: the retry's job is inserted
        # under this delivery's own (fresh, claimed) token, as the lost job is dropped.
        retry = Lease(
            token=token,
            until=self.client.clock.now() + self.settings.lease,
            owner=self.settings.owner,
        )
        delivered = await self.ledger.apply(
            state.id,
            lambda current, now: decide_delivery(
                definition,
                current,
                job_id=jid,
                lease_token=token,
                now=now,
                next_lease=retry,
                worker=self.settings.owner,
            ),
            fence=Fence(job_id=jid, lease_token=token),
            renew_until=self.client.clock.now() + self.settings.lease,
            state=state,
        )
        if isinstance(delivered, Failure):
            self.refusals.stale(jid, _why(delivered.failure()))
            return JobOutcome.STALE, None
        decision = delivered.unwrap()
        started = decision.started
        running = None if started is None else _Running(definition, decision.state, started)
        if decision.reclaimed:
            return JobOutcome.RECLAIMED, running
        if running is None:
            return JobOutcome.CONVERGED, None
        return JobOutcome.STALE, running

    async def _finish(
        self, running: _Running, *, heartbeat: bool, inline: bool
    ) -> tuple[JobOutcome, _Running | None]:
        """Run a started attempt and commit its outcome (steps 3 and 4)."""
        definition, state, attempt = running.definition, running.state, running.attempt
        spec = definition.step(attempt.step)
        assert spec is not None  # the core starts only declared steps
        ctx = StepContext(
            run_id=state.id,
            workflow=state.workflow,
            step=attempt.step,
            attempt=attempt.attempt,
            idempotency_key=step_idempotency_key(state.id, attempt.step),
            started_at=attempt.started_at,
            schedule=_schedule_of(state),
            payload=ReadOnlyObject(state.payload),
            context=ReadOnlyObject(state.context),
        )
        logger = run_logger(state, attempt.step, attempt.attempt)
        jid, token = attempt.job_id, attempt.lease_token
        fence = Fence(job_id=jid, lease_token=token)
        beat = asyncio.create_task(self._heartbeat(jid, token)) if heartbeat else None

        def attempt_in(given: StepContext) -> Awaitable[StepOutcome]:
            return self._bounded(run_step(spec, attempt.input, given, logger), attempt)

        try:
            if not spec.transaction:
                result = await attempt_in(ctx)
            else:
                held = await run_in_transaction(
                    self.store,
                    ctx,
                    attempt_in,
                    lambda current, output: decide_outcome(
                        definition,
                        current,
                        StepSucceeded(job_id=jid, lease_token=token, output=output),
                        now=self.client.clock.now(),
                        next_lease=self._next_lease() if inline else None,  # from now on
                    ),
                    fence=fence,
                )
                result = held.result
                if held.decision is not None:  # the step's writes committed with it
                    self.ledger.committed(held.decision)
                    return self._recorded(definition, held.decision, JobOutcome.SUCCEEDED)
                if held.refused is not None and not timed_out(held.refused):
                    logger.warning("outcome and writes discarded: %s", held.refused)
                    return JobOutcome.LEASE_LOST, None
        finally:
            if beat is not None:
                beat.cancel()
        event: StepSucceeded | StepFailed | StepDeferred
        match result:
            case Success(Recheck(after=after, reason=reason)):
                logger.info("step deferred for %s: %s", after, reason or "not yet")
                event = StepDeferred(job_id=jid, lease_token=token, after=after, reason=reason)
            case Success(output):
                event = StepSucceeded(job_id=jid, lease_token=token, output=output)
            case Failure(failure):
                logger.warning("step attempt failed: %s", failure.message)
                event = StepFailed(job_id=jid, lease_token=token, failure=failure)
        done = {
            StepSucceeded: JobOutcome.SUCCEEDED,
            StepFailed: JobOutcome.FAILED,
            StepDeferred: JobOutcome.DEFERRED,
        }[type(event)]
        # The lease for a step handed on at once starts now, after this step ran.
        lease = self._next_lease() if inline and isinstance(event, StepSucceeded) else None
        recorded = await self.ledger.apply(
            state.id,
            lambda current, now: decide_outcome(
                definition, current, event, now=now, next_lease=lease
            ),
            fence=fence,
            state=state,
            reload_on_refusal=lease is not None,
        )
        if isinstance(recorded, Failure):
            logger.warning("outcome discarded: %s", recorded.failure())
            return JobOutcome.LEASE_LOST, None
        return self._recorded(definition, recorded.unwrap(), done)

    def _recorded(
        self, definition: WorkflowDefinition, decision: Decision, done: JobOutcome
    ) -> tuple[JobOutcome, _Running | None]:
        """After a committed outcome: the next attempt it started on this worker, if any."""
        if decision.started is None:
            return done, None
        return done, _Running(definition, decision.state, decision.started)

    async def _bounded(
        self, running: Awaitable[StepOutcome], attempt: StartedAttempt
    ) -> StepOutcome:
        """The step's outcome, or a ``timed_out`` failure once its ``timeout_at`` passes.

        An async handler is cancelled and, if it ignores that, abandoned; a plain
        function's thread cannot be stopped, so it runs on, and whatever it returns
        later is dropped.
        """
        if attempt.timeout_at is None:
            return await running
        left = (attempt.timeout_at - self.client.clock.now()).total_seconds()
        task = asyncio.ensure_future(running)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
        except asyncio.CancelledError:  # the worker is going away: so does the attempt
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()  # not awaited: a handler that ignores cancellation is abandoned
        task.add_done_callback(_forget)
        return Failure(
            StepFailure(
                kind=TIMED_OUT,
                message=f"attempt {attempt.attempt} of {attempt.step!r} ran past its "
                "timeout and was stopped",
                retryable=True,
                details={"timeout_at": attempt.timeout_at.isoformat()},
            )
        )

    def _next_lease(self) -> Lease:
        """A lease of this worker's for a job the core may hand it in a decision."""
        return Lease(
            token=self.client.ids.new_lease_token(),
            until=self.client.clock.now() + self.settings.lease,
            owner=self.settings.owner,
        )

    async def _heartbeat(self, job_id: JobId, token: LeaseToken) -> None:
        interval = self.settings.heartbeat_every.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.store.heartbeat(
                    job_id, token, until=self.client.clock.now() + self.settings.lease
                )
            except BackendError as exc:  # a store outage: one line for all heartbeats
                self.heartbeats.failed(exc)
                continue
            except Exception as exc:  # a bug: must not let the lease lapse either
                log_failure(LOG, f"heartbeat for {job_id} failed; trying again", exc)
                continue
            self.heartbeats.reached()
            if not held:
                LOG.warning("lease on %s was lost; the outcome will be discarded", job_id)
                return
