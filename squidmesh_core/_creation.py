"""Run creation: a new run from a request, or a replay of an earlier run.

Rules:

1. **A new run** validates its trigger, its initial context and its payload; the
   first step of a transitions workflow starts at once (a parking step parks the
   run), the roots of a dependency workflow are scheduled together.
2. **A replay** is a new run from the source's stored payload (validated again
   against today's contract), keeping only the reserved context (``schedule``);
   the source is untouched. The replay is audited on the run it creates, and
   its idempotency key becomes that run's (``replay:<source>:<key>``); a key the
   source's audit trail already holds is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from returns.result import Failure, Result, Success

from squidmesh_core._draft import Draft
from squidmesh_core._operator import audit, check_operator
from squidmesh_core._parking import go_to
from squidmesh_core._routing import RESERVED_CONTEXT_KEYS
from squidmesh_core.commands import Decision, Topic
from squidmesh_core.definition import DEADLINE, WorkflowDefinition, WorkflowMode
from squidmesh_core.errors import (
    IdempotencyKeyReused,
    InvalidOption,
    InvalidPayload,
    Rejected,
    UnknownStep,
    UnknownTrigger,
    UnsafeReplay,
)
from squidmesh_core.events import ReplayRequested, RunRequested
from squidmesh_core.ids import IdempotencyKey, RunId, parse_run_id
from squidmesh_core.jsonvalue import JsonObject, JsonValue, check_json_object
from squidmesh_core.payload import validate_payload
from squidmesh_core.retry import clamp_delay
from squidmesh_core.state import (
    OperatorCommand,
    RunState,
    RunStatus,
    StepStatus,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

REPLAY_KEY_PREFIX = "replay:"
"""Idempotency keys of replayed runs begin with this (``start_run`` refuses them)."""


def replay_key(source: str, key: str) -> IdempotencyKey:
    """The idempotency key of the run a replay of ``source`` with ``key`` creates.

    >>> replay_key("r1", "fix-42")
    'replay:r1:fix-42'
    """
    return IdempotencyKey(f"{REPLAY_KEY_PREFIX}{source}:{key}")


def start_run(
    definition: WorkflowDefinition, event: RunRequested, now: datetime
) -> Result[Decision, Rejected]:
    parsed = parse_run_id(event.run_id)
    if isinstance(parsed, Failure):
        return parsed
    trigger = (
        definition.default_trigger if event.trigger is None else definition.trigger(event.trigger)
    )
    if trigger is None:
        return Failure(UnknownTrigger(workflow=definition.name, trigger=str(event.trigger)))
    context = check_json_object(event.context, limits=definition.limits)
    if isinstance(context, Failure):
        problem = context.failure()
        return Failure(
            InvalidPayload(
                workflow=definition.name,
                trigger=trigger.name,
                reason=f"initial context{problem.path[1:]} {problem.reason}",
            )
        )
    return validate_payload(
        definition.contract(trigger.name),
        event.payload,
        workflow=definition.name,
        trigger=trigger.name,
        now=now,
        limits=definition.limits,
    ).map(
        lambda payload: _new_run(
            definition,
            _pending(
                definition,
                run_id=event.run_id,
                trigger=trigger.name,
                payload=payload,
                context=context.unwrap(),
                now=now,
                idempotency_key=event.idempotency_key,
            ),
            now,
            Topic.RUN_CREATED,
            deadline=event.deadline,
        )
    )


def _pending(
    definition: WorkflowDefinition,
    *,
    run_id: RunId,
    trigger: str,
    payload: JsonObject,
    context: JsonObject,
    now: datetime,
    replayed_from: RunId | None = None,
    idempotency_key: IdempotencyKey | None = None,
) -> RunState:
    """A new run, before its first decision (version 0)."""
    return RunState(
        id=run_id,
        workflow=definition.name,
        trigger=trigger,
        status=RunStatus.PENDING,
        payload=payload,
        context=context,
        created_at=now,
        updated_at=now,
        version=0,
        replayed_from=replayed_from,
        idempotency_key=idempotency_key,
    )


def _new_run(
    definition: WorkflowDefinition,
    run: RunState,
    now: datetime,
    topic: Topic,
    *,
    replay: ReplayRequested | None = None,
    deadline: timedelta | None = None,
) -> Decision:
    draft = Draft(definition, run, now)
    attributes: dict[str, JsonValue] = {"trigger": run.trigger}
    if run.replayed_from is not None:
        attributes["replayed_from"] = run.replayed_from
    draft.emit(topic, attributes=attributes)
    if definition.mode is WorkflowMode.TRANSITIONS:
        first = definition.entry_steps[0]
        if replay is not None and replay.from_step is not None:
            first = replay.from_step
        go_to(draft, first, now)
    else:
        for entry in definition.entry_steps:
            draft.schedule(entry, 1, now)
    limit = definition.deadline if deadline is None else deadline
    if limit is not None:  # a durable timer: its delivery fails the run if it is not done
        draft.schedule(DEADLINE, 1, now + clamp_delay(limit))
    if replay is not None:
        outcome: dict[str, JsonValue] = {"replayed_from": run.replayed_from}
        if replay.from_step is not None:
            outcome["from_step"] = replay.from_step
            outcome["reused"] = [s.step for s in run.steps]
        if replay.allow_irreversible is True:
            outcome["allow_irreversible"] = True
        audit(draft, OperatorCommand.REPLAY, replay.by, outcome)
    return draft.finish()


def _reused(
    definition: WorkflowDefinition, source: RunState, from_step: str | None
) -> Result[frozenset[str], Rejected]:
    """The steps a replay from ``from_step`` keeps: those completed before it."""
    if from_step is None:
        return Success(frozenset())
    if definition.mode is not WorkflowMode.TRANSITIONS:
        return Failure(InvalidOption(option="from_step", reason="is for transition workflows only"))
    if from_step not in definition.step_names():  # a declared step (not a compensation)
        return Failure(UnknownStep(workflow=definition.name, step=from_step))
    order = [s.step for s in source.steps]
    if from_step not in order:
        return Failure(
            InvalidOption(option="from_step", reason=f"{from_step!r} never ran in the source run")
        )
    before = order[: order.index(from_step)]
    planned = () if source.compensation is None else source.compensation.plan
    undone = [name for name in before if name in planned]
    if undone:  # undone, being undone, or partly undone: nothing a replay can build on
        return Failure(
            InvalidOption(
                option="from_step",
                reason=f"the source run compensates {', '.join(repr(n) for n in undone)} (its "
                "effect is undone), so a replay cannot reuse it; replay from the start",
            )
        )
    return Success(
        frozenset(
            s.step
            for s in source.steps
            if s.step in before and s.status is StepStatus.COMPLETED and s.step != DEADLINE
        )
    )


def replay(
    definition: WorkflowDefinition, source: RunState, event: ReplayRequested, now: datetime
) -> Result[Decision, Rejected]:
    parsed = parse_run_id(event.new_run_id)
    if isinstance(parsed, Failure):
        return parsed
    problem = check_operator(event.by, actor_required=False, review=False)
    if problem is not None:
        return Failure(problem)
    key = event.by.idempotency_key
    used = next((e for e in source.audit if key is not None and e.idempotency_key == key), None)
    if key is not None and used is not None:
        return Failure(
            IdempotencyKeyReused(run_id=source.id, idempotency_key=key, command=used.command.value)
        )
    if definition.trigger(source.trigger) is None:
        return Failure(UnknownTrigger(workflow=definition.name, trigger=source.trigger))
    reused = _reused(definition, source, event.from_step)
    if isinstance(reused, Failure):
        return reused
    kept = reused.unwrap()
    guarded = tuple(
        s.step
        for s in source.steps
        if s.status is StepStatus.COMPLETED and s.replay_guard and s.step not in kept
    )
    if guarded and event.allow_irreversible is not True:
        return Failure(UnsafeReplay(run_id=source.id, steps=guarded))
    context = {k: v for k, v in source.context.items() if k in RESERVED_CONTEXT_KEYS}
    steps = tuple(replace(s, attempts=(), updated_at=now) for s in source.steps if s.step in kept)
    for s in steps:
        context.update(s.output or {})
    return validate_payload(
        definition.contract(source.trigger),
        source.payload,
        workflow=definition.name,
        trigger=source.trigger,
        now=source.created_at,
        limits=definition.limits,
    ).map(
        lambda payload: _new_run(
            definition,
            replace(
                _pending(
                    definition,
                    run_id=event.new_run_id,
                    trigger=source.trigger,
                    payload=payload,
                    context=context,
                    now=now,
                    replayed_from=source.id,
                    idempotency_key=(
                        None
                        if event.by.idempotency_key is None
                        else replay_key(source.id, event.by.idempotency_key)
                    ),
                ),
                steps=steps,  # the steps a replay from a step reuses
            ),
            now,
            Topic.RUN_REPLAYED,
            replay=event,
        )
    )
