"""A walk of the example workflow through the pure core, on a simulated clock.

This is the smoke of what exists before the runtime lands: it plays the part of
store, dispatcher and worker in the simplest possible way (one run, jobs taken
in due order, handlers called in-process) and prints the run's timeline.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from returns.result import Failure, Result, Success

from squidmesh_core import (
    AttemptStatus,
    Decision,
    Emit,
    Event,
    JobDelivered,
    LeaseToken,
    RunId,
    RunRequested,
    RunState,
    RunStatus,
    StepFailed,
    StepFailure,
    StepKind,
    StepSucceeded,
    WorkflowDefinition,
    decide,
)

START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
SMOKE_RUN = RunId("00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True, slots=True, kw_only=True)
class SmokeContext:
    run_id: str
    workflow: str
    step: str
    attempt: int


def _outcome(value: object) -> tuple[bool, object]:
    match value:
        case Success(output):
            return True, output
        case Failure(StepFailure() as failure):
            return False, failure
        case Failure(other):
            return False, StepFailure(kind="step_failed", message=str(other))
        case _:
            return True, value


def _call(definition: WorkflowDefinition, run: RunState, step: str, attempt: int) -> Event:
    spec = definition.step(step)
    assert spec is not None
    step_run = run.step_run(step)
    data = dict(step_run.input or {}) if step_run else {}
    job = next(j for j in run.jobs if j.step == step and j.attempt == attempt)
    token = job.lease_token or LeaseToken("smoke")
    if spec.kind is not StepKind.ACTION or spec.handler is None:
        return StepSucceeded(job_id=job.id, lease_token=token, output={})
    ctx = SmokeContext(run_id=run.id, workflow=run.workflow, step=step, attempt=attempt)
    try:
        value = spec.handler(data, ctx)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError("the core smoke only runs plain callables")
    except Exception as exc:  # a raising step is a failed attempt, never a crash
        return StepFailed(job_id=job.id, lease_token=token, failure=StepFailure.from_exception(exc))
    succeeded, payload = _outcome(value)
    if succeeded:
        return StepSucceeded(job_id=job.id, lease_token=token, output=payload)
    assert isinstance(payload, StepFailure)
    return StepFailed(job_id=job.id, lease_token=token, failure=payload)


def run_core_smoke(
    definition: WorkflowDefinition, payload: object, *, emit: bool = False
) -> tuple[RunState, list[str]]:
    """Drive one run to its end and return it with its printed timeline."""
    lines: list[str] = []
    now = START

    def apply(state: RunState | None, event: Event) -> RunState:
        result: Result[Decision, object] = decide(definition, state, event, now=now)
        decision = result.unwrap()
        if emit:
            for command in decision.commands:
                if isinstance(command, Emit):
                    lines.append(f"      event {command.topic} {dict(command.attributes)}")
        return decision.state

    run = apply(None, RunRequested(run_id=SMOKE_RUN, payload=payload))
    lines.append(f"run {run.id} of {run.workflow} started at {now:%H:%M:%S}")
    for token_number in range(1, 1000):
        if run.status.terminal:
            break
        job = min(run.jobs, key=lambda j: (j.due_at, j.id))
        now = max(now, job.due_at)
        run = apply(
            run, JobDelivered(job_id=job.id, lease_token=LeaseToken(f"lease-{token_number}"))
        )
        now += timedelta(milliseconds=10)
        run = apply(run, _call(definition, run, job.step, job.attempt))
        step_run = run.step_run(job.step)
        assert step_run is not None
        attempt = step_run.attempts[-1]
        note = "" if attempt.error is None else f"  ({attempt.error.message})"
        lines.append(
            f"  +{(attempt.started_at - START).total_seconds():7.2f}s  {job.step:<22} "
            f"attempt {attempt.number}  {attempt.status.value}{note}"
        )
    lines.append(
        f"run finished {run.status.value} after {(now - START).total_seconds():.2f}s simulated"
    )
    return run, lines


def check_smoke(run: RunState) -> list[str]:
    """What must be true of the example's run; returns the failed checks."""
    problems: list[str] = []
    if run.status is not RunStatus.COMPLETED:
        problems.append(f"run is {run.status}, expected completed")
    gateway = run.step_run("check_gateway")
    if gateway is None or [a.status for a in gateway.attempts] != [
        AttemptStatus.FAILED,
        AttemptStatus.SUCCEEDED,
    ]:
        problems.append("check_gateway should fail once and then succeed")
    if "notification" not in run.context:
        problems.append("notify_customer output is missing from the context")
    return problems
