"""The friendly constructors users write workflows with.

Each helper returns a plain spec value; :func:`workflow` validates them all at
once and raises :class:`InvalidWorkflowError` listing every problem, like a
compiler. :func:`build_workflow` is the same check returning a ``Result``.

Example::

    payments = workflow(
        "billing.payments",
        triggers=[manual("charge", payload=Charge)],
        steps=[step("charge", charge), wait("cool_down", timedelta(minutes=5)),
               step("notify", notify, retry=Retry(max_attempts=3))],
        transitions=chain("charge", "cool_down", "notify", COMPLETE),
    )
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from itertools import pairwise

from returns.result import Failure, Result, Success

from squidmesh_core.definition import (
    COMPLETE,
    LogLevel,
    Outcome,
    StepHandler,
    StepKind,
    StepSpec,
    TransitionSpec,
    TriggerKind,
    TriggerSpec,
    WorkflowDefinition,
)
from squidmesh_core.jsonvalue import DEFAULT_LIMITS, JsonLimits
from squidmesh_core.retry import Backoff, Exponential, Fixed, Linear, Retry
from squidmesh_core.validation import build_workflow


def manual(name: str = "manual", *, payload: object = None) -> TriggerSpec:
    """A trigger started by calling ``start_run``; ``payload`` is a pydantic model."""
    return TriggerSpec(name=name, kind=TriggerKind.MANUAL, payload=payload)


def cron(
    name: str, expression: str, *, timezone: str = "Etc/UTC", payload: object = None
) -> TriggerSpec:
    """A trigger started on a cron schedule in ``timezone``."""
    return TriggerSpec(
        name=name, kind=TriggerKind.CRON, payload=payload, expression=expression, timezone=timezone
    )


def _after(after: Sequence[str] | str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(after, str):
        return (), (f"after must be a list of step names, not the string {after!r}",)
    if isinstance(after, list) and not after:
        return (), ("after=[] names no step: leave it out, or name the steps it waits for",)
    deduped = tuple(dict.fromkeys(after))
    return deduped, ()


def step(  # noqa: PLR0913  # a step's options are its keyword arguments
    name: str,
    handler: StepHandler,
    *,
    input: Sequence[str] | None = None,
    output: str | None = None,
    retry: Retry | Mapping[str, object] | None = None,
    after: Sequence[str] | str = (),
    max_lost: int = 3,
    max_rechecks: int = 1000,
    irreversible: bool = False,
    compensatable: bool = True,
    timeout: timedelta | None = None,
    compensate: StepHandler | None = None,
    compensate_retry: Retry | Mapping[str, object] | None = None,
    transaction: bool = False,
) -> StepSpec:
    """A user step.

    Args:
        name: unique step name.
        handler: async or plain callable (or class) receiving ``(input, ctx)``.
        input: keep only these keys of the assembled input.
        output: store the output under this key of the run context.
        retry: a :class:`Retry`, or the same as a mapping
            (``{"max_attempts": 3, "backoff": {"type": "exponential", "min": 1, "max": 30}}``,
            durations in seconds; key order never matters).
        after: dependencies (makes the workflow a dependency workflow).
        max_lost: attempts whose worker died (lease expired) that run again
            without using ``retry``'s attempts; one more lost attempt fails the step.
        max_rechecks: times the step may return ``Recheck`` ("not yet") before it fails.
        irreversible: its side effect cannot be undone (a charge, an email); a
            replay that would run it again is refused unless ``allow_irreversible=True``.
        compensatable: ``False`` when its side effect cannot be compensated;
            guarded like ``irreversible``.
        timeout: an attempt must end this long after it starts; one that does
            not is stopped and recorded as ``timed_out`` (retried per ``retry``).
        compensate: undoes the step's effect when the run later fails (or is
            cancelled, with ``workflow(compensate_on_cancel=True)``); called like a
            step with ``{"step", "input", "output", "error"}`` as its input.
        compensate_retry: attempts and backoff of ``compensate`` (default: ``retry``).
        transaction: hand the step a transaction of the store's database
            (``ctx.transaction``) whose writes commit in the same transaction as
            the step's outcome, or not at all (PostgreSQL and SQLite stores).
    """
    deps, problems = _after(after)
    policy, problems = _policy(retry, problems, "retry")
    undo_policy, problems = _policy(compensate_retry, problems, "compensate_retry")
    if isinstance(input, str):
        problems = (*problems, "input must be a list of keys, not a string")
        keys: tuple[str, ...] | None = ()
    else:
        keys = None if input is None else tuple(input)
    return StepSpec(
        name=name,
        kind=StepKind.ACTION,
        handler=handler,
        input_keys=keys,
        output_key=output,
        retry=policy,
        after=deps,
        max_lost=max_lost,
        max_rechecks=max_rechecks,
        irreversible=irreversible,
        compensatable=compensatable,
        timeout=timeout,
        compensate=compensate,
        compensate_retry=undo_policy,
        transaction=transaction,
        option_problems=problems,
    )


def _policy(
    retry: Retry | Mapping[str, object] | None, problems: tuple[str, ...], what: str
) -> tuple[Retry | None, tuple[str, ...]]:
    if not isinstance(retry, Mapping):
        return retry, problems
    parsed = retry_from_options(retry)
    if isinstance(parsed, Failure):
        return None, (*problems, f"invalid {what} options: {parsed.failure()}")
    return parsed.unwrap(), problems


def wait(name: str, duration: timedelta, *, after: Sequence[str] | str = ()) -> StepSpec:
    """A built-in step that delays the next step by ``duration`` without holding a worker."""
    deps, problems = _after(after)
    return StepSpec(
        name=name, kind=StepKind.WAIT, duration=duration, after=deps, option_problems=problems
    )


def log(
    name: str, message: str, *, level: str = LogLevel.INFO, after: Sequence[str] | str = ()
) -> StepSpec:
    """A built-in step that logs ``message`` at ``level`` with the run's context attached."""
    deps, problems = _after(after)
    return StepSpec(
        name=name,
        kind=StepKind.LOG,
        message=message,
        level=level,
        after=deps,
        option_problems=problems,
    )


