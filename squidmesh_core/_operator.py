"""Operator commands: cancel, unblock, approve, reject and signals, audited and idempotent.

Rules:

1. **A key has one effect.** A command whose idempotency key the run's audit
   trail already holds for the same command changes nothing and answers with
   the first receipt (``RepeatedCommand``), even once the run has finished; the
   key used by another command is refused (``IdempotencyKeyReused``). This is
   checked before anything else.
2. **Every accepted command is audited in its own decision**: an
   :class:`~squidmesh_core.state.AuditEntry` with the command, actor, note,
   time, key and outcome (the run's status before and after, the step it
   resumed) is appended in the same commit as the change, and a
   ``command.accepted`` event follows it. Refused commands change nothing.
3. **Who and why.** Unblock, approve and reject need an actor (a missing one is
   ``InvalidReview`` for reviews, ``InvalidOption`` for unblock); actors and
   notes are non-empty text without NUL or lone surrogates, at most
   ``MAX_ACTOR`` / ``MAX_NOTE`` characters.
4. **Resuming needs the right kind of park.** Unblock resumes a ``pause``,
   approve and reject an ``approval``; a run that is not paused is an
   ``InvalidTransition`` (terminal runs absorb every command), a run parked at
   another kind of step an ``InvalidStep``.
5. **Signals.** The name must be awaited by some step of the workflow
   (``UnknownSignal``), the payload must satisfy that step's model and fit
   ``SIGNAL_LIMITS`` (``InvalidSignalPayload``), and a step the run is at or may
   still reach must wait for it, within its timeout (``SignalNotAwaited``); a
   finished or cancelling run refuses signals (``RunNotActive``). A run parked
   at a wait for that name takes it at once; otherwise the signal waits in the
   run's inbox (at most ``MAX_WAITING_SIGNALS``) for the step that will take it.
   A key already used for a signal of another name is ``IdempotencyKeyReused``.
6. **Bounded history.** A run holds at most ``MAX_AUDIT_ENTRIES`` entries;
   further commands are refused with ``CommandLimit``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, assert_never

from returns.result import Failure, Result, Success

from squidmesh_core._draft import Draft
from squidmesh_core._parking import give_up, resume
from squidmesh_core.commands import Decision, RescheduleJob, Topic
from squidmesh_core.definition import DEADLINE, ENDS, StepKind, WorkflowDefinition
from squidmesh_core.errors import (
    CommandLimit,
    IdempotencyKeyReused,
    InvalidOption,
    InvalidResume,
    InvalidReview,
    InvalidSignalPayload,
    InvalidStep,
    InvalidTransition,
    Rejected,
    RepeatedCommand,
    RunNotActive,
    SignalNotAwaited,
    UnknownSignal,
    UnknownStep,
)
from squidmesh_core.events import (
    ApproveRequested,
    CancelRequested,
    Operator,
    OperatorEvent,
    RejectRequested,
    SignalSent,
    UnblockRequested,
)
from squidmesh_core.jsonvalue import JsonLimits, JsonObject, JsonValue, storable_text_problem
from squidmesh_core.payload import validate_payload
from squidmesh_core.state import (
    REJECTED,
    AuditEntry,
    JobStatus,
    OperatorCommand,
    ParkKind,
    RunState,
    RunStatus,
    Signal,
    StepFailure,
    StepRunState,
)

if TYPE_CHECKING:
    from dataclasses import replace  # type-checked copies
else:  # the same copies without re-running __init__ (see _evolve)
    from squidmesh_core._evolve import evolve as replace

MAX_AUDIT_ENTRIES = 1000
MAX_WAITING_SIGNALS = 100
MAX_ACTOR = 200
MAX_NOTE = 2000
SIGNAL_LIMITS = JsonLimits(max_bytes=16 * 1024, max_depth=16)
"""A signal's payload is small: the run keeps every signal it received."""


def text_problem(value: object, *, limit: int, lines: bool = False) -> str | None:
    """Why ``value`` is not a usable actor, key or note (``None`` when it is).

    Control characters are refused (a note may hold newlines and tabs), so an
    audit trail printed in a terminal cannot be forged or recoloured.
    """
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    allowed = "\n\t" if lines else ""
    if any((ord(c) < 32 or 127 <= ord(c) < 160) and c not in allowed for c in value):
        return "must not contain control characters"
    return storable_text_problem(value)


