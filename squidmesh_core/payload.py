"""Payload contracts: what a trigger accepts, checked before anything is stored.

A trigger's contract is a pydantic model. Keys are the model's field names as
strings (aliases are not used). Rules:

1. Every field type must be one SquidMesh can store as JSON: ``str``, ``int``,
   ``float``, ``bool``, ``None``, ``date``, ``datetime``, ``list``/``dict`` (of
   such types), ``Literal``, ``Enum`` subclasses, unions of these, and nested
   pydantic models built the same way. Anything else is a definition error.
2. A field may default to a constant (which must fit its type) or to the run's
   creation date or time with ``Annotated[str, Today()]`` / ``Annotated[str, Now()]``.
   ``default_factory`` is refused: defaults must not depend on hidden state.
3. Validation is strict JSON validation (``"1"`` is not an ``int``). Missing
   required fields, unknown fields and mistyped fields are reported together.
4. The stored payload is the model's JSON dump: defaults filled in, types normalised.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError, PydanticUndefined
from returns.result import Failure, Result, Success

from squidmesh_core.errors import FieldProblem, InvalidPayload
from squidmesh_core.jsonvalue import (
    DEFAULT_LIMITS,
    JsonLimits,
    JsonObject,
    JsonValue,
    check_json_object,
)


@dataclass(frozen=True, slots=True)
class Today:
    """Marker: ``Annotated[str, Today()]`` defaults to the run's creation date (ISO 8601, UTC)."""


@dataclass(frozen=True, slots=True)
class Now:
    """Marker: ``Annotated[str, Now()]`` defaults to the run's creation time (ISO 8601, UTC)."""


class DefaultKind(StrEnum):
    """Where a field's value comes from when the caller leaves it out."""

    NONE = "none"
    CONSTANT = "constant"
    TODAY = "today"
    NOW = "now"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldSpec:
    """A payload field as the core sees it."""

    name: str
    type_label: str
    required: bool
    default: DefaultKind


@dataclass(frozen=True, slots=True, kw_only=True)
class PayloadContract:
    """The checked contract of one trigger: its model and a summary of its fields."""

    model: type[BaseModel] | None
    fields: tuple[FieldSpec, ...]

    def field_names(self) -> tuple[str, ...]:
        """Declared field names in declaration order."""
        return tuple(f.name for f in self.fields)


EMPTY_CONTRACT = PayloadContract(model=None, fields=())

_SCALARS: tuple[type, ...] = (str, int, float, bool, date, datetime, type(None))


