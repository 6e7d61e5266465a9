"""Saga compensation: a run that failed undoes the steps it completed (rule 12 of ``decide``).

Rules:

1. **Who compensates.** A run about to end ``failed`` (a step gave up without an
   error route, a route to ``FAIL``, a missed deadline, ...), or ``cancelled``
   when its workflow sets ``compensate_on_cancel``, compensates first if a step
   that *completed in this run* declares ``compensate`` (or one that does is
   still running: it may yet complete). Steps a replay reused, and steps that
   did not complete, are not compensated.
2. **Reverse completion order, one at a time.** The plan lists those steps,
   latest completion first, and is written when compensation starts. Each
   compensation is the pseudo-step ``<step>:compensate``: a durable job with the
   step's ``compensate_retry`` (or ``retry``), timeout and lost-attempt bound,
   its own idempotency key, and attempts in the history like any step.
3. **A compensating run runs nothing forward.** Its scheduled jobs were
   cancelled when it started compensating. An attempt still running may report:
   a success of a step with a compensation joins the front of the plan (it
   completed last); any other outcome is history. While an attempt of a step
   with a compensation runs, no compensation starts, so the order stays exact.
4. **Every compensation is tried.** One that gives up is recorded, and the next
   one runs: undoing the other effects still matters.
5. **How it ends.** Once no compensation is left and no forward attempt runs, the
   run ends as it would have (``failed`` or ``cancelled``), or
   ``compensation_failed`` when a compensation gave up; its last error then
   names each one that gave up, and the cause. A compensating run refuses
   cancels and signals; a crash resumes it from the store like any other job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from squidmesh_core._failure import failure_attributes
from squidmesh_core.commands import Topic
from squidmesh_core.definition import DEADLINE, WorkflowDefinition
from squidmesh_core.jsonvalue import JsonObject, JsonValue
from squidmesh_core.state import (
    AttemptStatus,
    Compensation,
    Job,
    RunState,
    RunStatus,
    StepFailure,
    StepRunState,
    StepStatus,
    compensated_step,
    compensation_step,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies

    from squidmesh_core._draft import Draft
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

COMPENSATION_FAILED_KIND = "compensation_failed"


def _completed_here(step_run: StepRunState) -> float | None:
    """When ``step_run`` completed in this run (a sort key), or ``None``."""
    if step_run.status is not StepStatus.COMPLETED:
        return None
    finished = [
        a.finished_at
        for a in step_run.attempts
        if a.status is AttemptStatus.SUCCEEDED and a.finished_at is not None
    ]
    return max(finished).timestamp() if finished else None


def plan(definition: WorkflowDefinition, steps: tuple[StepRunState, ...]) -> tuple[str, ...]:
    """Rules 1 and 2: the steps to compensate, latest completion first."""
    if not definition.compensations:
        return ()
    found: list[tuple[float, int, str]] = []
    for index, step_run in enumerate(steps):
        if step_run.step == DEADLINE or compensated_step(step_run.step) is not None:
            continue
        if compensation_step(step_run.step) not in definition.compensations:
            continue
        completed = _completed_here(step_run)
        if completed is not None:
            found.append((completed, index, step_run.step))
    return tuple(name for _, _, name in sorted(found, reverse=True))


def begin(draft: Draft, ends_as: RunStatus, cause: StepFailure | None) -> bool:
    """Start compensating instead of ending ``ends_as``; ``False`` if nothing to undo."""
    if draft.status is RunStatus.COMPENSATING:
        return True  # already undoing: the run ends when that is done
    steps = plan(draft.definition, draft.steps)
    if not steps and not _undoable_running(draft):
        return False
    draft.set_run_status(RunStatus.COMPENSATING)
    draft.compensation = Compensation(
        ends_as=ends_as, started_at=draft.now, plan=steps, cause=cause
    )
    draft.emit(Topic.COMPENSATION_STARTED, attributes={"plan": list(steps)})
    advance(draft)
    return True


def _undoable_running(draft: Draft) -> bool:
    """Whether an attempt of a step with a compensation is still running (rule 3)."""
    return any(
        s.status is StepStatus.RUNNING
        and compensation_step(s.step) in draft.definition.compensations
        for s in draft.steps
    )


def compensation_input(run: RunState, name: str) -> JsonObject:
    """What a compensation receives: the step, its input and output, and the cause."""
    step = compensated_step(name) or name
    done = run.step_run(step)
    cause = None if run.compensation is None else run.compensation.cause
    return {
        "step": step,
        "input": None if done is None else done.input,
        "output": None if done is None else done.output,
        "error": None if cause is None else failure_attributes(cause),
    }


def late_success(draft: Draft, step: str) -> None:
    """Rule 3: a step that completed while the run compensates is undone first."""
    current = draft.compensation
    if current is None or compensation_step(step) not in draft.definition.compensations:
        return
    if step not in current.plan:
        draft.compensation = replace(current, plan=(step, *current.plan))


def gave_up(draft: Draft, job: Job, failure: StepFailure) -> None:
    """Rule 4: a compensation gave up; it stays failed and the next one runs."""
    draft.emit(
        Topic.COMPENSATION_GAVE_UP,
        step=job.step,
        attempt=job.attempt,
        attributes={"error": failure_attributes(failure)},
    )
    advance(draft)


def removed(draft: Draft, job: Job, failure: StepFailure) -> None:
    """A compensation job whose compensation a redeploy removed: it gives up at once."""
    draft.drop_job(job)
    draft.put_step(replace(draft.step_run(job.step), status=StepStatus.FAILED, error=failure))
    draft.emit(
        Topic.STEP_FAILED,
        step=job.step,
        attempt=job.attempt,
        attributes={"error": failure_attributes(failure), "duration_ms": 0},
    )
    gave_up(draft, job, failure)


def advance(draft: Draft) -> None:
    """Run the next compensation, or end the run once none is left (rules 2 and 5)."""
    current = draft.compensation
    if current is None or current.finished_at is not None:
        return
    if any(compensated_step(j.step) is not None for j in draft.jobs):
        return  # one is running or due
    if _undoable_running(draft):
        return  # it may complete, and then it is the first to undo (rule 3)
    for step in current.plan:
        if draft.find_step(compensation_step(step)) is None:
            draft.schedule(compensation_step(step), 1, draft.now)
            return
    if any(
        s.status is StepStatus.RUNNING and compensated_step(s.step) is None for s in draft.steps
    ):
        return  # a forward attempt may still complete, and need undoing
    failures = [
        s
        for step in current.plan
        if (s := draft.find_step(compensation_step(step))) is not None
        and s.status is StepStatus.FAILED
    ]
    draft.compensation = replace(current, finished_at=draft.now)
    outcome = RunStatus.COMPENSATION_FAILED if failures else current.ends_as
    attributes: dict[str, JsonValue] = {
        "outcome": outcome.value,
        "compensated": [
            s
            for s in current.plan
            if (done := draft.find_step(compensation_step(s))) is not None
            and done.status is StepStatus.COMPLETED
        ],
        "gave_up": [s.step for s in failures],
    }
    draft.emit(Topic.COMPENSATION_FINISHED, attributes=attributes)
    if failures:
        draft.set_last_error(_failed(current, failures))
    draft.set_run_status(outcome)


def _failed(current: Compensation, failures: list[StepRunState]) -> StepFailure:
    names = ", ".join(repr(compensated_step(s.step)) for s in failures)
    details: dict[str, JsonValue] = {
        "gave_up": [
            {
                "step": compensated_step(s.step),
                "error": None if s.error is None else failure_attributes(s.error),
            }
            for s in failures
        ],
        "cause": None if current.cause is None else failure_attributes(current.cause),
    }
    return StepFailure(
        kind=COMPENSATION_FAILED_KIND,
        message=f"the run ended {current.ends_as} and the compensation of {names} gave up",
        retryable=False,
        details=details,
    )
