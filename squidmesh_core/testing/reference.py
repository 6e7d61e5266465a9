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

TERMINAL = ("failed", "completed", "cancelled", "compensation_failed")
UNDO = ":compensate"
TERMINAL_STEPS = ("failed", "completed", "cancelled")


@dataclass
class ModelJob:
    step: str
    attempt: int
    due: datetime
    token: str | None = None
    started: datetime | None = None


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
    timers: dict[str, str] = field(default_factory=dict)
    """Parked step -> the job id of its timeout timer."""
    inbox: list[tuple[dict[str, object], str | None]] = field(default_factory=list)
    """Signals received: payload and the step that took it."""
    audit: list[tuple[str, str | None]] = field(default_factory=list)
    """Accepted commands: command and idempotency key."""
    failed_once: set[str] = field(default_factory=set)
    """Steps with a failed or lost attempt."""
    plan: list[str] = field(default_factory=list)
    """Steps to compensate, latest completion first (a compensating run)."""
    ends_as: str | None = None
    """What a compensating run ends as once every compensation ran."""


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
        self.err_of_timeout: dict[str, str] = {}
        self.ok = {t.from_step: t.to for t in definition.transitions if t.on.value == "ok"}
        self.err = {t.from_step: t.to for t in definition.transitions if t.on.value == "error"}
        self.after = {s.name: list(s.after) for s in definition.steps}
        self.wait = {s.name: s.duration for s in definition.steps if s.kind is StepKind.WAIT}
        self.output_key = {s.name: s.output_key for s in definition.steps}
        self.retry = {s.name: s.retry for s in definition.steps}
        self.max_lost = {s.name: s.max_lost for s in definition.steps}
        self.deadline = definition.deadline
        self.max_rechecks = {s.name: s.max_rechecks for s in definition.steps}
        self._guarded = {s.name for s in definition.steps if s.irreversible or not s.compensatable}
        self.parks = {s.name: s.kind.value for s in definition.steps if s.kind.parks}
        self.timeout = {s.name: s.timeout for s in definition.steps}
        self.undoes = {s.name for s in definition.steps if s.compensate is not None}
        self.undo_on_cancel = definition.compensate_on_cancel
        for s in definition.steps:  # a compensation is an action step of its own
            if s.compensate is not None:
                name = s.name + UNDO
                self.retry[name] = s.compensate_retry or s.retry
                self.max_lost[name] = s.max_lost
                self.max_rechecks[name] = s.max_rechecks
                self.timeout[name] = s.timeout
                self.output_key[name] = None
        for s in definition.steps:
            if s.on_timeout is not None:
                self.err_of_timeout[s.name] = s.on_timeout
                self.entries = [e for e in self.entries if e != s.on_timeout]
        self.last_started = False
        """Whether the last accepted delivery started an attempt."""

    # ---------------------------------------------------------------- helpers

    def _schedule(self, run: ReferenceRun, step: str, attempt: int, due: datetime) -> None:
        run.jobs[f"{run.run_id}/{step}/{attempt}"] = ModelJob(step=step, attempt=attempt, due=due)
        if step not in run.steps:
            run.steps[step] = "scheduled"
            run.attempts[step] = []

    def _cancel_waiting_jobs(self, run: ReferenceRun) -> None:
        for step, status in run.steps.items():
            if status == "parked":
                run.steps[step] = "cancelled"
        for job_id in list(run.jobs):
            job = run.jobs[job_id]
            if job.token is None:
                del run.jobs[job_id]
                run.steps[job.step] = "cancelled"

    def _settle_active(self, run: ReferenceRun) -> None:
        if run.status == "compensating":
            return
        if "parked" in run.steps.values():
            run.status = "paused"
        elif all(s == "scheduled" and not run.attempts[n] for n, s in run.steps.items()):
            run.status = "pending"
        elif "retry_scheduled" in run.steps.values():
            run.status = "retrying"
        else:
            run.status = "running"

    # ---------------------------------------------------------------- compensation

    def _end(self, run: ReferenceRun, status: str, now: datetime) -> None:
        """End the run ``status`` (``failed``/``cancelled``), compensating first if it must."""
        self._cancel_waiting_jobs(run)
        if status == "failed":
            run.last_error = "failed"
        if run.status == "compensating":
            return
        if status == "cancelled" and not self.undo_on_cancel:
            run.status = status
            return
        order = list(run.steps)
        done = [
            s
            for s in order
            if s in self.undoes and run.steps[s] == "completed" and "succeeded" in run.attempts[s]
        ]
        running = any(run.steps[s] == "running" for s in self.undoes if s in run.steps)
        if not done and not running:
            run.status = status
            return
        run.status, run.ends_as = "compensating", status
        run.plan = sorted(done, key=lambda s: (run.finished[s], order.index(s)), reverse=True)
        self._next_undo(run, now)

    def _next_undo(self, run: ReferenceRun, now: datetime) -> None:
        if any(j.step.endswith(UNDO) for j in run.jobs.values()):
            return
        if any(run.steps.get(s) == "running" for s in self.undoes):
            return  # it may complete and must be undone first
        for step in run.plan:
            if step + UNDO not in run.steps:
                self._schedule(run, step + UNDO, 1, now)
                return
        if any(st == "running" for s, st in run.steps.items() if not s.endswith(UNDO)):
            return
        if any(run.steps[s + UNDO] == "failed" for s in run.plan):
            run.status, run.last_error = "compensation_failed", "compensation_failed"
        else:
            run.status = run.ends_as or "failed"

    # ---------------------------------------------------------------- parking

    def _go(self, run: ReferenceRun, step: str, due: datetime, now: datetime) -> None:
        """Start a step of a transition workflow: a parking step due now parks at once."""
        if step in self.parks and due <= now:
            self._park(run, step, now, delivered=None)
        else:
            self._schedule(run, step, 1, due)
            self._settle_active(run)

    def _park(self, run: ReferenceRun, step: str, now: datetime, delivered: int | None) -> None:
        if step not in run.steps:
            run.steps[step] = "scheduled"
            run.attempts[step] = []
        run.steps[step] = "parked"
        run.status = "paused"
        if self.parks[step] == "signal":
            for index, (payload, taker) in enumerate(run.inbox):
                if taker is None:
                    run.inbox[index] = (payload, step)
                    self._resume(run, step, payload, now)
                    return
        timeout = self.timeout.get(step)
        if timeout is not None:
            attempt = 1 if delivered is None else delivered + 1
            self._schedule(run, step, attempt, now + timeout)
            run.timers[step] = f"{run.run_id}/{step}/{attempt}"

    def _mapped(self, step: str, output: dict[str, object]) -> dict[str, object]:
        key = self.output_key[step]
        return {key: output} if key else {}

    def _end_timer(self, run: ReferenceRun, step: str) -> None:
        timer = run.timers.pop(step, None)
        if timer is not None:
            run.jobs.pop(timer, None)

    def _resume(
        self, run: ReferenceRun, step: str, output: dict[str, object], now: datetime
    ) -> None:
        self._end_timer(run, step)
        run.steps[step] = "completed"
        run.outputs[step] = self._mapped(step, output)
        run.context.update(self._mapped(step, output))
        self._route(run, self.ok[step], now)

    def _give_up(
        self, run: ReferenceRun, step: str, output: dict[str, object], now: datetime
    ) -> None:
        self._end_timer(run, step)
        run.steps[step] = "failed"
        run.outputs[step] = self._mapped(step, output)
        run.context.update(self._mapped(step, output))
        target = self.err_of_timeout.get(step) if self.parks[step] == "signal" else None
        target = target or self.err.get(step)
        if target is None:
            self._end(run, "failed", now)
            return
        run.last_error = None
        self._route(run, target, now)

    def _route(self, run: ReferenceRun, target: str, now: datetime) -> None:
        if target == "complete":
            self._cancel_waiting_jobs(run)
            run.status = "completed"
            run.last_error = None
        elif target == "fail":
            self._end(run, "failed", now)
        else:
            self._go(run, target, now, now)

    # ---------------------------------------------------------------- commands

    def _signal(
        self,
        run: ReferenceRun,
        parked: str | None,
        payload: dict[str, object] | None,
        now: datetime,
    ) -> bool:
        """Apply signal ``go``; whether it was accepted."""
        if run.status in (*TERMINAL, "cancelling", "compensating") or payload is None:
            return False
        waits = parked is not None and self.parks[parked] == "signal"
        timer = None if parked is None else run.timers.get(parked)
        if waits and timer in run.jobs and run.jobs[timer].due <= now:
            return False  # the wait timed out, even if its timer has not run
        if not any(self.parks.get(s) == "signal" for s in self._ahead(run)):
            return False
        if waits and parked is not None:
            run.inbox.append((payload, parked))
            self._resume(run, parked, payload, now)
        else:
            run.inbox.append((payload, None))
        return True

    def _ahead(self, run: ReferenceRun) -> set[str]:
        """Steps the run is at or may still reach."""
        found = {s for s, status in run.steps.items() if status not in TERMINAL_STEPS}
        frontier = list(found)
        while frontier:
            step = frontier.pop()
            for target in (self.ok.get(step), self.err.get(step), self.err_of_timeout.get(step)):
                if (
                    target is not None
                    and target not in ("complete", "fail")
                    and target not in found
                ):
                    found.add(target)
                    frontier.append(target)
        return found

    def _repeat(self, run: ReferenceRun, command: str, key: str | None) -> str | None:
        if key is None:
            return None
        for done, used in run.audit:
            if used == key:
                return "repeated" if done == command else "reused"
        return None

    def command(
        self,
        run: ReferenceRun,
        command: str,
        *,
        key: str | None,
        actor: str,
        note: str | None,
        now: datetime,
        payload: dict[str, object] | None = None,
    ) -> str:
        """Apply an operator command: ``accepted``, ``repeated``, ``reused`` or ``refused``."""
        repeated = self._repeat(run, command, key)
        if repeated is not None:
            return repeated
        parked = next((s for s, status in run.steps.items() if status == "parked"), None)
        record: dict[str, object] = {"actor": actor, "at": now.isoformat(), "note": note}
        if command == "cancel":
            if not self.cancel(run, now):
                return "refused"
        elif command in ("unblock", "approve", "reject"):
            wanted = "pause" if command == "unblock" else "approval"
            if run.status != "paused" or parked is None or self.parks[parked] != wanted:
                return "refused"
            if command == "unblock":
                self._resume(run, parked, record, now)
            elif command == "approve":
                self._resume(run, parked, {"decision": "approved", **record}, now)
            else:
                self._give_up(run, parked, {"decision": "rejected", **record}, now)
        elif command == "signal" and not self._signal(run, parked, payload, now):
            return "refused"
        run.audit.append((command, key))
        return "accepted"

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

    def _past_timeout(self, job: ModelJob, now: datetime) -> bool:
        """An action step's attempt reported at or after its timeout (it timed out)."""
        limit = self.timeout.get(job.step)
        return (
            job.step not in self.parks
            and limit is not None
            and job.started is not None
            and now >= job.started + limit
        )

    def _owned(self, run: ReferenceRun, job_id: str, token: str) -> ModelJob | None:
        job = run.jobs.get(job_id)
        if job is None or job.token is None or job.token != token:
            return None
        return job

    # ---------------------------------------------------------------- events

    def start(self, run_id: str, now: datetime) -> ReferenceRun:
        run = ReferenceRun(run_id=run_id)
        if self.deadline is not None:
            self._schedule(run, "__deadline__", 1, now + self.deadline)
        if self.dependency_mode:
            for entry in self.entries:
                self._schedule(run, entry, 1, now)
        else:
            self._go(run, self.entries[0], now, now)
        return run

    def deliver(self, run: ReferenceRun, job_id: str, token: str, now: datetime) -> bool:
        self.last_started = False
        job = run.jobs.get(job_id)
        if job is None or job.token is not None:
            return False
        if job.step == "__deadline__":  # the run did not finish in time
            del run.jobs[job_id]
            run.steps[job.step] = "completed"
            if run.status != "cancelling":  # a cancelling run is ending anyway
                self._end(run, "failed", now)
            return True
        if run.status == "cancelling":
            self._end(run, "cancelled", now)
            return True
        if run.steps.get(job.step) == "parked":  # the timeout timer
            self._give_up(run, job.step, {}, now)
            return True
        undo = job.step.endswith(UNDO)
        if (run.status == "compensating") != undo or run.status in TERMINAL:
            return False
        if run.status not in ("pending", "running", "retrying", "compensating"):
            return False
        if job.step in self.parks:
            del run.jobs[job_id]
            self._park(run, job.step, now, delivered=job.attempt)
            return True
        self.last_started = True
        job.token = token
        job.started = now
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
        if self._past_timeout(job, now):
            return self.fail(run, job_id, token, retryable=True, retry_after=None, now=now)
        del run.jobs[job_id]
        run.attempts[job.step][-1] = "succeeded"
        run.steps[job.step] = "completed"
        run.finished[job.step] = now
        key = self.output_key[job.step]
        run.outputs[job.step] = {key: output} if key else output
        if run.status in TERMINAL:
            return True
        if run.status == "compensating":
            if job.step in self.undoes and job.step not in run.plan:
                run.plan.insert(0, job.step)  # it completed last: undone first
            self._next_undo(run, now)
            return True
        run.context.update({key: output} if key else output)
        if run.status == "cancelling":
            self._end(run, "cancelled", now)
            return True
        if not any(
            other != job.step and run.steps[other] in ("retry_scheduled", "running")
            for other in run.failed_once
        ):
            run.last_error = None
        if not self.dependency_mode:
            delay = self.wait.get(job.step) or timedelta(0)
            target = self.ok[job.step]
            if target in ("complete", "fail"):
                self._route(run, target, now)
            else:
                self._go(run, target, now + delay, now)
            return True
        return self._dependents(run, now)

    def _dependents(self, run: ReferenceRun, now: datetime) -> bool:
        """After a dependency step: complete, or schedule the steps now ready."""
        done = [s for s in self.order if run.steps.get(s) == "completed"]
        if len(done) == len(self.order):
            self._cancel_waiting_jobs(run)
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

    def fail(  # noqa: PLR0912  # the naive model spells out every case inline
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
        if not lost and self._past_timeout(job, now):  # whatever it reports, it timed out
            retryable, retry_after = True, None
        del run.jobs[job_id]
        run.attempts[job.step][-1] = "lost" if lost else "failed"
        run.failed_once.add(job.step)
        if run.status in TERMINAL:
            run.steps[job.step] = "failed"
            return True
        if run.status == "cancelling":
            run.steps[job.step] = "failed"
            self._end(run, "cancelled", now)
            return True
        undo = job.step.endswith(UNDO)
        if run.status == "compensating" and not undo:
            run.steps[job.step] = "failed"
            self._next_undo(run, now)
            return True
        policy = self.retry[job.step]
        max_attempts = 1 if policy is None else policy.max_attempts
        lost_so_far = run.attempts[job.step].count("lost")
        failed_so_far = run.attempts[job.step].count("failed")
        if lost:
            again = lost_so_far <= self.max_lost[job.step]  # a lost attempt is not a failure
            delay = timedelta(0)
        else:
            again = retryable and failed_so_far < max_attempts
            delay = (
                retry_after
                if retry_after is not None
                else self._delay(run, job.step, failed_so_far)
            )
        if again:
            run.steps[job.step] = "retry_scheduled"
            if not undo:
                run.last_error = "retrying"
            self._schedule(run, job.step, job.attempt + 1, now + max(delay, timedelta(0)))
            self._settle_active(run)
            return True
        run.steps[job.step] = "failed"
        if undo:  # every compensation is tried: the next one runs
            self._next_undo(run, now)
            return True
        target = None if self.dependency_mode else self.err.get(job.step)
        if target in ("complete", "fail"):
            self._route(run, target, now)
        elif target is not None:
            run.last_error = None
            self._go(run, target, now, now)
        else:
            self._end(run, "failed", now)
        return True

    def defer(
        self, run: ReferenceRun, job_id: str, token: str, delay: timedelta, now: datetime
    ) -> bool:
        """The step said "not yet": it runs again after ``delay``, using no retry."""
        job = self._owned(run, job_id, token)
        if job is None:
            return False
        if self._past_timeout(job, now):
            return self.fail(run, job_id, token, retryable=True, retry_after=None, now=now)
        if run.attempts[job.step].count("deferred") >= self.max_rechecks[job.step]:
            return self.fail(run, job_id, token, retryable=False, retry_after=None, now=now)
        del run.jobs[job_id]
        run.attempts[job.step][-1] = "deferred"
        forward_while_undoing = run.status == "compensating" and not job.step.endswith(UNDO)
        if run.status in (*TERMINAL, "cancelling") or forward_while_undoing:
            run.steps[job.step] = "failed"
            if run.status == "cancelling":
                self._end(run, "cancelled", now)
            elif forward_while_undoing:
                self._next_undo(run, now)
            return True
        run.steps[job.step] = "scheduled"
        self._schedule(run, job.step, job.attempt + 1, now + delay)
        self._settle_active(run)
        return True

    def guarded(self, step: str) -> bool:
        """Whether a completed ``step`` makes a replay need ``allow_irreversible``."""
        return step in self._guarded

    def cancel(self, run: ReferenceRun, now: datetime) -> bool:
        if run.status in ("pending", "paused"):
            self._end(run, "cancelled", now)
            return True
        if run.status in ("running", "retrying"):
            run.status = "cancelling"
            for job in run.jobs.values():
                if job.token is None and job.due > now and job.step != "__deadline__":
                    job.due = now
            return True
        return False
