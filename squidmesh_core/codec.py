"""Codec: persisted shapes to JSON-able primitives and back.

Stores keep runs as JSON (a column, a file, a dict). ``encode_*`` functions
return plain dicts of JSON values; ``decode_*`` functions return
``Result[value, UndecodableRecord]`` and never raise on bad input. Every
encoded run carries ``schema_version`` so later versions can upgrade old rows.

Times are ISO 8601 strings with offset; durations are float seconds; enums are
their string values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from returns.result import Failure, Result, Success

from squidmesh_core.errors import UndecodableRecord
from squidmesh_core.ids import IdempotencyKey, JobId, LeaseToken, RunId
from squidmesh_core.jsonvalue import JsonObject, JsonValue, check_json_object
from squidmesh_core.state import (
    SCHEMA_VERSION,
    Attempt,
    AttemptStatus,
    AuditEntry,
    Compensation,
    Job,
    JobStatus,
    OperatorCommand,
    Parked,
    ParkKind,
    RecoveryRoute,
    RecoveryStrategy,
    RunState,
    RunStatus,
    Signal,
    StepFailure,
    StepRunState,
    StepStatus,
)

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


class _Bad(Exception):
    """Internal: carries a decode problem up to the public function that reports it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


# ---------------------------------------------------------------- encode


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def encode_failure(failure: StepFailure | None) -> JsonValue:
    """Encode a :class:`StepFailure` (or ``None``)."""
    if failure is None:
        return None
    return {
        "kind": failure.kind,
        "message": failure.message,
        "retryable": failure.retryable,
        "retry_after": None if failure.retry_after is None else failure.retry_after.total_seconds(),
        "details": dict(failure.details),
    }


def encode_job(job: Job) -> dict[str, JsonValue]:
    """Encode a :class:`Job`."""
    return {
        "id": job.id,
        "run_id": job.run_id,
        "step": job.step,
        "attempt": job.attempt,
        "due_at": job.due_at.isoformat(),
        "status": job.status.value,
        "lease_token": job.lease_token,
    }


def _encode_attempt(attempt: Attempt) -> dict[str, JsonValue]:
    return {
        "number": attempt.number,
        "status": attempt.status.value,
        "job_id": attempt.job_id,
        "lease_token": attempt.lease_token,
        "started_at": attempt.started_at.isoformat(),
        "finished_at": _time(attempt.finished_at),
        "error": encode_failure(attempt.error),
        "timeout_at": _time(attempt.timeout_at),
        "worker": attempt.worker,
    }


def encode_parked(parked: Parked | None) -> JsonValue:
    """Encode how a parked step resumes (or ``None``)."""
    if parked is None:
        return None
    return {
        "kind": parked.kind.value,
        "since": parked.since.isoformat(),
        "ok_target": parked.ok_target,
        "error_target": parked.error_target,
        "output_key": parked.output_key,
        "signal": parked.signal,
        "timeout_at": _time(parked.timeout_at),
        "timeout_job": parked.timeout_job,
    }


def encode_recovery(route: RecoveryRoute | None) -> JsonValue:
    """Encode the marked error route a failed step took (or ``None``)."""
    if route is None:
        return None
    return {"strategy": route.strategy.value, "target": route.target, "at": route.at.isoformat()}


def encode_compensation(compensation: Compensation | None) -> JsonValue:
    """Encode a run's compensation record (or ``None``)."""
    if compensation is None:
        return None
    return {
        "ends_as": compensation.ends_as.value,
        "started_at": compensation.started_at.isoformat(),
        "plan": list(compensation.plan),
        "cause": encode_failure(compensation.cause),
        "finished_at": _time(compensation.finished_at),
    }


def encode_audit(entries: tuple[AuditEntry, ...]) -> list[JsonValue]:
    """Encode a run's audit trail."""
    return [
        {
            "command": e.command.value,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "note": e.note,
            "idempotency_key": e.idempotency_key,
            "outcome": dict(e.outcome),
        }
        for e in entries
    ]


def encode_signals(signals: tuple[Signal, ...]) -> list[JsonValue]:
    """Encode a run's signal inbox."""
    return [
        {
            "name": s.name,
            "payload": dict(s.payload),
            "received_at": s.received_at.isoformat(),
            "consumed_by": s.consumed_by,
        }
        for s in signals
    ]


def _encode_step(step: StepRunState) -> dict[str, JsonValue]:
    return {
        "step": step.step,
        "status": step.status.value,
        "scheduled_at": step.scheduled_at.isoformat(),
        "updated_at": step.updated_at.isoformat(),
        "input": None if step.input is None else dict(step.input),
        "output": None if step.output is None else dict(step.output),
        "error": encode_failure(step.error),
        "parked": encode_parked(step.parked),
        "replay_guard": step.replay_guard,
        "recovery": encode_recovery(step.recovery),
        "attempts": [_encode_attempt(a) for a in step.attempts],
    }