def pause(name: str, *, output: str | None = None) -> StepSpec:
    """A built-in step that parks the run until ``unblock_run``, then follows its ``ok`` route.

    No worker or lease is held while it waits. With ``output``, the unblock
    (actor, time, note) lands in the context under that key.
    """
    return StepSpec(name=name, kind=StepKind.PAUSE, output_key=output)


def approval(name: str, *, output: str | None = None) -> StepSpec:
    """A built-in step that parks the run until a reviewer approves or rejects it.

    ``approve_run`` follows the ``ok`` route; ``reject_run`` the ``error`` route,
    or fails the run without one. The decision (``decision``, ``actor``, ``at``,
    ``note``) lands in the context under ``output`` (default: the step's name).
    """
    return StepSpec(name=name, kind=StepKind.APPROVAL, output_key=output or name)


def wait_for_signal(
    name: str,
    signal: str,
    *,
    payload: object = None,
    timeout: timedelta | None = None,
    on_timeout: str | None = None,
    output: str | None = None,
) -> StepSpec:
    """A built-in step that parks the run until ``send_signal(run_id, signal, ...)``.

    Args:
        name: unique step name.
        signal: the signal's name; one sent before the run gets here is kept and
            taken on arrival.
        payload: a pydantic model the signal's payload must satisfy (``None``: an
            empty payload).
        timeout: give up after this long (a durable timer).
        on_timeout: where a timeout goes (a step or ``COMPLETE``); by default it is
            routed like an error (the ``error`` route, else the run fails).
        output: where the payload lands in the context (default: the step's name).
    """
    return StepSpec(
        name=name,
        kind=StepKind.SIGNAL,
        signal=signal,
        signal_payload=payload,
        timeout=timeout,
        on_timeout=on_timeout,
        output_key=output or name,
    )


def ok(from_step: str, to: str) -> TransitionSpec:
    """Route a successful ``from_step`` to ``to`` (a step or ``COMPLETE``)."""
    return TransitionSpec(from_step=from_step, on=Outcome.OK, to=to)


def error(from_step: str, to: str, *, recovery: str | None = None) -> TransitionSpec:
    """Route a step's failure (after its retries) to ``to``.

    ``recovery="compensation"`` or ``"undo"`` labels the route as recovering from
    the failure: the failed step records it and a ``step.compensation_routed``
    or ``step.undo_routed`` event reports it.
    """
    return TransitionSpec(from_step=from_step, on=Outcome.ERROR, to=to, recovery=recovery)


def chain(*names: str) -> tuple[TransitionSpec, ...]:
    """``ok`` transitions linking each name to the next: ``chain("a", "b", COMPLETE)``."""
    return tuple(ok(a, b) for a, b in pairwise(names))


