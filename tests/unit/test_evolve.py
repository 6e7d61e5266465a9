"""``evolve`` makes exactly the copies ``dataclasses.replace`` would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from squidmesh_core._evolve import evolve
from squidmesh_core.ids import JobId, LeaseToken, RunId
from squidmesh_core.state import Attempt, AttemptStatus, RunState, RunStatus, StepFailure

RUN = RunState(
    id=RunId("00000000-0000-4000-8000-000000000001"),
    workflow="w",
    trigger="manual",
    status=RunStatus.PENDING,
    payload={"a": 1},
    context={},
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 1, tzinfo=UTC),
)


@given(
    status=st.sampled_from(list(RunStatus)),
    version=st.integers(1, 10**6),
    context=st.dictionaries(st.text(max_size=5), st.integers()),
)
def test_copies_equal_dataclasses_replace(
    status: RunStatus, version: int, context: dict[str, int]
) -> None:
    changes = {"status": status, "version": version, "context": context}
    made = evolve(RUN, **changes)
    assert made == dataclasses.replace(RUN, **changes)  # type: ignore[arg-type]
    assert type(made) is RunState
    assert RUN.status is RunStatus.PENDING  # the original is untouched


def test_nested_values_and_defaults_are_carried_over() -> None:
    attempt = Attempt(
        number=1,
        status=AttemptStatus.RUNNING,
        job_id=JobId("j"),
        lease_token=LeaseToken("t"),
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    failed = evolve(attempt, status=AttemptStatus.FAILED, error=StepFailure(kind="x", message="y"))
    assert failed == dataclasses.replace(
        attempt, status=AttemptStatus.FAILED, error=StepFailure(kind="x", message="y")
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        failed.number = 2  # type: ignore[misc]


def test_unknown_fields_and_non_dataclasses_are_refused() -> None:
    with pytest.raises(TypeError, match="has no field 'colour'"):
        evolve(RUN, colour="red")
    with pytest.raises(TypeError, match="not a dataclass"):
        evolve(object())
