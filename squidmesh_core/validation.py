"""Workflow validation: every rule checked at once, every problem reported.

``build_workflow`` turns declared triggers, steps and transitions into a
:class:`WorkflowDefinition` or a :class:`DefinitionErrors` listing each broken
rule with a message naming the trigger, step or transition concerned.

Beyond the rules of the original library it also rejects what that library let
through: transition cycles (a step reachable from itself), unsupported payload
field types, and steps without an ``ok`` route (whose success could never
complete the run). Backoff options are keyword values, so their order never
matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta

from returns.result import Failure, Result, Success

from squidmesh_core.cron import parse_cron
from squidmesh_core.definition import (
    COMPLETE,
    DEADLINE,
    ENDS,
    LogLevel,
    Outcome,
    StepKind,
    StepSpec,
    TransitionSpec,
    TriggerKind,
    TriggerSpec,
    WorkflowDefinition,
    WorkflowMode,
    compensation_specs,
)
from squidmesh_core.errors import DefinitionErrors, DefinitionProblem
from squidmesh_core.ids import NAME_PATTERN
from squidmesh_core.jsonvalue import DEFAULT_LIMITS, JsonLimits
from squidmesh_core.payload import PayloadContract, describe_contract, merge_contract_fields
from squidmesh_core.retry import MAX_DELAY, Exponential, Fixed, Linear, Retry
from squidmesh_core.state import RecoveryStrategy, compensation_step

WORKFLOW_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_.:-]{0,199}\Z")
MAX_ATTEMPTS_LIMIT = 1000
_ZERO = timedelta(0)


class _Problems:
    def __init__(self) -> None:
        self.items: list[DefinitionProblem] = []

    def add(self, code: str, message: str) -> None:
        self.items.append(DefinitionProblem(code=code, message=message))


def _names(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _duplicates(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for value in values:
        if value in seen and value not in dups:
            dups.append(value)
        seen.add(value)
    return dups


def _find_cycle(nodes: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as a path ``[a, b, ..., a]``, or ``None`` if the graph is acyclic."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(nodes, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = black
        return None

    for node in nodes:
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


# ---------------------------------------------------------------- triggers


def _check_triggers(
    triggers: Sequence[TriggerSpec], problems: _Problems
) -> dict[str, PayloadContract]:
    if not triggers:
        problems.add("no_triggers", "at least one trigger is required")
    names = [t.name for t in triggers]
    dups = _duplicates(names)
    if dups:
        problems.add("duplicate_triggers", f"duplicate trigger names: {_names(dups)}")
    contracts: dict[str, PayloadContract] = {}
    for trigger in triggers:
        label = f"trigger {trigger.name!r}"
        if not isinstance(trigger.name, str) or not NAME_PATTERN.match(trigger.name):
            problems.add(
                "trigger_name",
                f"{label} has an invalid name (letters, digits and _, at most 100 characters)",
            )
        kind: object = trigger.kind
        if isinstance(kind, str) and kind in set(TriggerKind) and not isinstance(kind, TriggerKind):
            problems.add(
                "trigger_kind",
                f"{label}: give its kind as TriggerKind (manual(...) or cron(...)), "
                f"not the string {kind!r}",
            )
        elif kind not in set(TriggerKind):
            problems.add(
                "trigger_kind", f"{label} has an unknown kind {kind!r} (use manual or cron)"
            )
        elif trigger.kind is TriggerKind.CRON:
            parsed = parse_cron(trigger.expression, trigger.timezone)
            if isinstance(parsed, Failure):
                problems.add("cron_spec", f"{label} {parsed.failure()}")
        elif trigger.expression is not None or trigger.timezone is not None:
            problems.add(
                "trigger_kind",
                f"{label} is a manual trigger but carries a cron expression or timezone "
                "(use cron(...))",
            )
        described = describe_contract(trigger.payload)
        if isinstance(described, Failure):
            for message in described.failure():
                problems.add("payload", f"{label}: {message}")
        else:
            contract = described.unwrap()
            if any(f.name == "schedule" for f in contract.fields):
                problems.add(
                    "reserved_key",
                    f"{label}: payload field 'schedule' is reserved for cron schedule metadata",
                )
            contracts.setdefault(trigger.name, contract)
    _, conflicts = merge_contract_fields(contracts)
    for message in conflicts:
        problems.add("payload_conflict", message)
    return contracts


def _non_empty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ---------------------------------------------------------------- steps


def _duration_problem(value: object, what: str) -> str | None:
    """Why ``value`` is not a delay SquidMesh can schedule (positive, at most ``MAX_DELAY``)."""
    if not isinstance(value, timedelta) or value <= _ZERO:
        return f"{what} must be a positive timedelta"
    if value > MAX_DELAY:
        return f"{what} must be at most {MAX_DELAY.days} days"
    return None


def _check_backoff(backoff: object) -> str | None:
    positive = _duration_problem

    def jitter_ok(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            return "jitter must be a number between 0 and 1"
        return None

    match backoff:
        case None:
            return None
        case Fixed(delay=delay, jitter=jitter):
            return positive(delay, "delay") or jitter_ok(jitter)
        case Linear(min=low, step=step, max=high, jitter=jitter):
            return (
                positive(low, "min")
                or positive(high, "max")
                or (None if isinstance(step, timedelta) and step >= _ZERO else "step must be >= 0")
                or (None if high >= low else "max must be >= min")
                or jitter_ok(jitter)
            )
        case Exponential(min=low, max=high, factor=factor, jitter=jitter):
            return (
                positive(low, "min")
                or positive(high, "max")
                or (None if high >= low else "max must be >= min")
                or (
                    None
                    if isinstance(factor, int | float)
                    and not isinstance(factor, bool)
                    and factor >= 1
                    else "factor must be a number >= 1"
                )
                or jitter_ok(jitter)
            )
        case _:
            return "backoff must be Exponential, Linear or Fixed"


def _check_retry(step: StepSpec, problems: _Problems, *, compensation: bool = False) -> None:
    retry: object = step.compensate_retry if compensation else step.retry
    if retry is None:
        return
    name = compensation_step(step.name) if compensation else step.name
    if step.kind is not StepKind.ACTION:
        problems.add("builtin_retry", f"built-in step {name!r} cannot declare a retry policy")
        return
    if not isinstance(retry, Retry):
        problems.add("retry", f"retry for {name!r} must be a Retry value")
        return
    attempts: object = retry.max_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        problems.add("retry", f"retry for {name!r} must define a positive max_attempts")
    elif attempts > MAX_ATTEMPTS_LIMIT:
        problems.add(
            "retry", f"retry for {name!r} allows at most {MAX_ATTEMPTS_LIMIT} max_attempts"
        )
    why = _check_backoff(retry.backoff)
    if why:
        problems.add("backoff", f"retry for {name!r} defines an invalid backoff: {why}")
    for option in ("retry_on", "no_retry_on"):
        kinds: object = getattr(retry, option)
        if not isinstance(kinds, tuple) or not all(
            isinstance(k, type) and issubclass(k, BaseException) for k in kinds
        ):
            problems.add(
                "retry", f"retry for {name!r}: {option} must be a tuple of exception types"
            )


def _check_step(step: StepSpec, problems: _Problems) -> None:
    label = f"step {step.name!r}"
    if not isinstance(step.name, str) or not NAME_PATTERN.match(step.name):
        problems.add(
            "step_name",
            f"{label} has an invalid name (letters, digits and _, at most 100 characters)",
        )
    elif step.name in ENDS or step.name == DEADLINE:
        problems.add("step_name", f"{label} uses the reserved name {step.name!r}")
    for message in step.option_problems:
        problems.add("step_option", f"{label}: {message}")
    match step.kind:
        case StepKind.ACTION:
            if not callable(step.handler):
                problems.add("handler", f"{label} needs a callable handler")
            why = None if step.timeout is None else _duration_problem(step.timeout, "timeout")
            if why:
                problems.add("step_timeout", f"{label}: {why}")
        case StepKind.WAIT:
            duration: object = step.duration
            if not isinstance(duration, timedelta) or duration <= _ZERO:
                problems.add(
                    "wait_duration", f"built-in step {step.name!r} requires a positive duration"
                )
            elif duration > MAX_DELAY:
                problems.add(
                    "wait_duration",
                    f"built-in step {step.name!r} waits longer than {MAX_DELAY.days} days",
                )
        case StepKind.PAUSE | StepKind.APPROVAL:
            pass
        case StepKind.SIGNAL:
            _check_signal_step(step, problems)
        case StepKind.LOG:
            if not _non_empty(step.message):
                problems.add(
                    "log_message", f"built-in step {step.name!r} requires a non-empty message"
                )
            if step.level not in set(LogLevel):
                problems.add(
                    "log_level",
                    f"built-in step {step.name!r} defines unsupported level {step.level!r} "
                    "(use debug, info, warning or error)",
                )
    keys: object = step.input_keys
    if keys is not None and not (
        isinstance(keys, tuple)
        and keys
        and all(_non_empty(k) for k in keys)
        and len(set(keys)) == len(keys)
    ):
        problems.add("input_mapping", f"{label} defines an invalid input mapping")
    if step.output_key is not None and not _non_empty(step.output_key):
        problems.add("output_mapping", f"{label} defines an invalid output mapping")
    elif step.output_key == "schedule":
        problems.add(
            "reserved_key", f"{label} writes its output to 'schedule', which cron runs reserve"
        )
    _check_retry(step, problems)
    _check_compensation(step, label, problems)
    for marker in ("irreversible", "compensatable"):
        if not isinstance(getattr(step, marker), bool):
            problems.add("recovery_marker", f"{label}: {marker} must be True or False")
    in_transaction: object = step.transaction
    if not isinstance(in_transaction, bool):
        problems.add("transaction", f"{label}: transaction must be True or False")
    rechecks: object = step.max_rechecks
    if isinstance(rechecks, bool) or not isinstance(rechecks, int) or rechecks < 0:
        problems.add("max_rechecks", f"{label}: max_rechecks must be a non-negative integer")
    lost: object = step.max_lost
    if isinstance(lost, bool) or not isinstance(lost, int) or not 0 <= lost <= MAX_ATTEMPTS_LIMIT:
        problems.add(
            "max_lost", f"{label}: max_lost must be an integer from 0 to {MAX_ATTEMPTS_LIMIT}"
        )


def _check_compensation(step: StepSpec, label: str, problems: _Problems) -> None:
    if step.compensate is None:
        if step.compensate_retry is not None:
            problems.add("compensate", f"{label} sets compensate_retry but no compensate handler")
        return
    if step.kind is not StepKind.ACTION or not callable(step.compensate):
        problems.add("compensate", f"{label}: compensate must be a callable of an action step")
    elif step.compensatable is False:
        problems.add("compensate", f"{label} is compensatable=False but has a compensate handler")
    _check_retry(step, problems, compensation=True)


def _check_signal_step(step: StepSpec, problems: _Problems) -> None:
    label = f"signal step {step.name!r}"
    if not isinstance(step.signal, str) or not NAME_PATTERN.match(step.signal):
        problems.add(
            "signal_name",
            f"{label} needs a signal name (letters, digits and _, at most 100 characters)",
        )
    timeout: object = step.timeout
    why = None if timeout is None else _duration_problem(timeout, "timeout")
    if why:
        problems.add("signal_timeout", f"{label}: {why}")
    if step.on_timeout is not None and timeout is None:
        problems.add("signal_timeout", f"{label} names on_timeout but sets no timeout")


def _check_signals(steps: Sequence[StepSpec], problems: _Problems) -> dict[str, PayloadContract]:
    """The payload contract of every awaited signal (one model per signal name)."""
    contracts: dict[str, PayloadContract] = {}
    models: dict[str, object] = {}
    for step in steps:
        if step.kind is not StepKind.SIGNAL or not isinstance(step.signal, str):
            continue
        if step.signal in models and models[step.signal] is not step.signal_payload:
            problems.add(
                "signal_payload",
                f"signal {step.signal!r} is awaited with different payload models",
            )
            continue
        models[step.signal] = step.signal_payload
        described = describe_contract(step.signal_payload)
        if isinstance(described, Failure):
            for message in described.failure():
                problems.add("signal_payload", f"signal step {step.name!r}: {message}")
        else:
            contracts[step.signal] = described.unwrap()
    return contracts


def _check_dependencies(steps: Sequence[StepSpec], problems: _Problems) -> list[str]:
    names = [s.name for s in steps]
    for step in steps:
        after: object = step.after
        if not isinstance(after, tuple) or not all(isinstance(a, str) for a in after):
            problems.add(
                "after_list", f"step {step.name!r} defines an invalid after dependency list"
            )
            continue
        for dep in after:
            if dep == step.name:
                problems.add("self_dependency", f"step {step.name!r} cannot depend on itself")
            elif dep not in names:
                problems.add(
                    "unknown_dependency", f"step {step.name!r} depends on unknown step {dep!r}"
                )
    edges = {s.name: list(s.after) for s in steps}
    cycle = _find_cycle(names, edges)
    if cycle:
        problems.add(
            "dependency_cycle",
            "workflow dependency graph must be acyclic: " + " -> ".join(repr(c) for c in cycle),
        )
    roots = [s.name for s in steps if not s.after]
    if not roots:
        problems.add("no_root", "dependency-based workflow must define at least one root step")
    return roots


def _check_transitions(
    steps: Sequence[StepSpec], transitions: Sequence[TransitionSpec], problems: _Problems
) -> list[str]:
    names = [s.name for s in steps]
    seen: set[tuple[str, str]] = set()
    for transition in transitions:
        on: object = transition.on
        if on not in set(Outcome):
            problems.add(
                "transition_outcome",
                f"transition from {transition.from_step!r} defines unsupported outcome {on!r}",
            )
        key = (transition.from_step, str(on))
        if key in seen:
            problems.add(
                "duplicate_transition",
                f"duplicate transition declared from {transition.from_step!r} on outcome {on}",
            )
        seen.add(key)
        if transition.from_step not in names:
            problems.add(
                "unknown_transition_source",
                f"transition references unknown step: {transition.from_step!r}",
            )
        recovery: object = transition.recovery
        if recovery is not None and (
            not isinstance(recovery, str)
            or recovery not in {r.value for r in RecoveryStrategy}
            or transition.on is not Outcome.ERROR
        ):
            problems.add(
                "recovery_route",
                f"transition from {transition.from_step!r}: recovery={recovery!r} needs "
                "'compensation' or 'undo' on an error route",
            )
        if transition.to not in ENDS and transition.to not in names:
            problems.add(
                "unknown_transition_target",
                f"transition from {transition.from_step!r} targets unknown step: {transition.to!r}",
            )
    timeouts = [(s.name, s.on_timeout) for s in steps if s.on_timeout is not None]
    for source, target in timeouts:
        if target not in ENDS and target not in names:
            problems.add(
                "unknown_transition_target",
                f"signal step {source!r} times out to unknown step: {target!r}",
            )
    targeted = {t.to for t in transitions} | {target for _, target in timeouts}
    entries = [n for n in names if n not in targeted]
    if len(entries) != 1 and names:
        found = _names(entries) if entries else "none"
        problems.add("entry_step", f"workflow must define exactly one entry step (found: {found})")
    edges: dict[str, list[str]] = {}
    for transition in transitions:
        edges.setdefault(transition.from_step, []).append(transition.to)
    for source, target in timeouts:
        edges.setdefault(source, []).append(target)
    cycle = _find_cycle(names, edges)
    if cycle:
        problems.add(
            "transition_cycle",
            "transition cycle: a step is reachable from itself: "
            + " -> ".join(repr(c) for c in cycle),
        )
    with_ok = {t.from_step for t in transitions if t.on is Outcome.OK}
    with_error = {t.from_step for t in transitions if t.on is Outcome.ERROR}
    for name in names:
        if name in with_error and name not in with_ok:
            problems.add(
                "missing_ok_route",
                f"step {name!r} has no ok transition, so its success could never complete the run",
            )
    return entries


def build_workflow(
    name: str,
    *,
    triggers: Sequence[TriggerSpec],
    steps: Sequence[StepSpec],
    transitions: Sequence[TransitionSpec] = (),
    limits: JsonLimits = DEFAULT_LIMITS,
    deadline: timedelta | None = None,
    compensate_on_cancel: bool = False,
) -> Result[WorkflowDefinition, DefinitionErrors]:
    """Validate a declared workflow.

    ``limits`` bounds the size and nesting of its payloads and step outputs
    (default: 1 MiB encoded, 64 levels).

    Returns:
        ``Success(WorkflowDefinition)``, or ``Failure(DefinitionErrors)`` with one
        :class:`DefinitionProblem` per broken rule, in a stable order.
    """
    problems = _Problems()
    if not isinstance(name, str) or not WORKFLOW_NAME.match(name):
        problems.add(
            "workflow_name",
            f"workflow name {name!r} is invalid (a letter, then letters, digits, '_', '.', ':' "
            "or '-', at most 200 characters)",
        )
    triggers = tuple(triggers)
    steps = tuple(steps)
    transitions = tuple(transitions)
    contracts = _check_triggers(triggers, problems)
    if not steps:
        problems.add("no_steps", "at least one step is required")
    why = None if deadline is None else _duration_problem(deadline, "the deadline")
    if why:
        problems.add("deadline", why)
    on_cancel: object = compensate_on_cancel
    if not isinstance(on_cancel, bool):
        problems.add("compensate_on_cancel", "compensate_on_cancel must be True or False")
    dups = _duplicates([s.name for s in steps])
    if dups:
        problems.add("duplicate_steps", f"duplicate step names: {_names(dups)}")
    for step in steps:
        _check_step(step, problems)
    dependency_mode = any(s.after for s in steps)
    signal_contracts = _check_signals(steps, problems)
    if dependency_mode:
        parking = [s.name for s in steps if isinstance(s.kind, StepKind) and s.kind.parks]
        if parking:
            problems.add(
                "parking_in_dependency_mode",
                "pause, approval and signal steps need a transition workflow: " + _names(parking),
            )
        if transitions:
            problems.add(
                "transitions_in_dependency_mode",
                "dependency-based workflows cannot declare transitions",
            )
        entries = _check_dependencies(steps, problems)
    elif steps:
        entries = _check_transitions(steps, transitions, problems)
    else:
        entries = []
    if problems.items:
        return Failure(DefinitionErrors(workflow=str(name), problems=tuple(problems.items)))
    fields, _ = merge_contract_fields(contracts)
    if not dependency_mode:  # a step without routes is a last step: its success completes
        sources = {t.from_step for t in transitions}
        transitions = (
            *transitions,
            *(
                TransitionSpec(from_step=s.name, on=Outcome.OK, to=COMPLETE)
                for s in steps
                if s.name not in sources
            ),
        )
    return Success(
        WorkflowDefinition(
            name=name,
            triggers=triggers,
            steps=steps,
            transitions=transitions,
            mode=WorkflowMode.DEPENDENCIES if dependency_mode else WorkflowMode.TRANSITIONS,
            entry_steps=tuple(entries),
            contracts=contracts,
            payload_fields=fields,
            limits=limits,
            signal_contracts=signal_contracts,
            deadline=deadline,
            timed_steps=frozenset(
                name
                for s in steps
                if s.kind is StepKind.ACTION and s.timeout is not None
                for name in (s.name, compensation_step(s.name))
            ),
            compensations=compensation_specs(steps),
            compensate_on_cancel=compensate_on_cancel,
        )
    )