def workflow(
    name: str,
    *,
    triggers: Iterable[TriggerSpec],
    steps: Iterable[StepSpec],
    transitions: Iterable[TransitionSpec | Iterable[TransitionSpec]] = (),
    limits: JsonLimits = DEFAULT_LIMITS,
    deadline: timedelta | None = None,
    compensate_on_cancel: bool = False,
) -> WorkflowDefinition:
    """Declare and validate a workflow.

    ``deadline``: a run not finished this long after it starts fails with kind
    ``deadline_exceeded`` (``start_run(..., deadline=...)`` sets one per run).
    ``compensate_on_cancel``: a cancelled run compensates its completed steps too
    (a failed run always does).

    ``transitions`` may mix single transitions and groups (such as :func:`chain`).
    ``limits`` bounds payloads, initial contexts and step outputs (default 1 MiB,
    64 levels deep); anything larger is refused before it is stored.

    Raises:
        InvalidWorkflowError: listing every problem found.
    """
    flat: list[TransitionSpec] = []
    for item in transitions:
        if isinstance(item, TransitionSpec):
            flat.append(item)
        else:
            flat.extend(item)
    result = build_workflow(
        name,
        triggers=tuple(triggers),
        steps=tuple(steps),
        transitions=flat,
        limits=limits,
        deadline=deadline,
        compensate_on_cancel=compensate_on_cancel,
    )
    if isinstance(result, Failure):
        raise result.failure().to_exception()
    return result.unwrap()


# ---------------------------------------------------------------- loose retry options


def _seconds(value: object, what: str) -> Result[timedelta, str]:
    if isinstance(value, timedelta):
        return Success(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Success(timedelta(seconds=value))
    return Failure(f"{what} must be a number of seconds or a timedelta")


def _number(value: object, what: str) -> Result[float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Success(float(value))
    return Failure(f"{what} must be a number")


def backoff_from_options(options: Mapping[str, object]) -> Result[Backoff, str]:
    """Build a backoff from a mapping; keys may come in any order.

    >>> backoff_from_options({"max": 30, "type": "exponential", "min": 1}).unwrap().max.seconds
    30
    """
    kind = options.get("type")
    jitter = _number(options.get("jitter", 0.0), "jitter")
    allowed = {
        "exponential": {"type", "min", "max", "factor", "jitter"},
        "linear": {"type", "min", "step", "max", "jitter"},
        "fixed": {"type", "delay", "jitter"},
    }
    if not isinstance(kind, str) or kind not in allowed:
        return Failure("backoff type must be 'exponential', 'linear' or 'fixed'")
    extra = sorted(set(options) - allowed[kind])
    if extra:
        return Failure(f"unknown {kind} backoff options: {', '.join(extra)}")
    if kind == "fixed":
        return Result.do(
            Fixed(delay=delay, jitter=j)
            for delay in _seconds(options.get("delay"), "delay")
            for j in jitter
        )
    if kind == "linear":
        return Result.do(
            Linear(min=low, step=step_, max=high, jitter=j)
            for low in _seconds(options.get("min"), "min")
            for step_ in _seconds(options.get("step", 0), "step")
            for high in _seconds(options.get("max"), "max")
            for j in jitter
        )
    return Result.do(
        Exponential(min=low, max=high, factor=factor, jitter=j)
        for low in _seconds(options.get("min"), "min")
        for high in _seconds(options.get("max"), "max")
        for factor in _number(options.get("factor", 2.0), "factor")
        for j in jitter
    )


def retry_from_options(options: Mapping[str, object]) -> Result[Retry, str]:
    """Build a :class:`Retry` from a mapping such as ``{"max_attempts": 3, "backoff": {...}}``."""
    extra = sorted(set(options) - {"max_attempts", "backoff"})
    if extra:
        return Failure(f"unknown retry options: {', '.join(extra)}")
    attempts = options.get("max_attempts")
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        return Failure("max_attempts must be an integer")
    raw_backoff = options.get("backoff")
    if raw_backoff is None:
        return Success(Retry(max_attempts=attempts))
    if not isinstance(raw_backoff, Mapping):
        return Failure("backoff must be a mapping")
    return backoff_from_options(raw_backoff).map(
        lambda backoff: Retry(max_attempts=attempts, backoff=backoff)
    )


__all__ = [
    "COMPLETE",
    "approval",
    "backoff_from_options",
    "chain",
    "cron",
    "error",
    "log",
    "manual",
    "ok",
    "pause",
    "retry_from_options",
    "step",
    "wait",
    "wait_for_signal",
    "workflow",
]
