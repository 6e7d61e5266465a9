"""``combine``: two decisions committed as one change of one version."""

from __future__ import annotations

import pytest

from squidmesh_core.commands import Decision, Emit, ScheduleJob, combine
from squidmesh_core.decide import decide
from squidmesh_core.events import JobDelivered, StepSucceeded
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.state import JobStatus
from squidmesh_core.testing.contracts.run_store import FLOW, T0, new_run


def _outcome_and_start() -> tuple[Decision, Decision]:
    created = new_run(1)
    first = JobId(f"{created.state.id}/first/1")
    started = decide(
        FLOW, created.state, JobDelivered(job_id=first, lease_token=LeaseToken("t1")), now=T0
    ).unwrap()
    outcome = decide(
        FLOW,
        started.state,
        StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={"a": 1}),
        now=T0,
    ).unwrap()
    pause = JobId(f"{created.state.id}/pause/1")
    nxt = decide(
        FLOW, outcome.state, JobDelivered(job_id=pause, lease_token=LeaseToken("t2")), now=T0
    ).unwrap()
    return outcome, nxt


def test_the_combined_decision_is_one_version_with_both_command_lists() -> None:
    outcome, nxt = _outcome_and_start()
    both = combine(outcome, nxt)
    assert both.state.version == outcome.state.version
    assert both.expected_version == outcome.expected_version
    assert both.started == nxt.started
    fields = ("status", "steps", "jobs", "context")
    same = {f: getattr(nxt.state, f) for f in fields}
    assert {f: getattr(both.state, f) for f in same} == same
    emitted = [e.topic for e in both.commands if isinstance(e, Emit)]
    assert emitted == [e.topic for e in outcome.emitted + nxt.emitted]


def test_a_job_scheduled_then_started_is_inserted_started() -> None:
    outcome, nxt = _outcome_and_start()
    both = combine(outcome, nxt)
    (scheduled,) = [c.job for c in both.commands if isinstance(c, ScheduleJob)]
    assert scheduled.status is JobStatus.STARTED
    assert scheduled.lease_token == "t2"


def test_decisions_that_do_not_follow_each_other_are_refused() -> None:
    outcome, nxt = _outcome_and_start()
    with pytest.raises(ValueError, match="first one's state"):
        combine(nxt, outcome)
