"""Running one attempt of a step: built-ins, and user handlers of every supported shape.

A user step is an async or plain callable taking ``(input)`` or ``(input, ctx)``,
or a class whose instances have such a ``run`` method (one instance per
attempt). If the first parameter is annotated with a pydantic model, the input is
validated into it (extra keys are ignored unless the model forbids them); a
validation error is a non-retryable ``invalid_input`` failure. A plain callable
runs in a worker thread so it never blocks the event loop.

The handler returns ``Success(output)`` / ``Failure(StepFailure(...))``, or a
plain output, or raises: an exception is a failed attempt (retried per policy)
whose type and message are recorded. Outputs may be dicts or pydantic models;
``None`` means ``{}``. A return annotation naming a pydantic model validates a
dict output against it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import get_args, get_type_hints

from pydantic import BaseModel, PydanticUserError, ValidationError
from returns.result import Failure, Result, Success

from squidmesh_core.context import Recheck, StepContext
from squidmesh_core.definition import LogLevel, StepKind, StepSpec
from squidmesh_core.errors import NonRetryableError
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.state import StepFailure

_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}

StepOutcome = Result[object, StepFailure]


class _UnresolvableAnnotationsError(Exception):
    """A handler's annotations name something that cannot be found."""


@dataclass(frozen=True, slots=True)
class _Shape:
    input_model: type[BaseModel] | None
    output_model: type[BaseModel] | None
    takes_context: bool


def _model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    # ``Model | None``: validate into the model (the input is never None).
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _shape(target: object) -> _Shape:
    try:
        signature = inspect.signature(target)  # type: ignore[arg-type]  # any callable
    except (TypeError, ValueError):
        return _Shape(input_model=None, output_model=None, takes_context=True)
    annotated = target if inspect.isroutine(target) else getattr(target, "__call__", target)  # noqa: B004
    try:
        hints = get_type_hints(annotated)
    except TypeError:  # builtins and other objects without annotations
        hints = {}
    except NameError as exc:
        raise _UnresolvableAnnotationsError(
            f"cannot resolve the type annotations of {getattr(target, '__qualname__', target)!r}: "
            f"{exc}; define the models it uses at module level"
        ) from exc
    params = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    first = params[0].name if params else None
    return _Shape(
        input_model=_model(hints.get(first)) if first else None,
        output_model=_model(hints.get("return")),
        takes_context=variadic or len(params) >= 2,
    )


_HANDLERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="squidmesh-step")
"""Plain-function handlers run here, not in the loop's default pool: a handler that
times out keeps its thread (threads cannot be stopped), and must not starve the
stores that use the default pool. 64 hung handlers at once exhaust it."""

_MAX_SHAPES = 4096
_SHAPES: dict[int, tuple[object, _Shape]] = {}
"""Shapes by handler: reading a signature and its type hints cost more than a no-op step."""


def _shape_of(handler: object, target: object) -> _Shape:
    """The shape of ``target``, the callable ``handler`` resolves to (cached per handler).

    The handler is kept in the cache next to its shape, so its id cannot be reused
    by another object while the entry exists. A handler whose annotations cannot
    be resolved is not cached: it fails every time.
    """
    known = _SHAPES.get(id(handler))
    if known is not None and known[0] is handler:
        return known[1]
    shape = _shape(target)
    if len(_SHAPES) >= _MAX_SHAPES:  # handlers made on the fly: keep the cache bounded
        _SHAPES.clear()
    _SHAPES[id(handler)] = (handler, shape)
    return shape


def _field_errors(exc: ValidationError) -> list[str]:
    """Each problem of a validation error as ``field.path: message``."""
    return [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()]


def _normalise_output(value: object, model: type[BaseModel] | None) -> StepOutcome:
    if value is None:
        return Success({})
    if isinstance(value, Recheck):  # "not yet": the delivery turns it into a deferral
        after: object = value.after
        if (
            not isinstance(after, timedelta)
            or after < timedelta(0)
            or not isinstance(value.reason, str)
        ):
            return Failure(
                StepFailure(
                    kind="invalid_output",
                    message="Recheck needs after= a non-negative timedelta and reason= a string",
                    retryable=False,
                )
            )
        return Success(value)
    if isinstance(value, BaseModel):
        return Success(value.model_dump(mode="json"))
    if model is not None and isinstance(value, Mapping):
        try:
            return Success(model.model_validate(dict(value)).model_dump(mode="json"))
        except ValidationError as exc:
            return Failure(
                StepFailure(
                    kind="invalid_output",
                    message=f"step output does not match {model.__name__}: "
                    + "; ".join(_field_errors(exc)),
                    retryable=False,
                    details={"errors": _field_errors(exc)},
                )
            )
    return Success(value)