def check_operator(
    by: Operator, *, actor_required: bool, review: bool = False, resume: bool = False
) -> Rejected | None:
    """Rule 3: the actor, note and key of a command (``InvalidReview``/``InvalidResume``)."""

    def refuse(field: str, reason: str) -> Rejected:
        if review:
            return InvalidReview(field=field, reason=reason)
        if resume:
            return InvalidResume(field=field, reason=reason)
        return InvalidOption(option=field, reason=reason)

    if by.actor is None:
        if actor_required:
            return refuse("actor", "is required")
    else:
        why = text_problem(by.actor, limit=MAX_ACTOR)
        if why:
            return refuse("actor", why)
    if by.note is not None:
        why = text_problem(by.note, limit=MAX_NOTE, lines=True)
        if why:
            return refuse("note", why)
    if by.idempotency_key is not None:
        why = text_problem(by.idempotency_key, limit=MAX_ACTOR)
        if why:
            return refuse("idempotency_key", why)
    return None


def _repeated(
    run: RunState, command: OperatorCommand, by: Operator, signal: object = None
) -> Rejected | None:
    """Rule 1: the first receipt of this key, or the refusal of a reused one."""
    key = by.idempotency_key
    if key is None:
        return None
    first = next((e for e in run.audit if e.idempotency_key == key), None)
    if first is None:
        return None
    same_signal = command is not OperatorCommand.SIGNAL or first.outcome.get("signal") == signal
    if first.command is command and same_signal:
        return RepeatedCommand(run_id=run.id, entry=first)
    return IdempotencyKeyReused(run_id=run.id, idempotency_key=key, command=first.command.value)


def audit(
    draft: Draft, command: OperatorCommand, by: Operator, outcome: dict[str, JsonValue]
) -> None:
    """Rule 2: append the entry and announce it (``outcome`` gains the run's statuses)."""
    outcome = {"from": draft.initial_status.value, "to": draft.status.value, **outcome}
    entry = AuditEntry(
        command=command,
        at=draft.now,
        actor=by.actor,
        note=by.note,
        idempotency_key=by.idempotency_key,
        outcome=outcome,
    )
    draft.audit = (*draft.audit, entry)
    draft.emit(
        Topic.COMMAND_ACCEPTED,
        attributes={
            "command": command.value,
            "actor": by.actor,
            "idempotency_key": by.idempotency_key,
            "outcome": outcome,
        },
    )


def _record(by: Operator, now: datetime, **extra: JsonValue) -> JsonObject:
    """What a resumed step outputs: who resumed it, when, and why."""
    return {**extra, "actor": by.actor, "at": now.isoformat(), "note": by.note}


def _parked_at(
    run: RunState, kind: ParkKind, command: OperatorCommand
) -> Result[StepRunState, Rejected]:
    """Rule 4: the step a resume command acts on."""
    parked = run.parked_step
    if run.status is not RunStatus.PAUSED or parked is None or parked.parked is None:
        return Failure(
            InvalidTransition(
                run_id=run.id, from_status=run.status.value, to_status=RunStatus.RUNNING.value
            )
        )
    if parked.parked.kind is not kind:
        return Failure(
            InvalidStep(
                run_id=run.id,
                step=parked.step,
                waiting_for=parked.parked.kind.value,
                expected=f"{kind.value} (for {command.value})",
            )
        )
    return Success(parked)


def _target_known(
    definition: WorkflowDefinition, run: RunState, target: str | None
) -> Rejected | None:
    """Rule 2 of parking: a persisted target the definition no longer declares is refused."""
    if target is None or target in ENDS or definition.step(target) is not None:
        return None
    return UnknownStep(workflow=definition.name, step=target)


