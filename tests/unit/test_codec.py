from __future__ import annotations

from datetime import timedelta

import pytest
from returns.result import Failure, Success

from squidmesh_core import COMPLETE, Retry, StepFailure, chain, manual, step, workflow
from squidmesh_core.codec import (
    decode_failure,
    decode_job,
    decode_run,
    encode_failure,
    encode_job,
    encode_run,
)
from squidmesh_core.protocol import UndecodableRecord
from tests.unit.helpers import Driver, handler


def sample() -> Driver:
    wf = workflow(
        "codec.sample",
        triggers=[manual()],
        steps=[step("a", handler, retry=Retry(max_attempts=2))],
        transitions=chain("a", COMPLETE),
    )
    d = Driver(wf, idempotency_key="k")
    d.deliver(worker="host-a:41")
    d.fail(failure=StepFailure(kind="http", message="503", retry_after=timedelta(seconds=2)))
    d.deliver()
    return d


def test_each_attempt_keeps_the_worker_it_was_delivered_to() -> None:
    [a] = sample().state.steps
    assert [attempt.worker for attempt in a.attempts] == ["host-a:41", None]


def test_run_round_trips() -> None:
    state = sample().state
    assert decode_run(encode_run(state)) == Success(state)


def test_job_and_failure_round_trip() -> None:
    state = sample().state
    assert decode_job(encode_job(state.jobs[0])) == Success(state.jobs[0])
    failure = StepFailure(kind="x", message="y", retryable=False, details={"a": [1]})
    assert decode_failure(encode_failure(failure)) == Success(failure)


def mutate(path: list[str | int], value: object) -> dict[str, object]:
    encoded: dict[str, object] = encode_run(sample().state)  # type: ignore[assignment]
    target: object = encoded
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    return encoded


@pytest.mark.parametrize(
    ("path", "value", "where", "why"),
    [
        (["schema_version"], 99, "$.schema_version", "unsupported schema version 99"),
        (["status"], "sleeping", "$.status", "unknown RunStatus 'sleeping'"),
        (["created_at"], "yesterday", "$.created_at", "expected an ISO 8601 time"),
        (["created_at"], "2026-01-01T00:00:00", "$.created_at", "expected a time with an offset"),
        (["version"], "1", "$.version", "expected an integer"),
        (["version"], True, "$.version", "expected an integer"),
        (["payload"], [], "$.payload", "is a list, expected an object"),
        (["steps"], {}, "$.steps", "expected a list"),
        (
            ["steps", 0, "attempts", 0, "number"],
            None,
            "$.steps[0].attempts[0].number",
            "expected an integer",
        ),
        (
            ["steps", 0, "error", "retryable"],
            "yes",
            "$.steps[0].error.retryable",
            "expected a boolean",
        ),
        (
            ["steps", 0, "error", "retry_after"],
            "2s",
            "$.steps[0].error.retry_after",
            "expected a number of seconds",
        ),
        (["jobs", 0, "status"], "done", "$.jobs[0].status", "unknown JobStatus 'done'"),
        (["workflow"], 5, "$.workflow", "expected a string"),
    ],
)
def test_bad_records_are_reported_with_their_path(
    path: list[str | int], value: object, where: str, why: str
) -> None:
    assert decode_run(mutate(path, value)) == Failure(UndecodableRecord(path=where, reason=why))


def test_an_attempt_written_before_workers_were_recorded_has_none() -> None:
    encoded = mutate(["schema_version"], 3)
    for attempt in encoded["steps"][0]["attempts"]:  # type: ignore[index]
        del attempt["worker"]
    decoded = decode_run(encoded).unwrap()
    assert [a.worker for a in decoded.steps[0].attempts] == [None, None]


def test_missing_key_is_reported() -> None:
    encoded = encode_run(sample().state)
    del encoded["trigger"]
    assert decode_run(encoded) == Failure(UndecodableRecord(path="$.trigger", reason="is missing"))


def test_non_object_is_reported() -> None:
    assert decode_run("run") == Failure(UndecodableRecord(path="$", reason="expected an object"))


def test_out_of_range_durations_are_reported() -> None:
    encoded = encode_failure(StepFailure(kind="k", message="m", retry_after=None))
    assert isinstance(encoded, dict)
    encoded["retry_after"] = 1e300
    assert decode_failure(encoded) == Failure(
        UndecodableRecord(path="$.retry_after", reason="is out of range")
    )
