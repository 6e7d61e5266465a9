"""``explain``: why a run is where it is, what can be done next, and the evidence.

A pure function of the run's state, its workflow (``None`` when this process
does not know it any more), the leases of its jobs (which only the store knows)
and the time. The runtime's ``explain_run`` loads those and calls it.

Decision table (first match wins):

====================  =======================================  ==============================
run                   reason                                    next actions
====================  =======================================  ==============================
completed             ``completed``                             replay
cancelled             ``cancelled``                             replay
failed by the         ``deadline_exceeded``                     replay
deadline
failed                ``retry_exhausted`` (the step had         replay
                      retries and used them all), else
                      ``step_failed``
compensation gave up  ``compensation_failed``                   repair by hand, replay
compensating          ``compensating``                          wait for the compensations
cancelling            ``cancelling``                            wait for the running attempt
paused, workflow      ``paused_with_unavailable_workflow``      cancel
unknown here
paused, resume        ``paused_with_invalid_resume_target``     cancel
target not declared
paused at approval    ``paused_for_approval``                   approve, reject, cancel
paused at pause       ``paused_for_manual_action``              unblock, cancel
paused at signal      ``waiting_for_signal``                    send the signal, cancel
retrying              ``waiting_for_retry``                     wait, cancel
a join's dependencies ``waiting_for_dependencies``              wait, cancel
still incomplete
an attempt running,   ``lease_expired``                         wait for a reclaim, cancel
its lease expired
an attempt running    ``step_running``                          wait, cancel
a re-check due later  ``waiting_for_recheck``                   wait, cancel
a job due later       ``waiting_for_timer``                     wait, cancel
a job due now         ``step_scheduled``                        wait for a worker, cancel
otherwise             ``pending_dispatch``                      cancel
====================  =======================================  ==============================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from squidmesh_core._actions import NextAction, actions_for
from squidmesh_core.codec import encode_failure
from squidmesh_core.definition import DEADLINE, ENDS, WorkflowDefinition, WorkflowMode
from squidmesh_core.ids import JobId
from squidmesh_core.jsonvalue import JsonObject, JsonValue
from squidmesh_core.state import (
    DEADLINE_EXCEEDED,
    AttemptStatus,
    Job,
    JobStatus,
    ParkKind,
    RunState,
    RunStatus,
    StepRunState,
    StepStatus,
    compensated_step,
    compensation_step,
)


class Reason(StrEnum):
    """Why a run is where it is (stable codes)."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    STEP_FAILED = "step_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RETRY_EXHAUSTED = "retry_exhausted"
    CANCELLING = "cancelling"
    COMPENSATING = "compensating"
    COMPENSATION_FAILED = "compensation_failed"
    PAUSED_WITH_UNAVAILABLE_WORKFLOW = "paused_with_unavailable_workflow"
    PAUSED_WITH_INVALID_RESUME_TARGET = "paused_with_invalid_resume_target"
    PAUSED_FOR_APPROVAL = "paused_for_approval"
    PAUSED_FOR_MANUAL_ACTION = "paused_for_manual_action"
    WAITING_FOR_SIGNAL = "waiting_for_signal"
    WAITING_FOR_RETRY = "waiting_for_retry"
    WAITING_FOR_DEPENDENCIES = "waiting_for_dependencies"
    LEASE_EXPIRED = "lease_expired"
    STEP_RUNNING = "step_running"
    WAITING_FOR_TIMER = "waiting_for_timer"
    WAITING_FOR_RECHECK = "waiting_for_recheck"
    STEP_SCHEDULED = "step_scheduled"
    PENDING_DISPATCH = "pending_dispatch"


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    """Who holds a job's lease and until when (the store knows; the run does not)."""

    job_id: JobId
    owner: str | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Why the run is where it is (``reason``, ``summary``), what can be done, and the evidence."""

    run_id: str
    status: RunStatus
    reason: Reason
    summary: str
    """One sentence for people."""
    step: str | None
    details: JsonObject
    next_actions: tuple[NextAction, ...]
    evidence: JsonObject


def _when(moment: datetime, now: datetime) -> str:
    """``06:17:23Z, in 1h59m`` (or ``... ago``)."""
    delta = moment - now
    seconds = int(abs(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    span = (
        f"{hours}h{minutes:02d}m"
        if hours
        else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")
    )
    stamp = moment.strftime("%Y-%m-%d %H:%M:%SZ")
    if seconds == 0:
        return f"{stamp}, now"
    return f"{stamp}, in {span}" if delta > timedelta(0) else f"{stamp}, {span} ago"


def describe_due(moment: datetime, now: datetime) -> str:
    """A due time for people, relative to ``now`` (used by the CLI too)."""
    return _when(moment, now)


def _step_evidence(step_run: StepRunState) -> JsonObject:
    latest = step_run.attempts[-1] if step_run.attempts else None
    attempt: JsonValue = None
    if latest is not None:
        attempt = {
            "number": latest.number,
            "status": latest.status.value,
            "started_at": latest.started_at.isoformat(),
            "finished_at": None if latest.finished_at is None else latest.finished_at.isoformat(),
            "error": encode_failure(latest.error),
        }
    return {
        "step": step_run.step,
        "status": step_run.status.value,
        "scheduled_at": step_run.scheduled_at.isoformat(),
        "updated_at": step_run.updated_at.isoformat(),
        "error": encode_failure(step_run.error),
        "attempts": len(step_run.attempts),
        "latest_attempt": attempt,
    }


def _job_evidence(job: Job, leases: Mapping[JobId, LeaseInfo]) -> JsonObject:
    lease = leases.get(job.id)
    return {
        "id": job.id,
        "step": job.step,
        "attempt": job.attempt,
        "status": job.status.value,
        "due_at": job.due_at.isoformat(),
        "lease_owner": None if lease is None else lease.owner,
        "lease_expires_at": (
            None if lease is None or lease.expires_at is None else lease.expires_at.isoformat()
        ),
    }


class _Builder:
    def __init__(
        self,
        definition: WorkflowDefinition | None,
        run: RunState,
        now: datetime,
        leases: Mapping[JobId, LeaseInfo],
    ) -> None:
        self.definition, self.run, self.now, self.leases = definition, run, now, leases

    def make(
        self,
        reason: Reason,
        summary: str,
        *,
        step: str | None = None,
        details: JsonObject | None = None,
        actions: tuple[str, ...] = (),
        signal: str | None = None,
    ) -> Explanation:
        run = self.run
        if self.definition is None:  # nothing can act on a run of an unknown workflow here
            actions = ("register_workflow",)
        evidence: dict[str, JsonValue] = {
            "run": {
                "id": run.id,
                "status": run.status.value,
                "workflow": run.workflow,
                "current_steps": list(run.current_steps),
                "last_error": encode_failure(run.last_error),
                "created_at": run.created_at.isoformat(),
                "updated_at": run.updated_at.isoformat(),
                "schedule": run.context.get("schedule"),
            },
            "jobs": [_job_evidence(j, self.leases) for j in run.jobs],
            "deadline": next((j.due_at.isoformat() for j in run.jobs if j.step == DEADLINE), None),
            "workflow_definition": {"available": self.definition is not None},
        }
        step_run = None if step is None else run.step_run(step)
        if step_run is not None:
            evidence["step_run"] = _step_evidence(step_run)
        if run.audit:
            last = run.audit[-1]
            evidence["last_command"] = {
                "command": last.command.value,
                "actor": last.actor,
                "at": last.at.isoformat(),
            }
        return Explanation(
            run_id=run.id,
            status=run.status,
            reason=reason,
            summary=summary,
            step=step,
            details=details or {},
            next_actions=actions_for(run.id, *actions, signal=signal),
            evidence=evidence,
        )

    def _known(self, target: str | None) -> bool:
        return (
            target is None
            or target in ENDS
            or (self.definition is not None and self.definition.step(target) is not None)
        )

    def _replay(self) -> tuple[dict[str, JsonValue], tuple[str, ...]]:
        """Replay info for a finished run: allowed, or blocked by which guarded steps."""
        guarded = [
            s.step for s in self.run.steps if s.status is StepStatus.COMPLETED and s.replay_guard
        ]
        if not guarded:
            return {"replay": {"allowed": True}}, ("replay_run",)
        blocked: dict[str, JsonValue] = {
            "allowed": False,
            "required_override": "allow_irreversible",
            "blocked_by": list(guarded),
        }
        return {"replay": blocked}, ("replay_run_allowing_irreversible",)

    def _compensation(self) -> dict[str, JsonValue]:
        """Where the run's compensation stands: the plan, and each one's status."""
        undo = self.run.compensation
        if undo is None:
            return {}
        states: dict[str, JsonValue] = {}
        for name in undo.plan:
            done = self.run.step_run(compensation_step(name))
            states[name] = "pending" if done is None else done.status.value
        return {"compensation": {"ends_as": undo.ends_as.value, "steps": states}}

    def compensating(self) -> Explanation:
        info = self._compensation()
        job = next((j for j in self.run.jobs if compensated_step(j.step) is not None), None)
        if job is None:
            return self.make(
                Reason.COMPENSATING,
                "the run is compensating; it ends once the attempt still running reports",
                details=info,
                actions=("wait_for_compensation",),
            )
        undo = self.run.compensation
        ended = "was cancelled" if undo and undo.ends_as is RunStatus.CANCELLED else "failed"
        when = (
            "is running"
            if job.status is JobStatus.STARTED
            else f"is due {_when(job.due_at, self.now)}"
        )
        return self.make(
            Reason.COMPENSATING,
            f"the run {ended} and is undoing its steps: the compensation of "
            f"{compensated_step(job.step)!r} {when}",
            step=job.step,
            details={**info, "attempt": job.attempt, "due_at": job.due_at.isoformat()},
            actions=("wait_for_compensation",),
        )

    def finished(self) -> Explanation:
        run = self.run
        info, replay = self._replay()
        info.update(self._compensation())
        if run.status is RunStatus.COMPENSATION_FAILED:
            error = run.last_error
            return self.make(
                Reason.COMPENSATION_FAILED,
                "the run ended and a compensation gave up"
                + ("" if error is None else f": {error.message}"),
                details={"last_error": encode_failure(error), **info},
                actions=("repair_by_hand", *replay),
            )
        if run.status is RunStatus.COMPLETED:
            return self.make(Reason.COMPLETED, "the run completed", details=info, actions=replay)
        if run.status is RunStatus.CANCELLED:
            return self.make(
                Reason.CANCELLED, "the run was cancelled", details=info, actions=replay
            )
        failed = sorted(
            (s for s in run.steps if s.status is StepStatus.FAILED), key=lambda s: s.updated_at
        )
        step = failed[-1] if failed else None
        error = run.last_error or (None if step is None else step.error)
        if error is not None and error.kind == DEADLINE_EXCEEDED:
            unfinished = [s.step for s in run.steps if s.status is StepStatus.CANCELLED]
            return self.make(
                Reason.DEADLINE_EXCEEDED,
                "the run did not finish by its deadline"
                + (f" (it was at {', '.join(repr(s) for s in unfinished)})" if unfinished else ""),
                details={
                    "last_error": encode_failure(error),
                    "unfinished": list(unfinished),
                    **info,
                },
                actions=replay,
            )
        spec = None if step is None or self.definition is None else self.definition.step(step.step)
        max_attempts = 1 if spec is None or spec.retry is None else spec.retry.max_attempts
        used = (
            0 if step is None else sum(1 for a in step.attempts if a.status is AttemptStatus.FAILED)
        )
        exhausted = max_attempts > 1 and used >= max_attempts
        message = "unknown error" if error is None else f"{error.kind}: {error.message}"
        name = "?" if step is None else step.step
        return self.make(
            Reason.RETRY_EXHAUSTED if exhausted else Reason.STEP_FAILED,
            f"step {name!r} failed"
            + (f" on all {max_attempts} attempts" if exhausted else "")
            + f" ({message})",
            step=None if step is None else step.step,
            details={
                "last_error": encode_failure(error),
                "max_attempts": max_attempts,
                "attempts": used,
                **info,
            },
            actions=replay,
        )

    def paused(self) -> Explanation:
        step_run = self.run.parked_step
        parked = None if step_run is None else step_run.parked
        if step_run is None or parked is None:
            return self.make(
                Reason.PENDING_DISPATCH, "the run is paused at no step", actions=("cancel_run",)
            )
        name = step_run.step
        if self.definition is None:
            return self.make(
                Reason.PAUSED_WITH_UNAVAILABLE_WORKFLOW,
                f"paused at {name!r}, but workflow {self.run.workflow!r} is not registered here",
                step=name,
                details={"workflow_definition": "unavailable"},
                actions=("cancel_run",),
            )
        targets: dict[str, JsonValue] = {"ok": parked.ok_target, "error": parked.error_target}
        if not self._known(parked.ok_target):
            return self.make(
                Reason.PAUSED_WITH_INVALID_RESUME_TARGET,
                f"paused at {name!r}, whose resume target {parked.ok_target!r} the workflow "
                "no longer declares",
                step=name,
                details={"targets": targets},
                actions=("cancel_run",),
            )
        if not self._known(parked.error_target):
            targets["unknown"] = parked.error_target  # a rejection or timeout fails the run
        since = parked.since.isoformat()
        if parked.kind is ParkKind.APPROVAL:
            return self.make(
                Reason.PAUSED_FOR_APPROVAL,
                f"waiting for a reviewer to approve or reject {name!r}",
                step=name,
                details={"approval_targets": targets, "since": since},
                actions=("approve_run", "reject_run", "cancel_run"),
            )
        if parked.kind is ParkKind.PAUSE:
            return self.make(
                Reason.PAUSED_FOR_MANUAL_ACTION,
                f"paused at {name!r} until someone unblocks it",
                step=name,
                details={"resume_target": parked.ok_target, "since": since},
                actions=("unblock_run", "cancel_run"),
            )
        timeout = (
            ""
            if parked.timeout_at is None
            else f"; it gives up at {_when(parked.timeout_at, self.now)}"
        )
        return self.make(
            Reason.WAITING_FOR_SIGNAL,
            f"waiting at {name!r} for signal {parked.signal!r}{timeout}",
            step=name,
            details={
                "signal": parked.signal,
                "timeout_at": None if parked.timeout_at is None else parked.timeout_at.isoformat(),
                "on_timeout": parked.error_target,
                "since": since,
            },
            actions=("send_signal", "cancel_run"),
            signal=parked.signal,
        )

    def retrying(self) -> Explanation:
        run = self.run
        step = next((s for s in run.steps if s.status is StepStatus.RETRY_SCHEDULED), None)
        job = None if step is None else next((j for j in run.jobs if j.step == step.step), None)
        name = None if step is None else step.step
        error = run.last_error
        due = "" if job is None else f", due {_when(job.due_at, self.now)}"
        return self.make(
            Reason.WAITING_FOR_RETRY,
            f"step {name!r} failed and attempt {None if job is None else job.attempt} is "
            f"scheduled{due}",
            step=name,
            details={
                "next_attempt": None if job is None else job.attempt,
                "due_at": None if job is None else job.due_at.isoformat(),
                "last_error": encode_failure(error),
            },
            actions=("wait_for_retry", "cancel_run"),
        )

    def waiting_join(self) -> Explanation | None:
        definition, run = self.definition, self.run
        if definition is None or definition.mode is not WorkflowMode.DEPENDENCIES:
            return None
        for spec in definition.steps:
            if run.step_run(spec.name) is not None or not spec.after:
                continue
            statuses: dict[str, JsonValue] = {}
            for dep in spec.after:
                dep_run = run.step_run(dep)
                statuses[dep] = "waiting" if dep_run is None else dep_run.status.value
            pending = [d for d, s in statuses.items() if s != StepStatus.COMPLETED.value]
            if pending:
                return self.make(
                    Reason.WAITING_FOR_DEPENDENCIES,
                    f"step {spec.name!r} waits for {', '.join(repr(p) for p in pending)}",
                    step=spec.name,
                    details={"waiting_on": list(pending), "dependency_statuses": statuses},
                    actions=("wait_for_dependencies", "cancel_run"),
                )
        return None

    def active(self) -> Explanation:
        run, now = self.run, self.now
        joined = self.waiting_join()
        if joined is not None:
            return joined
        started = [j for j in run.jobs if j.status is JobStatus.STARTED]
        for job in started:
            lease = self.leases.get(job.id)
            expires = None if lease is None else lease.expires_at
            owner = None if lease is None else lease.owner
            details: dict[str, JsonValue] = {
                "attempt": job.attempt,
                "lease_owner": owner,
                "lease_expires_at": None if expires is None else expires.isoformat(),
            }
            if expires is not None and expires <= now:
                return self.make(
                    Reason.LEASE_EXPIRED,
                    f"the worker running {job.step!r} stopped renewing its lease "
                    f"(expired {_when(expires, now)}); the next claim takes it over",
                    step=job.step,
                    details=details,
                    actions=("wait_for_reclaim", "cancel_run"),
                )
            holder = "a worker" if owner is None else f"worker {owner!r}"
            until = "" if expires is None else f", lease until {_when(expires, now)}"
            return self.make(
                Reason.STEP_RUNNING,
                f"attempt {job.attempt} of {job.step!r} is running on {holder}{until}",
                step=job.step,
                details=details,
                actions=("wait_for_step", "cancel_run"),
            )
        scheduled = sorted(
            (j for j in run.jobs if j.status is JobStatus.SCHEDULED and j.step != DEADLINE),
            key=lambda j: (j.due_at, j.id),
        )
        if scheduled:
            job = scheduled[0]
            details = {"attempt": job.attempt, "due_at": job.due_at.isoformat()}
            lease = self.leases.get(job.id)
            if lease is not None and lease.expires_at is not None and lease.expires_at > now:
                return self.make(
                    Reason.STEP_SCHEDULED,
                    f"{job.step!r} was claimed by worker {lease.owner!r}, which is starting it",
                    step=job.step,
                    details={
                        **details,
                        "lease_owner": lease.owner,
                        "lease_expires_at": lease.expires_at.isoformat(),
                    },
                    actions=("wait_for_step", "cancel_run"),
                )
            step_run = run.step_run(job.step)
            last = step_run.attempts[-1] if step_run is not None and step_run.attempts else None
            if job.due_at > now and last is not None and last.status is AttemptStatus.DEFERRED:
                why = "" if last.error is None else f" ({last.error.message})"
                return self.make(
                    Reason.WAITING_FOR_RECHECK,
                    f"{job.step!r} said not yet{why}; it looks again at {_when(job.due_at, now)}",
                    step=job.step,
                    details={
                        **details,
                        "reason": None if last.error is None else last.error.message,
                    },
                    actions=("wait_for_timer", "cancel_run"),
                )
            if job.due_at > now:
                return self.make(
                    Reason.WAITING_FOR_TIMER,
                    f"{job.step!r} is due at {_when(job.due_at, now)}",
                    step=job.step,
                    details=details,
                    actions=("wait_for_timer", "cancel_run"),
                )
            return self.make(
                Reason.STEP_SCHEDULED,
                f"{job.step!r} has been due since {_when(job.due_at, now)}; waiting for a worker",
                step=job.step,
                details=details,
                actions=("wait_for_worker", "cancel_run"),
            )
        return self.make(
            Reason.PENDING_DISPATCH, "nothing is scheduled for the run", actions=("cancel_run",)
        )


def explain(
    definition: WorkflowDefinition | None,
    run: RunState,
    *,
    now: datetime,
    leases: Mapping[JobId, LeaseInfo] | None = None,
) -> Explanation:
    """Explain ``run`` at ``now`` (see the module's decision table)."""
    builder = _Builder(definition, run, now, leases or {})
    match run.status:
        case (
            RunStatus.COMPLETED
            | RunStatus.CANCELLED
            | RunStatus.FAILED
            | RunStatus.COMPENSATION_FAILED
        ):
            return builder.finished()
        case RunStatus.COMPENSATING:
            return builder.compensating()
        case RunStatus.CANCELLING:
            running = next((j for j in run.jobs if j.status is JobStatus.STARTED), None)
            return builder.make(
                Reason.CANCELLING,
                "the run is being cancelled"
                + ("" if running is None else f" once {running.step!r} ends"),
                step=None if running is None else running.step,
                actions=("wait_for_cancellation",),
            )
        case RunStatus.PAUSED:
            return builder.paused()
        case RunStatus.RETRYING:
            return builder.retrying()
        case RunStatus.PENDING | RunStatus.RUNNING:
            return builder.active()
    raise AssertionError(run.status)  # pragma: no cover - every status is matched