def _resume(
    definition: WorkflowDefinition,
    run: RunState,
    event: UnblockRequested | ApproveRequested | RejectRequested,
    now: datetime,
) -> Result[Decision, Rejected]:
    match event:
        case UnblockRequested():
            command, kind, review = OperatorCommand.UNBLOCK, ParkKind.PAUSE, False
        case ApproveRequested():
            command, kind, review = OperatorCommand.APPROVE, ParkKind.APPROVAL, True
        case RejectRequested():
            command, kind, review = OperatorCommand.REJECT, ParkKind.APPROVAL, True
        case _:
            assert_never(event)
    problem = check_operator(event.by, actor_required=True, review=review, resume=not review)
    if problem is not None:
        return Failure(problem)
    found = _parked_at(run, kind, command)
    if isinstance(found, Failure):
        return found
    step_run = found.unwrap()
    assert step_run.parked is not None
    rejecting = command is OperatorCommand.REJECT
    target = step_run.parked.error_target if rejecting else step_run.parked.ok_target
    unknown = _target_known(definition, run, target)
    if unknown is not None:
        return Failure(unknown)
    draft = Draft(definition, run, now)
    if command is OperatorCommand.UNBLOCK:
        resume(draft, step_run, output=_record(event.by, now))
    elif command is OperatorCommand.APPROVE:
        resume(draft, step_run, output=_record(event.by, now, decision="approved"))
    else:
        who = event.by.actor or "a reviewer"
        failure = StepFailure(
            kind=REJECTED,
            message=f"rejected by {who}" + (f": {event.by.note}" if event.by.note else ""),
            retryable=False,
            details={"actor": event.by.actor, "note": event.by.note},
        )
        give_up(
            draft, step_run, failure=failure, output=_record(event.by, now, decision="rejected")
        )
    audit(draft, command, event.by, {"step": step_run.step})
    return Success(draft.finish())


def _ahead(definition: WorkflowDefinition, run: RunState) -> set[str]:
    """Steps the run is at or may still reach (transition workflows have no cycles)."""
    found = {s.step for s in run.steps if not s.status.terminal}
    frontier = list(found)
    while frontier:
        step = frontier.pop()
        spec = definition.step(step)
        targets = [t.to for t in definition.transitions if t.from_step == step]
        if spec is not None and spec.on_timeout is not None:
            targets.append(spec.on_timeout)
        for target in targets:
            if target not in found and definition.step(target) is not None:
                found.add(target)
                frontier.append(target)
    return found


def _awaited(definition: WorkflowDefinition, run: RunState, name: str, now: datetime) -> str | None:
    """Why the run can take no signal ``name`` now (rule 5), or ``None`` when it can."""
    parked = run.parked_step
    info = None if parked is None else parked.parked
    if (
        parked is not None
        and info is not None
        and info.kind is ParkKind.SIGNAL
        and info.signal == name
        and info.timeout_at is not None
        and info.timeout_at <= now
    ):
        return f"the wait at {parked.step!r} timed out at {info.timeout_at.isoformat()}"
    waiting = [
        n
        for n in _ahead(definition, run)
        if (spec := definition.step(n)) is not None
        and spec.kind is StepKind.SIGNAL
        and spec.signal == name
    ]
    return None if waiting else "no step the run may still reach waits for it"


