"""What a step receives besides its input: the :class:`StepContext`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from squidmesh_core.ids import RunId
from squidmesh_core.jsonvalue import JsonObject, JsonValue

_NOTHING: Mapping[str, JsonValue] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """Facts about the attempt being run, handed to every step as ``ctx``."""

    run_id: RunId
    workflow: str
    step: str
    attempt: int
    """1-based number of this attempt."""
    idempotency_key: str
    """Stable across every attempt of this step in this run: pass it to external systems."""
    started_at: datetime
    """When this attempt started (the runtime clock)."""
    schedule: JsonObject | None = None
    """For runs started by a cron trigger: ``id``, ``workflow``, ``trigger``,
    ``expression``, ``timezone`` and the nominal ``tick`` (ISO 8601, UTC)."""
    payload: Mapping[str, JsonValue] = field(default_factory=lambda: _NOTHING)
    """The run's payload, read-only, whatever the step's ``input=`` keeps."""
    context: Mapping[str, JsonValue] = field(default_factory=lambda: _NOTHING)
    """The run's context as this attempt started (earlier steps' outputs), read-only."""


def step_idempotency_key(run_id: str, step: str) -> str:
    """The idempotency key of ``step`` in ``run_id`` (same for every attempt).

    >>> step_idempotency_key("r1", "charge")
    'squidmesh:r1:charge'
    """
    return f"squidmesh:{run_id}:{step}"
