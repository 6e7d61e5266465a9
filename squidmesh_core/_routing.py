"""Routing per workflow mode: where a run goes after a step ends, and what a step reads.

Rules:

1. **Transitions workflows** run one step at a time. After a success the step's
   ``ok`` route names the next step (due after the step's duration when it is a
   ``wait``; a pause, approval or signal step due at once parks instead, see
   ``_parking``), ``COMPLETE`` or ``FAIL``; after a failure that gives up, its
   ``error`` route names a recovery step, ``COMPLETE`` or ``FAIL`` (the run ends
   failed with the step's error), and without one the run fails.
2. **Dependency workflows** start every step whose dependencies have all
   completed, held until ``wait`` dependencies' durations have passed; the run
   completes when every step has, and fails when a step gives up.
3. **Input.** A step reads payload + context (transitions) or payload + the
   outputs of its ancestors (dependencies), narrowed by its ``input`` keys; the
   reserved context keys (set by the shell, e.g. cron ``schedule``) reach both.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from squidmesh_core._draft import Draft
from squidmesh_core._failure import routed_to_fail
from squidmesh_core._parking import go_to, mark_recovery
from squidmesh_core.definition import (
    COMPLETE,
    FAIL,
    Outcome,
    StepKind,
    StepSpec,
    WorkflowDefinition,
    WorkflowMode,
)
from squidmesh_core.errors import InvariantViolatedError
from squidmesh_core.jsonvalue import JsonObject, JsonValue
from squidmesh_core.state import Job, RunState, StepFailure, StepRunState, StepStatus

RESERVED_CONTEXT_KEYS = frozenset({"schedule"})
"""Context keys set by the shell at run creation and kept by replay."""

_ZERO = timedelta(0)


def spec_of(definition: WorkflowDefinition, step: str) -> StepSpec:
    """The declared step (a missing one is a bug: callers check first)."""
    spec = definition.step(step)
    if spec is None:
        raise InvariantViolatedError(f"workflow {definition.name} has no step {step}")
    return spec


def step_input(definition: WorkflowDefinition, run: RunState, step: str) -> JsonObject:
    """The input an attempt of ``step`` receives, given the run as it is now."""
    spec = spec_of(definition, step)
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


def _due_after_waits(
    definition: WorkflowDefinition, steps: tuple[StepRunState, ...], step: str, now: datetime
) -> datetime:
    """When a dependency step may start: now, or later if it depends on ``wait`` steps.

    A ``wait`` dependency holds its dependents until its own completion plus its duration.
    """
    due = now
    for dep in spec_of(definition, step).after:
        spec = spec_of(definition, dep)
        done = next((s for s in steps if s.step == dep), None)
        if spec.kind is StepKind.WAIT and spec.duration and done is not None:
            finished = max((a.finished_at for a in done.attempts if a.finished_at), default=now)
            due = max(due, finished + spec.duration)
    return due


def route_success(draft: Draft, spec: StepSpec, job: Job) -> None:
    """Schedule what follows a completed step, or complete the run (rules 1 and 2)."""
    definition, now = draft.definition, draft.now
    if definition.mode is WorkflowMode.TRANSITIONS:
        delay = spec.duration if spec.kind is StepKind.WAIT and spec.duration else _ZERO
        target = definition.target(job.step, Outcome.OK)
        if target is None:
            raise InvariantViolatedError(f"step {job.step} has no ok route")
        if target == COMPLETE:
            draft.complete()
        elif target == FAIL:
            draft.fail_run(routed_to_fail(job.step))
        else:
            go_to(draft, target, now + delay)
        return
    completed = frozenset(s.step for s in draft.steps if s.status is StepStatus.COMPLETED)
    if completed == frozenset(definition.step_names()):
        draft.complete()
        return
    started = frozenset(s.step for s in draft.steps)
    for ready in definition.dependents_ready(completed, started):
        draft.schedule(ready, 1, _due_after_waits(definition, draft.steps, ready, now))
    draft.settle_active()


def route_give_up(draft: Draft, job: Job, failure: StepFailure) -> None:
    """Follow the ``error`` route of a step that gave up, or fail the run (rules 1 and 2)."""
    definition = draft.definition
    target = (
        definition.target(job.step, Outcome.ERROR)
        if definition.mode is WorkflowMode.TRANSITIONS
        else None
    )
    if target is not None:
        mark_recovery(draft, job.step, target)
    if target == COMPLETE:
        draft.complete()
    elif target == FAIL:
        draft.fail_run(failure)
    elif target is not None:
        draft.set_last_error(None)
        go_to(draft, target, draft.now)
    else:
        draft.fail_run(failure)
