"""The draft builder: one decision accumulated edit by edit, then frozen.

Rules:

1. **Inputs are never touched.** A draft copies the fields a decision may change
   into plain attributes and builds the new ``RunState`` once, in ``finish``:
   copying the 15-field run for every edit was most of the cost of a decision.
2. **Every status change is looked up in the tables** (``_table``): a change that
   is not there is a bug in the decider and raises ``InvariantViolatedError``.
3. **Jobs and commands move together.** Scheduling a job adds it to the run's
   live jobs and emits ``ScheduleJob``; dropping one emits ``FinishJob`` for a
   started job and ``CancelJob`` for a scheduled one.
4. **A run-status change is reported** as a ``run.transition`` event by ``finish``,
   which also stamps every event of the decision with the run's final status.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from squidmesh_core import _compensation
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
    ScheduleJob,
    StartedAttempt,
    Topic,
)
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import InvariantViolatedError
from squidmesh_core.ids import job_id_for
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.state import (
    DEADLINE_STEP,
    Attempt,
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


_seal = object.__setattr__
"""Sets a field of a frozen value this draft made and has not handed out yet."""


def ms(delta: timedelta) -> int:
    """A duration in whole milliseconds (never negative), as events report it."""
    return max(0, round(delta.total_seconds() * 1000))


class Draft:
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
        self._emitted: list[Emit] = []
        self.initial_status = run.status
        self.started: StartedAttempt | None = None
        self.status = run.status
        self.steps = run.steps
        self.jobs = run.jobs
        self.context = run.context
        self.last_error = run.last_error
        self.audit = run.audit
        self.signals = run.signals
        self.compensation = run.compensation

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
        """Drop every scheduled job and mark its step cancelled (skipped, for ``reason``).

        A parked step is cancelled too, with its timeout timer.
        """
        for parked in [s for s in self.steps if s.status is StepStatus.PARKED]:
            self.put_step(replace(parked, status=StepStatus.CANCELLED, updated_at=self.now))
            self.emit(Topic.STEP_CANCELLED, step=parked.step, attributes={"reason": reason})
        for job in self.jobs:
            if job.status is JobStatus.SCHEDULED:
                self.drop_job(job)
                current = self.step_run(job.step)
                if current.status.terminal:
                    continue  # the timer of a step cancelled above
                self.put_step(replace(current, status=StepStatus.CANCELLED, updated_at=self.now))
                if job.step == DEADLINE_STEP:
                    continue  # the run's deadline timer: not a step anyone ran
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
        emitted = Emit(
            topic=topic,
            run_id=self.origin.id,
            workflow=self.origin.workflow,
            step=step,
            attempt=attempt,
            attributes=attributes or {},
            at=self.now,
        )
        self._emitted.append(emitted)
        self.commands.append(emitted)

    def finish(self) -> Decision:
        if self.status != self.initial_status:
            self.emit(
                Topic.RUN_TRANSITION,
                attributes={"from": self.initial_status.value, "to": self.status.value},
            )
        final = replace(
            self.origin,
            status=self.status,
            steps=self.steps,
            jobs=self.jobs,
            context=self.context,
            last_error=self.last_error,
            audit=self.audit,
            signals=self.signals,
            compensation=self.compensation,
            version=self.origin.version + 1,
            updated_at=self.now,
        )
        status = self.status.value
        for emitted in self._emitted:  # made by this draft, seen by no one yet: no copies
            _seal(emitted, "run_status", status)
        return Decision(state=final, commands=tuple(self.commands), started=self.started)

    # -- endings --------------------------------------------------------------------

    def settle_active(self) -> None:
        """Set the status of a run that is neither terminal nor cancelling.

        A run stays ``pending`` until its first attempt starts or a step parks,
        is ``paused`` while a step is parked, ``retrying`` while a retry is
        scheduled, and ``running`` otherwise. A compensating run stays so.
        """
        if self.status is RunStatus.COMPENSATING:
            return
        if any(s.status is StepStatus.PARKED for s in self.steps):
            self.set_run_status(RunStatus.PAUSED)
        elif all(s.status is StepStatus.SCHEDULED and not s.attempts for s in self.steps):
            self.set_run_status(RunStatus.PENDING)
        elif any(s.status is StepStatus.RETRY_SCHEDULED for s in self.steps):
            self.set_run_status(RunStatus.RETRYING)
        else:
            self.set_run_status(RunStatus.RUNNING)

    def converge_cancel(self) -> None:
        """End a cancelling (or never started) run as ``cancelled`` (compensating if opted in)."""
        self.cancel_scheduled("run_cancelled")
        if not (
            self.definition.compensate_on_cancel
            and _compensation.begin(self, RunStatus.CANCELLED, None)
        ):
            self.set_run_status(RunStatus.CANCELLED)

    def complete(self) -> None:
        """End the run as ``completed``: nothing left scheduled, no error kept."""
        self.cancel_scheduled("run_completed")
        self.set_last_error(None)
        self.set_run_status(RunStatus.COMPLETED)

    def fail_run(self, failure: StepFailure) -> None:
        """End the run as ``failed`` with ``failure`` as its error (compensating first)."""
        self.set_last_error(failure)
        self.cancel_scheduled("run_failed")
        if not _compensation.begin(self, RunStatus.FAILED, failure):
            self.set_run_status(RunStatus.FAILED)
