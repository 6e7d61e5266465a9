"""The persisted shape of a run in PostgreSQL's tables: rows out, JSON back in.

A run is written as a ``squidmesh_runs`` row and rows of ``squidmesh_step_runs``,
``squidmesh_attempts`` and ``squidmesh_jobs``; it is read back in one statement
that rebuilds the steps and jobs as the JSON :mod:`squidmesh_core.codec` decodes.
The field names of that JSON are named here, once: :data:`STEP_FIELDS`,
:data:`ATTEMPT_FIELDS` and :data:`JOB_FIELDS` map each codec field to the column
it comes from (``_sql`` builds its ``json_build_object`` calls from them), and
:data:`RUN_FIELDS` are the run-level fields :func:`decode_run_row` hands the
codec. ``tests/unit/test_postgres_plan.py`` checks all four against the codec's
own encoding, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from psycopg.types.json import Json
from returns.result import Failure

from squidmesh_backends.errors import BackendError
from squidmesh_core.codec import (
    decode_run,
    encode_audit,
    encode_compensation,
    encode_failure,
    encode_parked,
    encode_recovery,
    encode_signals,
)
from squidmesh_core.ids import RunId
from squidmesh_core.jsonvalue import JsonObject, JsonValue, dump_json
from squidmesh_core.state import (
    SCHEMA_VERSION,
    Attempt,
    Job,
    RunState,
    StepFailure,
    StepRunState,
)

# ---------------------------------------------------------------- the JSON shape

STEP_FIELDS: Final = (
    ("step", "s.step"),
    ("status", "s.status"),
    ("scheduled_at", "s.scheduled_at"),
    ("updated_at", "s.updated_at"),
    ("input", "s.input"),
    ("output", "s.output"),
    ("error", "s.error"),
    ("parked", "s.parked"),
    ("replay_guard", "s.replay_guard"),
    ("recovery", "s.recovery"),
)
"""Codec field of a step, and the ``squidmesh_step_runs s`` column it is read from."""
STEP_ATTEMPTS: Final = "attempts"
"""The codec field holding a step's attempts (built from :data:`ATTEMPT_FIELDS`)."""
ATTEMPT_FIELDS: Final = (
    ("number", "a.number"),
    ("status", "a.status"),
    ("job_id", "a.job_id"),
    ("lease_token", "a.lease_token"),
    ("started_at", "a.started_at"),
    ("finished_at", "a.finished_at"),
    ("error", "a.error"),
    ("timeout_at", "a.timeout_at"),
    ("worker", "a.worker"),
)
"""Codec field of an attempt, and the ``squidmesh_attempts a`` column it is read from."""
JOB_FIELDS: Final = (
    ("id", "j.id"),
    ("run_id", "j.run_id"),
    ("step", "j.step"),
    ("attempt", "j.attempt"),
    ("due_at", "j.due_at"),
    ("status", "j.state"),
    ("lease_token", "j.started_token"),
)
"""Codec field of a job, and the ``squidmesh_jobs j`` column it is read from.

A job's ``lease_token`` in the run is the token its attempt *started* under
(``started_token``); the row's ``lease_token`` column is the current lease.
"""
RUN_FIELDS: Final = (
    "schema_version", "id", "workflow", "trigger", "status", "payload", "context",
    "created_at", "updated_at", "version", "steps", "jobs", "last_error", "replayed_from",
    "idempotency_key", "audit", "signals", "compensation",
)  # fmt: skip
"""The run-level codec fields :func:`decode_run_row` fills."""


# ---------------------------------------------------------------- rows out


def as_json(value: JsonObject | StepFailure | None) -> Json | None:
    """A JSON parameter (``None`` stays SQL ``NULL``)."""
    if value is None:
        return None
    if isinstance(value, StepFailure):
        return Json(encode_failure(value), dumps=_dump)
    return Json(dict(value), dumps=_dump)


def as_json_list(values: list[JsonValue]) -> Json | None:
    """A JSON array parameter; an empty one is stored as SQL ``NULL`` (no bytes written)."""
    return Json(values, dumps=_dump) if values else None


def _dump(value: object) -> str:
    # The text the size limits count (JsonLimits); psycopg hands any object here.
    return dump_json(cast(JsonValue, value))


def run_row(state: RunState) -> Sequence[object]:
    """The ``squidmesh_runs`` columns of ``state`` (without ``last_commit``)."""
    return (
        state.id,
        state.workflow,
        state.trigger,
        state.status.value,
        state.version,
        as_json(state.payload),
        as_json(state.context),
        state.created_at,
        state.updated_at,
        as_json(state.last_error),
        state.replayed_from,
        state.idempotency_key,
        as_json_list(encode_audit(state.audit)),
        as_json_list(encode_signals(state.signals)),
        encoded_json(encode_compensation(state.compensation)),
    )


