"""What the public API returns: read-only views of a run.

A :class:`Run` is built from a :class:`RunState`; its ``history`` (step runs in
the order they were scheduled, each with its attempts, input, output, error and
times) is filled only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from squidmesh_core.ids import IdempotencyKey, RunId
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.state import RunState, RunStatus, StepFailure, StepRunState


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A run as the public API shows it."""

    id: RunId
    workflow: str
    trigger: str
    status: RunStatus
    payload: JsonObject
    context: JsonObject
    current_steps: tuple[str, ...]
    """Steps scheduled, running or awaiting a retry."""
    last_error: StepFailure | None
    created_at: datetime
    updated_at: datetime
    version: int
    replayed_from: RunId | None = None
    idempotency_key: IdempotencyKey | None = None
    history: tuple[StepRunState, ...] | None = None
    """Step runs with their attempts, in scheduling order; ``None`` unless requested."""
    existing: bool = False
    """``True`` when ``start_run`` returned an earlier run with the same idempotency key."""


def run_view(state: RunState, *, include_history: bool = False, existing: bool = False) -> Run:
    """Build the public view of ``state``."""
    return Run(
        id=state.id,
        workflow=state.workflow,
        trigger=state.trigger,
        status=state.status,
        payload=state.payload,
        context=state.context,
        current_steps=state.current_steps,
        last_error=state.last_error,
        created_at=state.created_at,
        updated_at=state.updated_at,
        version=state.version,
        replayed_from=state.replayed_from,
        idempotency_key=state.idempotency_key,
        history=state.steps if include_history else None,
        existing=existing,
    )
