"""Parked steps: pause, approval and signal waits, from parking to resuming.

Rules:

1. **A parking step never runs on a worker.** When a transition leads to it and
   it is due at once, the run parks in the same decision; when it is due later
   (after a ``wait``), its job's delivery parks it. Either way the step is
   ``parked``, the run ``paused``, and no job is left but a signal wait's
   timeout timer.
2. **How it resumes is written when it parks** (:class:`~squidmesh_core.state.Parked`):
   the ``ok`` target, the target of a rejection or timeout, the output key and
   the signal's name. A redeploy that changes the routes does not change where
   a parked run goes; a target the new definition no longer declares is
   refused when someone tries to resume (``UnknownStep``).
3. **A signal that came first is taken on arrival.** A signal step that finds
   an unconsumed signal of its name in the run's inbox completes at once with
   the oldest one.
4. **Resuming completes or fails the step.** Unblock, approve and a signal
   complete it and follow the ``ok`` target; a rejection and a timeout fail it
   (not retried) and follow the error target, or fail the run without one. The
   resolution (who, when, note, or the signal's payload) is the step's output,
   merged into the context under its output key.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from squidmesh_core._draft import Draft, ms
from squidmesh_core._failure import routed_to_fail, unknown_step
from squidmesh_core.commands import Topic
from squidmesh_core.definition import COMPLETE, FAIL, Outcome, StepKind, StepSpec
from squidmesh_core.errors import InvariantViolatedError
from squidmesh_core.ids import job_id_for
from squidmesh_core.jsonvalue import JsonObject, JsonValue
from squidmesh_core.state import (
    SIGNAL_TIMEOUT,
    Job,
    Parked,
    ParkKind,
    RecoveryRoute,
    RecoveryStrategy,
    RunStatus,
    StepFailure,
    StepRunState,
    StepStatus,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

_KINDS = {
    StepKind.PAUSE: ParkKind.PAUSE,
    StepKind.APPROVAL: ParkKind.APPROVAL,
    StepKind.SIGNAL: ParkKind.SIGNAL,
}


def go_to(draft: Draft, step: str, due: datetime) -> None:
    """Start ``step`` of a transition workflow: park it now, or schedule its job (rule 1)."""
    spec = draft.definition.step(step)
    if spec is None:
        raise InvariantViolatedError(f"workflow {draft.definition.name} has no step {step}")
    if spec.kind.parks and due <= draft.now:
        park(draft, spec, delivered=None)
        return
    draft.schedule(step, 1, due)
    draft.settle_active()


def park(draft: Draft, spec: StepSpec, *, delivered: Job | None) -> None:
    """Park ``spec`` (rules 1-3); ``delivered`` is the job whose delivery parks it."""
    definition, now = draft.definition, draft.now
    if delivered is not None:
        draft.drop_job(delivered)
    current = draft.find_step(spec.name) or StepRunState(
        step=spec.name, status=StepStatus.SCHEDULED, scheduled_at=now, updated_at=now
    )
    ok_target = definition.target(spec.name, Outcome.OK)
    if ok_target is None:
        raise InvariantViolatedError(f"parking step {spec.name} has no ok route")
    error_target = definition.target(spec.name, Outcome.ERROR)
    if spec.kind is StepKind.SIGNAL and spec.on_timeout is not None:
        error_target = spec.on_timeout
    timeout_at = now + spec.timeout if spec.timeout is not None else None
    parked = Parked(
        kind=_KINDS[spec.kind],
        since=now,
        ok_target=ok_target,
        error_target=error_target,
        output_key=spec.output_key,
        signal=spec.signal,
        timeout_at=timeout_at,
    )
    draft.put_step(replace(current, status=StepStatus.PARKED, parked=parked, updated_at=now))
    attributes: dict[str, JsonValue] = {"waiting_for": parked.kind.value}
    if parked.signal is not None:
        attributes["signal"] = parked.signal
    if timeout_at is not None:
        attributes["timeout_at"] = timeout_at.isoformat()
    draft.emit(Topic.STEP_PARKED, step=spec.name, attributes=attributes)
    if draft.status is not RunStatus.PAUSED:
        draft.set_run_status(RunStatus.PAUSED)
    if parked.kind is ParkKind.SIGNAL:
        waiting = next(
            (
                i
                for i, s in enumerate(draft.signals)
                if s.name == parked.signal and not s.consumed_by
            ),
            None,
        )
        if waiting is not None:
            signal = draft.signals[waiting]
            draft.signals = tuple(
                replace(s, consumed_by=spec.name) if i == waiting else s
                for i, s in enumerate(draft.signals)
            )
            resume(draft, draft.step_run(spec.name), output=signal.payload)
            return
    if timeout_at is not None:
        attempt = 1 if delivered is None else delivered.attempt + 1
        draft.schedule(spec.name, attempt, timeout_at)
        stepped = draft.step_run(spec.name)
        draft.put_step(
            replace(
                stepped,
                parked=replace(parked, timeout_job=job_id_for(draft.origin.id, spec.name, attempt)),
            )
        )


def _end_timer(draft: Draft, step_run: StepRunState) -> None:
    parked = step_run.parked
    if parked is not None and parked.timeout_job is not None:
        timer = draft.job(parked.timeout_job)
        if timer is not None:
            draft.drop_job(timer)


def _merged(parked: Parked, output: JsonObject) -> JsonObject:
    return {parked.output_key: dict(output)} if parked.output_key else {}


def _route(draft: Draft, target: str, step: str, failure: StepFailure | None = None) -> None:
    if target == COMPLETE:
        draft.complete()
    elif target == FAIL:
        draft.fail_run(failure or routed_to_fail(step))
    elif draft.definition.step(target) is None:  # a redeploy removed the recorded target
        draft.fail_run(unknown_step(draft.definition, target))
    else:
        go_to(draft, target, draft.now)


def _close(
    draft: Draft,
    step_run: StepRunState,
    output: JsonObject,
    *,
    failure: StepFailure | None = None,
) -> Parked:
    """End a parked step: drop its timer, record the output, merge it into the context."""
    parked = _parked(step_run)
    _end_timer(draft, step_run)
    mapped = _merged(parked, output)
    draft.put_step(
        replace(
            draft.step_run(step_run.step),
            status=StepStatus.COMPLETED if failure is None else StepStatus.FAILED,
            output=mapped,
            error=step_run.error if failure is None else failure,
            updated_at=draft.now,
        )
    )
    waited = {"duration_ms": ms(draft.now - parked.since)}
    if failure is None:
        draft.emit(
            Topic.STEP_COMPLETED,
            step=step_run.step,
            attributes={**waited, "resumed": parked.kind.value},
        )
    else:
        error: JsonObject = {
            "kind": failure.kind,
            "message": failure.message,
            "retryable": failure.retryable,
        }
        draft.emit(Topic.STEP_FAILED, step=step_run.step, attributes={**waited, "error": error})
    draft.set_context({**draft.context, **mapped})
    return parked


def resume(draft: Draft, step_run: StepRunState, *, output: JsonObject) -> None:
    """Complete a parked step with ``output`` and follow its ``ok`` target (rule 4)."""
    parked = _close(draft, step_run, output)
    _route(draft, parked.ok_target, step_run.step)


def give_up(
    draft: Draft, step_run: StepRunState, *, failure: StepFailure, output: JsonObject
) -> None:
    """Fail a parked step (a rejection or a timeout) and follow its error target (rule 4)."""
    parked = _close(draft, step_run, output, failure=failure)
    if parked.error_target is None:
        draft.fail_run(failure)
        return
    draft.set_last_error(None)
    mark_recovery(draft, step_run.step, parked.error_target)
    _route(draft, parked.error_target, step_run.step, failure)


def timed_out(draft: Draft, step_run: StepRunState) -> None:
    """The timeout timer of a signal wait fired: give up (rule 4)."""
    parked = _parked(step_run)
    waited = None if parked.timeout_at is None else parked.timeout_at - parked.since
    failure = StepFailure(
        kind=SIGNAL_TIMEOUT,
        message=f"no signal {parked.signal!r} arrived"
        + (f" within {waited}" if waited is not None else " in time"),
        retryable=False,
        details={"signal": parked.signal, "since": parked.since.isoformat()},
    )
    give_up(draft, step_run, failure=failure, output={})


def _parked(step_run: StepRunState) -> Parked:
    if step_run.parked is None or step_run.status is not StepStatus.PARKED:
        raise InvariantViolatedError(f"step {step_run.step} is not parked")
    return step_run.parked


def mark_recovery(draft: Draft, step: str, target: str) -> None:
    """An error route marked ``recovery=`` is recorded on the failed step and reported."""
    marker = draft.definition.recovery(step)
    if marker is None or draft.definition.target(step, Outcome.ERROR) != target:
        return  # no label, or not its error route (a signal's on_timeout route)
    strategy = RecoveryStrategy(marker)
    route = RecoveryRoute(strategy=strategy, target=target, at=draft.now)
    draft.put_step(replace(draft.step_run(step), recovery=route))
    topic = (
        Topic.STEP_COMPENSATION_ROUTED
        if strategy is RecoveryStrategy.COMPENSATION
        else Topic.STEP_UNDO_ROUTED
    )
    draft.emit(topic, step=step, attributes={"target": target})