def encoded_json(encoded: JsonValue) -> Json | None:
    """An encoded record as a JSON parameter (``None`` stays SQL ``NULL``)."""
    return None if encoded is None else Json(encoded, dumps=_dump)


def step_row(run_id: RunId, position: int, step: StepRunState) -> Sequence[object]:
    """A ``squidmesh_step_runs`` row: key (run, step), position, then the values."""
    return (
        run_id,
        step.step,
        position,
        step.status.value,
        step.scheduled_at,
        step.updated_at,
        as_json(step.input),
        as_json(step.output),
        as_json(step.error),
        encoded_json(encode_parked(step.parked)),
        step.replay_guard,
        encoded_json(encode_recovery(step.recovery)),
    )


def attempt_row(run_id: RunId, step: str, attempt: Attempt) -> Sequence[object]:
    """A ``squidmesh_attempts`` row: key (run, step, number), then the values."""
    return (
        run_id,
        step,
        attempt.number,
        attempt.status.value,
        attempt.job_id,
        attempt.lease_token,
        attempt.started_at,
        attempt.finished_at,
        as_json(attempt.error),
        attempt.timeout_at,
        attempt.worker,
    )


def job_row(job: Job) -> Sequence[object]:
    """The ``squidmesh_jobs`` columns a job's state fills (the lease columns come apart)."""
    return (
        job.id,
        job.run_id,
        job.step,
        job.attempt,
        job.due_at,
        job.status.value,
        job.lease_token,
    )


@dataclass(frozen=True, slots=True)
class Rows:
    """Step and attempt rows a decision writes: new ones, and ones that changed."""

    new_steps: list[Sequence[object]]
    changed_steps: list[Sequence[object]]
    new_attempts: list[Sequence[object]]
    changed_attempts: list[Sequence[object]]


def changed_rows(state: RunState, base: RunState | None) -> Rows:
    """Step and attempt rows of ``state`` that differ from ``base`` (all new without one).

    A step that is the very object of ``base`` is unchanged without looking
    inside: the core keeps the steps a decision did not touch.
    """
    before = {} if base is None else {s.step: s for s in base.steps}
    rows = Rows([], [], [], [])
    for position, step in enumerate(state.steps):
        old = before.get(step.step)
        if old is step:
            continue
        if old is None:
            rows.new_steps.append(step_row(state.id, position, step))
        elif (
            old.status != step.status
            or old.scheduled_at != step.scheduled_at
            or old.updated_at != step.updated_at
            or old.input != step.input
            or old.output != step.output
            or old.error != step.error
            or old.parked != step.parked
            or old.replay_guard != step.replay_guard
            or old.recovery != step.recovery
        ):
            rows.changed_steps.append(step_row(state.id, position, step))
        previous = {} if old is None else {a.number: a for a in old.attempts}
        for attempt in step.attempts:
            was = previous.get(attempt.number)
            if was is None:
                rows.new_attempts.append(attempt_row(state.id, step.step, attempt))
            elif was != attempt:
                rows.changed_attempts.append(attempt_row(state.id, step.step, attempt))
    return rows


# ---------------------------------------------------------------- JSON back in


def decode_run_row(row: Sequence[Any]) -> RunState:
    """A run from a row of ``Statements.load``, handed to the codec under :data:`RUN_FIELDS`.

    Raises:
        BackendError: the stored run does not decode.
    """
    (run_id, workflow, trigger, status, version, payload, context, created_at, updated_at,
     last_error, replayed_from, key, audit, signals, compensation, steps,
     jobs) = row  # fmt: skip
    values = (
        SCHEMA_VERSION,
        str(run_id),
        workflow,
        trigger,
        status,
        payload,
        context,
        as_datetime(created_at).isoformat(),
        as_datetime(updated_at).isoformat(),
        version,
        steps,
        jobs,
        last_error,
        None if replayed_from is None else str(replayed_from),
        key,
        audit,
        signals,
        compensation,
    )
    data = dict(zip(RUN_FIELDS, values, strict=True))
    decoded = decode_run(data)
    if isinstance(decoded, Failure):
        raise BackendError(f"stored run {run_id} does not decode: {decoded.failure()}")
    return decoded.unwrap()


def as_datetime(value: object) -> datetime:
    """``value`` as a timestamp, or ``BackendError`` when PostgreSQL sent something else."""
    if not isinstance(value, datetime):
        raise BackendError(f"expected a timestamp from PostgreSQL, got {type(value).__name__}")
    return value
