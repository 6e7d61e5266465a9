"""A deliberately naive reference model of one run, used as an oracle in tests.

It re-states the run rules with dicts and lists, in the most direct way, and
imports nothing from the code under test except the definition *types* it reads.
It is not the memory store and shares no code with ``decide``: when the two
disagree, one of them is wrong, and the state machine says which rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from squidmesh_core.definition import (
    StepKind,
    WorkflowDefinition,
    WorkflowMode,
)
from squidmesh_core.retry import Exponential, Fixed, Linear

TERMINAL = ("failed", "completed", "cancelled")


@dataclass
class ModelJob:
    step: str
    attempt: int
    due: datetime
    token: str | None = None


@dataclass
class ReferenceRun:
    """Plain-data run: statuses as strings, attempts as lists of strings."""

    run_id: str
    status: str = "pending"
    steps: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, list[str]] = field(default_factory=dict)
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    context: dict[str, object] = field(default_factory=dict)
    finished: dict[str, datetime] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)
    last_error: str | None = None


class ReferenceModel:
    """Predicts what ``decide`` must do for one workflow."""

    def __init__(self, definition: WorkflowDefinition) -> None:
        self.dependency_mode = definition.mode is WorkflowMode.DEPENDENCIES
        self.order = [s.name for s in definition.steps]
        # Entry steps are worked out here, not taken from the validator under test.
        targeted = {t.to for t in definition.transitions}
        if definition.mode is WorkflowMode.DEPENDENCIES:
            self.entries = [s.name for s in definition.steps if not s.after]
        else:
            self.entries = [s.name for s in definition.steps if s.name not in targeted]
        self.ok = {t.from_step: t.to for t in definition.transitions if t.on.value == "ok"}
        self.err = {t.from_step: t.to for t in definition.transitions if t.on.value == "error"}
        self.after = {s.name: list(s.after) for s in definition.steps}
        self.wait = {s.name: s.duration for s in definition.steps if s.kind is StepKind.WAIT}
        self.output_key = {s.name: s.output_key for s in definition.steps}
        self.retry = {s.name: s.retry for s in definition.steps}

    # ---------------------------------------------------------------- helpers

    def _schedule(self, run: ReferenceRun, step: str, attempt: int, due: datetime) -> None:
        run.jobs[f"{run.run_id}/{step}/{attempt}"] = ModelJob(step=step, attempt=attempt, due=due)
        if step not in run.steps:
            run.steps[step] = "scheduled"
            run.attempts[step] = []

    def _cancel_waiting_jobs(self, run: ReferenceRun) -> None:
        for job_id in list(run.jobs):
            job = run.jobs[job_id]
            if job.token is None:
                del run.jobs[job_id]
                run.steps[job.step] = "cancelled"

    def _settle_active(self, run: ReferenceRun) -> None:
        if "retry_scheduled" in run.steps.values():
            run.status = "retrying"
        elif any(run.attempts.values()):
            run.status = "running"
        else:
            run.status = "pending"

    def _delay(self, run: ReferenceRun, step: str, attempt: int) -> timedelta:
        policy = self.retry[step]
        backoff = None if policy is None else policy.backoff
        n = attempt - 1
        if backoff is None:
            return timedelta(0)
        if isinstance(backoff, Fixed):
            return backoff.delay
        if isinstance(backoff, Linear):
            return min(backoff.min + backoff.step * n, backoff.max)
        if isinstance(backoff, Exponential):
            if backoff.max / backoff.min <= backoff.factor ** min(n, 64):
                return backoff.max
            return min(backoff.min * backoff.factor**n, backoff.max)
        raise AssertionError(backoff)

    def _owned(self, run: ReferenceRun, job_id: str, token: str) -> ModelJob | None:
        job = run.jobs.get(job_id)
        if job is None or job.token is None or job.token != token:
            return None
        return job

    # ---------------------------------------------------------------- events

    def start(self, run_id: str, now: datetime) -> ReferenceRun:
        run = ReferenceRun(run_id=run_id)
        for entry in self.entries:
            self._schedule(run, entry, 1, now)
        return run

    def deliver(self, run: ReferenceRun, job_id: str, token: str, now: datetime) -> bool:
        job = run.jobs.get(job_id)
        if job is None or job.token is not None:
            return False
        if run.status == "cancelling":
            self._cancel_waiting_jobs(run)
            run.status = "cancelled"
            return True
        job.token = token
        run.steps[job.step] = "running"
        run.attempts[job.step].append("running")
        self._settle_active(run)
        return True

    def succeed(
        self, run: ReferenceRun, job_id: str, token: str, output: dict[str, object], now: datetime
    ) -> bool:
        job = self._owned(run, job_id, token)
        if job is None:
            return False
        del run.jobs[job_id]
        run.attempts[job.step][-1] = "succeeded"
        run.steps[job.step] = "completed"
        run.finished[job.step] = now
        key = self.output_key[job.step]
        run.outputs[job.step] = {key: output} if key else output
        if run.status in TERMINAL:
            return True
        run.context.update({key: output} if key else output)
        if run.status == "cancelling":
            self._cancel_waiting_jobs(run)
            run.status = "cancelled"
            return True
        if not self.dependency_mode:
            delay = self.wait.get(job.step) or timedelta(0)
            target = self.ok[job.step]
            if target == "complete":
                run.status = "completed"
                run.last_error = None
            else:
                self._schedule(run, target, 1, now + delay)
                self._settle_active(run)
            return True
        done = [s for s in self.order if run.steps.get(s) == "completed"]
        if len(done) == len(self.order):
            run.status = "completed"
            run.last_error = None
            return True
        for name in self.order:
            if name not in run.steps and all(d in done for d in self.after[name]):
                due = now
                for dep in self.after[name]:
                    pause = self.wait.get(dep)
                    if pause is not None:
                        due = max(due, run.finished[dep] + pause)
                self._schedule(run, name, 1, due)
        self._settle_active(run)
        return True

    def fail(
        self,
        run: ReferenceRun,
        job_id: str,
        token: str,
        *,
        retryable: bool,
        retry_after: timedelta | None,
        now: datetime,
        lost: bool = False,
    ) -> bool:
        job = self._owned(run, job_id, token)
        if job is None:
            return False
        del run.jobs[job_id]
        run.attempts[job.step][-1] = "lost" if lost else "failed"
        if run.status in TERMINAL:
            run.steps[job.step] = "failed"
            return True
        if run.status == "cancelling":
            run.steps[job.step] = "failed"
            self._cancel_waiting_jobs(run)
            run.status = "cancelled"
            return True
        policy = self.retry[job.step]
        max_attempts = 1 if policy is None else policy.max_attempts
        if retryable and job.attempt < max_attempts:
            delay = (
                retry_after if retry_after is not None else self._delay(run, job.step, job.attempt)
            )
            run.steps[job.step] = "retry_scheduled"
            run.last_error = "retrying"
            self._schedule(run, job.step, job.attempt + 1, now + max(delay, timedelta(0)))
            self._settle_active(run)
            return True
        run.steps[job.step] = "failed"
        target = None if self.dependency_mode else self.err.get(job.step)
        if target == "complete":
            run.status = "completed"
            run.last_error = None
        elif target is not None:
            run.last_error = None
            self._schedule(run, target, 1, now)
            self._settle_active(run)
        else:
            self._cancel_waiting_jobs(run)
            run.status = "failed"
            run.last_error = "failed"
        return True

    def cancel(self, run: ReferenceRun, now: datetime) -> bool:
        if run.status in ("pending", "paused"):
            self._cancel_waiting_jobs(run)
            run.status = "cancelled"
            return True
        if run.status in ("running", "retrying"):
            run.status = "cancelling"
            for job in run.jobs.values():
                if job.token is None and job.due > now:
                    job.due = now
            return True
        return False