def _retryable(spec: StepSpec, exc: BaseException) -> bool:
    """Whether a raised (or returned) exception may be retried: ours never, else per policy."""
    if isinstance(exc, NonRetryableError):
        return False
    return spec.retry is None or spec.retry.retries(exc)


def _as_outcome(spec: StepSpec, value: object, model: type[BaseModel] | None) -> StepOutcome:
    match value:
        case Success(inner):
            return _normalise_output(inner, model)
        case Failure(StepFailure() as failure):
            return Failure(failure)
        case Failure(BaseException() as exc):
            return Failure(StepFailure.from_exception(exc, retryable=_retryable(spec, exc)))
        case Failure(other):
            return Failure(StepFailure(kind="step_failed", message=str(other)))
        case _:
            return _normalise_output(value, model)


def _broken_model(spec: StepSpec, model: type[BaseModel], exc: PydanticUserError) -> StepOutcome:
    """A model pydantic cannot use (not fully defined): a definition problem, not retried."""
    return Failure(
        StepFailure(
            kind="invalid_step",
            message=f"step {spec.name!r}: model {model.__name__} cannot be used: {exc}",
            retryable=False,
        )
    )


def _validated_input(
    spec: StepSpec, model: type[BaseModel] | None, data: JsonObject
) -> Result[object, StepFailure]:
    """The handler's argument: the input as a dict, or validated into its model."""
    if model is None:
        return Success(dict(data))
    try:
        return Success(model.model_validate(dict(data)))
    except PydanticUserError as exc:
        return _broken_model(spec, model, exc)
    except ValidationError as exc:
        return Failure(
            StepFailure(
                kind="invalid_input",
                message=f"step input does not match {model.__name__}: {exc.error_count()} error(s)",
                retryable=False,
                details={"errors": _field_errors(exc)},
            )
        )


async def run_action(spec: StepSpec, data: JsonObject, ctx: StepContext) -> StepOutcome:
    """Run a user step's handler once and describe what happened."""
    handler = spec.handler
    if handler is None:
        return Failure(
            StepFailure(kind="invalid_step", message="step has no handler", retryable=False)
        )
    try:
        target: object = getattr(handler(), "run", None) if inspect.isclass(handler) else handler
        if not callable(target):
            return Failure(
                StepFailure(
                    kind="invalid_step",
                    message=f"step {spec.name!r}: a class handler needs a run(input, ctx) method",
                    retryable=False,
                )
            )
        try:
            shape = _shape_of(handler, target)
        except _UnresolvableAnnotationsError as exc:
            return Failure(StepFailure(kind="invalid_step", message=str(exc), retryable=False))
        validated = _validated_input(spec, shape.input_model, data)
        if isinstance(validated, Failure):
            return validated
        argument = validated.unwrap()
        args = (argument, ctx) if shape.takes_context else (argument,)
        try:
            inspect.signature(target).bind(*args)
        except TypeError as exc:
            return Failure(
                StepFailure(
                    kind="invalid_step",
                    message=f"step {spec.name!r} cannot be called with (input, ctx): {exc}",
                    retryable=False,
                )
            )
        except ValueError:
            pass  # builtins without a signature: let the call decide
        if inspect.iscoroutinefunction(target):
            value = await target(*args)
        else:
            call = functools.partial(contextvars.copy_context().run, target, *args)
            value = await asyncio.get_running_loop().run_in_executor(_HANDLERS, call)
            if inspect.isawaitable(value):
                value = await value
    except Exception as exc:  # a raising step is a failed attempt, recorded with its type
        return Failure(StepFailure.from_exception(exc, retryable=_retryable(spec, exc)))
    try:
        return _as_outcome(spec, value, shape.output_model)
    except PydanticUserError as exc:
        assert shape.output_model is not None
        return _broken_model(spec, shape.output_model, exc)


async def run_step(
    spec: StepSpec,
    data: JsonObject,
    ctx: StepContext,
    logger: logging.LoggerAdapter[logging.Logger],
) -> StepOutcome:
    """Run one attempt of ``spec``: a built-in or the user's handler."""
    match spec.kind:
        case StepKind.WAIT:
            return Success({})
        case StepKind.LOG:
            logger.log(_LEVELS.get(LogLevel(spec.level), logging.INFO), spec.message or "")
            return Success({})
        case StepKind.ACTION:
            return await run_action(spec, data, ctx)
        case StepKind.PAUSE | StepKind.APPROVAL | StepKind.SIGNAL:  # the core parks these
            return Failure(
                StepFailure(
                    kind="invalid_step",
                    message=f"step {spec.name!r} parks the run and never runs on a worker",
                    retryable=False,
                )
            )