def encode_run(run: RunState) -> dict[str, JsonValue]:
    """Encode a :class:`RunState` with its steps, attempts and live jobs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "id": run.id,
        "workflow": run.workflow,
        "trigger": run.trigger,
        "status": run.status.value,
        "payload": dict(run.payload),
        "context": dict(run.context),
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "version": run.version,
        "steps": [_encode_step(s) for s in run.steps],
        "jobs": [encode_job(j) for j in run.jobs],
        "last_error": encode_failure(run.last_error),
        "replayed_from": run.replayed_from,
        "idempotency_key": run.idempotency_key,
        "audit": encode_audit(run.audit),
        "signals": encode_signals(run.signals),
        "compensation": encode_compensation(run.compensation),
    }


# ---------------------------------------------------------------- decode


class _Reader:
    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise _Bad(path, "expected an object")
        self.data = data
        self.path = path

    def _get(self, key: str) -> object:
        if key not in self.data:
            raise _Bad(f"{self.path}.{key}", "is missing")
        return self.data[key]

    def str_(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise _Bad(f"{self.path}.{key}", "expected a string")
        return value

    def opt_str(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.str_(key)

    def int_(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"{self.path}.{key}", "expected an integer")
        return value

    def bool_(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise _Bad(f"{self.path}.{key}", "expected a boolean")
        return value

    def time(self, key: str) -> datetime:
        text = self.str_(key)
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _Bad(f"{self.path}.{key}", "expected an ISO 8601 time") from exc
        if value.tzinfo is None:
            raise _Bad(f"{self.path}.{key}", "expected a time with an offset")
        return value

    def opt_time(self, key: str) -> datetime | None:
        return None if self.data.get(key) is None else self.time(key)

    def seconds(self, key: str) -> timedelta | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"{self.path}.{key}", "expected a number of seconds")
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError) as exc:
            raise _Bad(f"{self.path}.{key}", "is out of range") from exc

    def enum(self, key: str, kind: type[E]) -> E:
        text = self.str_(key)
        try:
            return kind(text)
        except ValueError as exc:
            raise _Bad(f"{self.path}.{key}", f"unknown {kind.__name__} {text!r}") from exc

    def obj(self, key: str) -> JsonObject:
        checked = check_json_object(self._get(key))
        if isinstance(checked, Failure):
            raise _Bad(f"{self.path}.{key}", checked.failure().reason)
        return checked.unwrap()

    def opt_obj(self, key: str) -> JsonObject | None:
        return None if self.data.get(key) is None else self.obj(key)

    def opt_items(self, key: str, read: Callable[[object, str], T]) -> tuple[T, ...]:
        return () if self.data.get(key) is None else self.items(key, read)

    def items(self, key: str, read: Callable[[object, str], T]) -> tuple[T, ...]:
        value = self._get(key)
        if not isinstance(value, list):
            raise _Bad(f"{self.path}.{key}", "expected a list")
        return tuple(read(item, f"{self.path}.{key}[{i}]") for i, item in enumerate(value))

    def sub(self, key: str, read: Callable[[object, str], T]) -> T | None:
        value = self.data.get(key)
        return None if value is None else read(value, f"{self.path}.{key}")


def _failure(data: object, path: str) -> StepFailure:
    r = _Reader(data, path)
    return StepFailure(
        kind=r.str_("kind"),
        message=r.str_("message"),
        retryable=r.bool_("retryable"),
        retry_after=r.seconds("retry_after"),
        details=r.obj("details"),
    )


def _job(data: object, path: str) -> Job:
    r = _Reader(data, path)
    token = r.opt_str("lease_token")
    return Job(
        id=JobId(r.str_("id")),
        run_id=RunId(r.str_("run_id")),
        step=r.str_("step"),
        attempt=r.int_("attempt"),
        due_at=r.time("due_at"),
        status=r.enum("status", JobStatus),
        lease_token=None if token is None else LeaseToken(token),
    )


def _attempt(data: object, path: str) -> Attempt:
    r = _Reader(data, path)
    return Attempt(
        number=r.int_("number"),
        status=r.enum("status", AttemptStatus),
        job_id=JobId(r.str_("job_id")),
        lease_token=LeaseToken(r.str_("lease_token")),
        started_at=r.time("started_at"),
        finished_at=r.opt_time("finished_at"),
        error=r.sub("error", _failure),
        timeout_at=r.opt_time("timeout_at"),
        worker=r.opt_str("worker"),
    )


def _parked(data: object, path: str) -> Parked:
    r = _Reader(data, path)
    job = r.opt_str("timeout_job")
    return Parked(
        kind=r.enum("kind", ParkKind),
        since=r.time("since"),
        ok_target=r.str_("ok_target"),
        error_target=r.opt_str("error_target"),
        output_key=r.opt_str("output_key"),
        signal=r.opt_str("signal"),
        timeout_at=r.opt_time("timeout_at"),
        timeout_job=None if job is None else JobId(job),
    )


def _recovery(data: object, path: str) -> RecoveryRoute:
    r = _Reader(data, path)
    return RecoveryRoute(
        strategy=r.enum("strategy", RecoveryStrategy), target=r.str_("target"), at=r.time("at")
    )


def _plan(data: object, path: str) -> str:
    if not isinstance(data, str):
        raise _Bad(path, "expected a string")
    return data


def _compensation(data: object, path: str) -> Compensation:
    r = _Reader(data, path)
    return Compensation(
        ends_as=r.enum("ends_as", RunStatus),
        started_at=r.time("started_at"),
        plan=r.items("plan", _plan),
        cause=r.sub("cause", _failure),
        finished_at=r.opt_time("finished_at"),
    )


def decode_recovery(data: object) -> Result[RecoveryRoute | None, UndecodableRecord]:
    """Decode what :func:`encode_recovery` produced."""
    return _decode(lambda d, p: _Reader({"r": d}, p).sub("r", _recovery), data)


def decode_compensation(data: object) -> Result[Compensation | None, UndecodableRecord]:
    """Decode what :func:`encode_compensation` produced."""
    return _decode(lambda d, p: _Reader({"c": d}, p).sub("c", _compensation), data)


def _audit_entry(data: object, path: str) -> AuditEntry:
    r = _Reader(data, path)
    return AuditEntry(
        command=r.enum("command", OperatorCommand),
        at=r.time("at"),
        actor=r.opt_str("actor"),
        note=r.opt_str("note"),
        idempotency_key=r.opt_str("idempotency_key"),
        outcome=r.obj("outcome"),
    )


def _signal(data: object, path: str) -> Signal:
    r = _Reader(data, path)
    return Signal(
        name=r.str_("name"),
        payload=r.obj("payload"),
        received_at=r.time("received_at"),
        consumed_by=r.opt_str("consumed_by"),
    )


def decode_audit(data: object) -> Result[tuple[AuditEntry, ...], UndecodableRecord]:
    """Decode what :func:`encode_audit` produced."""
    return _decode(lambda d, p: _Reader({"audit": d}, p).items("audit", _audit_entry), data)


def _step(data: object, path: str) -> StepRunState:
    r = _Reader(data, path)
    return StepRunState(
        step=r.str_("step"),
        status=r.enum("status", StepStatus),
        scheduled_at=r.time("scheduled_at"),
        updated_at=r.time("updated_at"),
        input=r.opt_obj("input"),
        output=r.opt_obj("output"),
        error=r.sub("error", _failure),
        attempts=r.items("attempts", _attempt),
        parked=r.sub("parked", _parked),
        replay_guard=r.opt_str("replay_guard"),
        recovery=r.sub("recovery", _recovery),
    )


def _run(data: object, path: str) -> RunState:
    r = _Reader(data, path)
    version = r.int_("schema_version")
    if version not in (1, 2, 3, SCHEMA_VERSION):  # older records lack what later versions added
        raise _Bad(f"{path}.schema_version", f"unsupported schema version {version}")
    replayed = r.opt_str("replayed_from")
    key = r.opt_str("idempotency_key")
    return RunState(
        id=RunId(r.str_("id")),
        workflow=r.str_("workflow"),
        trigger=r.str_("trigger"),
        status=r.enum("status", RunStatus),
        payload=r.obj("payload"),
        context=r.obj("context"),
        created_at=r.time("created_at"),
        updated_at=r.time("updated_at"),
        version=r.int_("version"),
        steps=r.items("steps", _step),
        jobs=r.items("jobs", _job),
        last_error=r.sub("last_error", _failure),
        replayed_from=None if replayed is None else RunId(replayed),
        idempotency_key=None if key is None else IdempotencyKey(key),
        audit=r.opt_items("audit", _audit_entry),
        signals=r.opt_items("signals", _signal),
        compensation=r.sub("compensation", _compensation),
    )


def _decode(read: Callable[[object, str], T], data: object) -> Result[T, UndecodableRecord]:
    try:
        return Success(read(data, "$"))
    except _Bad as bad:
        return Failure(UndecodableRecord(path=bad.path, reason=bad.reason))
    except (OverflowError, ValueError) as exc:  # out-of-range values anywhere else
        return Failure(UndecodableRecord(path="$", reason=f"out of range: {exc}"))


def decode_run(data: object) -> Result[RunState, UndecodableRecord]:
    """Decode what :func:`encode_run` produced."""
    return _decode(_run, data)


def decode_job(data: object) -> Result[Job, UndecodableRecord]:
    """Decode what :func:`encode_job` produced."""
    return _decode(_job, data)


def decode_failure(data: object) -> Result[StepFailure, UndecodableRecord]:
    """Decode what :func:`encode_failure` produced (must not be ``None``)."""
    return _decode(_failure, data)