def type_label(annotation: object) -> str:
    """A short, stable name for a field type, used in messages and conflict checks."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__name__
    return repr(annotation).replace("typing.", "").replace("datetime.", "")


def _type_problem(annotation: object, seen: frozenset[type]) -> str | None:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_problem(args[0], seen)
    if origin is Literal:
        bad = [a for a in args if not isinstance(a, str | int | bool) and a is not None]
        return f"Literal values {bad!r} are not JSON scalars" if bad else None
    if origin in (Union, types.UnionType):
        problems = [p for p in (_type_problem(a, seen) for a in args) if p]
        return problems[0] if problems else None
    if origin is list:
        return _type_problem(args[0], seen) if args else None
    if origin is dict:
        if args and args[0] is not str:
            return "dict keys must be str"
        return _type_problem(args[1], seen) if args else None
    if origin is not None:
        return f"{type_label(annotation)} is not a supported field type"
    if annotation in _SCALARS or annotation in (list, dict):
        return None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        bad_members = [m for m in annotation if not isinstance(m.value, str | int)]
        return f"enum {annotation.__name__} has non-JSON values" if bad_members else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return None
        if annotation.model_config.get("extra") != "forbid":
            return (
                f"nested model {annotation.__name__} must set "
                "model_config = ConfigDict(extra='forbid') so unknown fields are rejected"
            )
        for name, info in annotation.model_fields.items():
            problem = _type_problem(info.annotation, seen | {annotation})
            if problem:
                return f"{annotation.__name__}.{name}: {problem}"
        return None
    return f"{type_label(annotation)} is not a supported field type"


def _dynamic_default(info: FieldInfo) -> DefaultKind | None:
    for meta in info.metadata:
        if isinstance(meta, Today):
            return DefaultKind.TODAY
        if isinstance(meta, Now):
            return DefaultKind.NOW
    return None


def describe_contract(model: object) -> Result[PayloadContract, tuple[str, ...]]:
    """Check a payload model and summarise its fields.

    Returns:
        ``Success(PayloadContract)``, or ``Failure`` with one message per problem
        (each message starts with the field name).
    """
    if model is None:
        return Success(EMPTY_CONTRACT)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return Failure((f"payload must be a pydantic BaseModel subclass, got {model!r}",))
    problems: list[str] = []
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        label = type_label(info.annotation)
        type_problem = _type_problem(info.annotation, frozenset({model}))
        if type_problem:
            problems.append(f"payload field {name!r} has an unsupported type: {type_problem}")
            continue
        if info.alias is not None and info.alias != name:
            problems.append(
                f"payload field {name!r} has alias {info.alias!r}; payload keys are field "
                "names, aliases are not supported"
            )
            continue
        dynamic = _dynamic_default(info)
        if info.default_factory is not None:
            problems.append(
                f"payload field {name!r} uses default_factory; use a constant, Today() or Now()"
            )
            continue
        if dynamic is not None:
            if info.annotation is not str:
                problems.append(f"payload field {name!r} uses {dynamic.value}() but is not a str")
                continue
            specs.append(FieldSpec(name=name, type_label=label, required=False, default=dynamic))
            continue
        if info.default is not PydanticUndefined:
            default_problem = _default_problem(model, name, info.default)
            if default_problem:
                problems.append(
                    f"payload field {name!r} has an invalid default for type {label}: "
                    f"{default_problem}"
                )
                continue
            specs.append(
                FieldSpec(name=name, type_label=label, required=False, default=DefaultKind.CONSTANT)
            )
            continue
        specs.append(
            FieldSpec(name=name, type_label=label, required=True, default=DefaultKind.NONE)
        )
    if problems:
        return Failure(tuple(problems))
    return Success(PayloadContract(model=model, fields=tuple(specs)))


def _default_problem(model: type[BaseModel], name: str, default: object) -> str | None:
    try:
        model.__pydantic_validator__.validate_assignment(
            model.model_construct(), name, default, strict=True
        )
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    except PydanticUserError as exc:
        return f"the model is not fully defined ({exc.message})"
    try:
        annotation = model.model_fields[name].annotation
        adapter: TypeAdapter[object] = TypeAdapter(object if annotation is None else annotation)
        dumped = adapter.dump_python(default, mode="json")
        json.dumps(dumped, allow_nan=False)
    except (TypeError, ValueError, PydanticSerializationError):
        return "the default is not JSON"
    return None


def validate_payload(
    contract: PayloadContract,
    raw: object,
    *,
    workflow: str,
    trigger: str,
    now: datetime,
    limits: JsonLimits = DEFAULT_LIMITS,
) -> Result[JsonObject, InvalidPayload]:
    """Resolve defaults and validate ``raw`` against ``contract``.

    Args:
        contract: the trigger's checked contract.
        raw: the caller's payload, expected to be a mapping with string keys.
        workflow: workflow name, for the error.
        trigger: trigger name, for the error.
        now: the run's creation time (UTC); feeds ``Today()`` and ``Now()`` defaults.
        limits: size and depth bounds for the stored payload.

    Returns:
        ``Success`` with the resolved payload as a JSON object, or
        ``Failure(InvalidPayload)`` listing missing, unknown and mistyped fields
        (or a ``reason`` when the payload is not a storable JSON object).
    """

    def invalid(
        *,
        missing: tuple[str, ...] = (),
        unknown: tuple[str, ...] = (),
        invalid: tuple[FieldProblem, ...] = (),
        reason: str | None = None,
    ) -> Failure[InvalidPayload]:
        return Failure(
            InvalidPayload(
                workflow=workflow,
                trigger=trigger,
                missing=missing,
                unknown=unknown,
                invalid=invalid,
                reason=reason,
            )
        )

    checked = check_json_object(raw, limits=limits)
    if isinstance(checked, Failure):
        problem = checked.failure()
        return invalid(reason=f"{problem.path.replace('$', 'payload', 1)} {problem.reason}")
    data: dict[str, JsonValue] = dict(checked.unwrap())
    declared = contract.field_names()
    unknown = tuple(sorted(k for k in data if k not in declared))
    for spec in contract.fields:
        if spec.name not in data and spec.default is DefaultKind.TODAY:
            data[spec.name] = now.date().isoformat()
        elif spec.name not in data and spec.default is DefaultKind.NOW:
            data[spec.name] = now.isoformat()
    missing = tuple(s.name for s in contract.fields if s.required and s.name not in data)
    if contract.model is None:
        if unknown or missing:
            return invalid(missing=missing, unknown=unknown)
        return Success({})
    known = {k: v for k, v in data.items() if k in declared}
    labels = {s.name: s.type_label for s in contract.fields}
    try:
        instance = contract.model.model_validate_json(json.dumps(known), strict=True)
    except ValidationError as exc:
        invalid_fields = tuple(
            FieldProblem(
                field=".".join(str(p) for p in err["loc"]),
                expected=labels.get(str(err["loc"][0]), "?") if err["loc"] else "?",
                message=err["msg"],
            )
            for err in exc.errors()
            if err["type"] != "missing" or len(err["loc"]) > 1
        )
        return invalid(missing=missing, unknown=unknown, invalid=invalid_fields)
    if unknown or missing:
        return invalid(missing=missing, unknown=unknown)
    dumped = check_json_object(instance.model_dump(mode="json"), limits=limits)
    if isinstance(dumped, Failure):
        return invalid(reason=f"resolved payload {dumped.failure().reason}")
    return Success(dumped.unwrap())


def merge_contract_fields(
    contracts: Mapping[str, PayloadContract],
) -> tuple[tuple[FieldSpec, ...], tuple[str, ...]]:
    """Union of every trigger's fields (first declaration wins) and type-conflict messages."""
    seen: dict[str, FieldSpec] = {}
    labels: dict[str, list[str]] = {}
    for contract in contracts.values():
        for spec in contract.fields:
            seen.setdefault(spec.name, spec)
            bucket = labels.setdefault(spec.name, [])
            if spec.type_label not in bucket:
                bucket.append(spec.type_label)
    conflicts = tuple(
        f"payload field {name!r} has conflicting types across triggers: {', '.join(types_)}"
        for name, types_ in labels.items()
        if len(types_) > 1
    )
    return tuple(seen.values()), conflicts