def _signal(
    definition: WorkflowDefinition, run: RunState, event: SignalSent, now: datetime
) -> Result[Decision, Rejected]:
    problem = check_operator(event.by, actor_required=False)
    if problem is not None:
        return Failure(problem)
    if run.status.terminal or run.status in (RunStatus.CANCELLING, RunStatus.COMPENSATING):
        return Failure(RunNotActive(run_id=run.id, status=run.status.value))
    contract = definition.signal_contract(event.name) if isinstance(event.name, str) else None
    if contract is None:
        return Failure(UnknownSignal(workflow=definition.name, signal=str(event.name)))
    validated = validate_payload(
        contract,
        event.payload,
        workflow=definition.name,
        trigger=f"signal {event.name}",
        now=now,
        limits=SIGNAL_LIMITS,
    )
    if isinstance(validated, Failure):
        return Failure(
            InvalidSignalPayload(
                workflow=definition.name,
                signal=event.name,
                reason=validated.failure().describe(),
            )
        )
    why = _awaited(definition, run, event.name, now)
    if why is not None:
        return Failure(SignalNotAwaited(run_id=run.id, signal=event.name, reason=why))
    payload = validated.unwrap()
    parked = run.parked_step
    info = None if parked is None else parked.parked
    taker = (
        parked
        if info is not None and info.kind is ParkKind.SIGNAL and info.signal == event.name
        else None
    )
    if (
        taker is None
        and sum(1 for s in run.signals if s.consumed_by is None) >= MAX_WAITING_SIGNALS
    ):
        return Failure(
            CommandLimit(run_id=run.id, what="waiting signals", limit=MAX_WAITING_SIGNALS)
        )
    if taker is not None:
        assert info is not None
        unknown = _target_known(definition, run, info.ok_target)
        if unknown is not None:
            return Failure(unknown)
    draft = Draft(definition, run, now)
    consumer = None if taker is None else taker.step
    draft.signals = (
        *draft.signals,
        Signal(name=event.name, payload=payload, received_at=now, consumed_by=consumer),
    )
    draft.emit(
        Topic.SIGNAL_RECEIVED,
        step=consumer,
        attributes={"signal": event.name, "taken": consumer is not None},
    )
    if taker is not None:
        resume(draft, taker, output=payload)
    audit(draft, OperatorCommand.SIGNAL, event.by, {"signal": event.name, "taken_by": consumer})
    return Success(draft.finish())


def _cancel(
    definition: WorkflowDefinition, run: RunState, event: CancelRequested, now: datetime
) -> Result[Decision, Rejected]:
    """Pending and paused runs cancel at once; active ones become ``cancelling``."""
    problem = check_operator(event.by, actor_required=False)
    if problem is not None:
        return Failure(problem)
    draft = Draft(definition, run, now)
    match run.status:
        case RunStatus.PENDING | RunStatus.PAUSED:
            draft.converge_cancel()
        case RunStatus.RUNNING | RunStatus.RETRYING:
            draft.set_run_status(RunStatus.CANCELLING)
            for job in run.jobs:
                if job.status is JobStatus.SCHEDULED and job.due_at > now and job.step != DEADLINE:
                    draft.set_jobs(
                        tuple(replace(j, due_at=now) if j.id == job.id else j for j in draft.jobs)
                    )
                    draft.commands.append(RescheduleJob(job_id=job.id, due_at=now))
        case (
            RunStatus.CANCELLING
            | RunStatus.COMPENSATING
            | RunStatus.FAILED
            | RunStatus.COMPLETED
            | RunStatus.CANCELLED
            | RunStatus.COMPENSATION_FAILED
        ):
            return Failure(
                InvalidTransition(
                    run_id=run.id,
                    from_status=run.status.value,
                    to_status=RunStatus.CANCELLING.value,
                )
            )
        case _:
            assert_never(run.status)
    audit(draft, OperatorCommand.CANCEL, event.by, {})
    return Success(draft.finish())


_COMMANDS = {
    CancelRequested: OperatorCommand.CANCEL,
    UnblockRequested: OperatorCommand.UNBLOCK,
    ApproveRequested: OperatorCommand.APPROVE,
    RejectRequested: OperatorCommand.REJECT,
    SignalSent: OperatorCommand.SIGNAL,
}


def decide_command(
    definition: WorkflowDefinition, run: RunState, event: OperatorEvent, now: datetime
) -> Result[Decision, Rejected]:
    """Decide an operator command on ``run`` (rules 1-6)."""
    command = _COMMANDS[type(event)]
    repeated = _repeated(
        run, command, event.by, event.name if isinstance(event, SignalSent) else None
    )
    if repeated is not None:
        return Failure(repeated)
    if len(run.audit) >= MAX_AUDIT_ENTRIES:
        return Failure(CommandLimit(run_id=run.id, what="audit entries", limit=MAX_AUDIT_ENTRIES))
    match event:
        case CancelRequested():
            return _cancel(definition, run, event, now)
        case UnblockRequested() | ApproveRequested() | RejectRequested():
            return _resume(definition, run, event, now)
        case SignalSent():
            return _signal(definition, run, event, now)
        case _:
            assert_never(event)
