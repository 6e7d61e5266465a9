"""Round trips of every persisted shape, and laws of decide over reachable states."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Success

from squidmesh_core import StepFailure, WorkflowDefinition
from squidmesh_core._table import RUN_TRANSITIONS, run_transition_allowed
from squidmesh_core.codec import (
    decode_failure,
    decode_job,
    decode_run,
    encode_failure,
    encode_job,
    encode_run,
)
from squidmesh_core.jsonvalue import JsonValue, check_json
from squidmesh_core.protocol import (
    CancelRequested,
    Event,
    JobDelivered,
    JobId,
    LeaseExpired,
    LeaseToken,
    ReplayRequested,
    RunState,
    ScheduleJob,
    StepFailed,
    StepSucceeded,
    decide,
)
from squidmesh_core.state import RunStatus
from squidmesh_core.testing.strategies import (
    BASE_TIME,
    json_values,
    run_ids,
    run_states,
    step_failures,
)


@given(run_states())
def test_run_state_round_trips(sample: tuple[WorkflowDefinition, RunState]) -> None:
    _, state = sample
    assert decode_run(encode_run(state)) == Success(state)
    for job in state.jobs:
        assert decode_job(encode_job(job)) == Success(job)


@given(run_states())
def test_encoded_runs_are_storable_json(sample: tuple[WorkflowDefinition, RunState]) -> None:
    _, state = sample
    assert isinstance(check_json(encode_run(state)), Success)


@given(step_failures)
def test_failures_round_trip(failure: StepFailure) -> None:
    assert decode_failure(encode_failure(failure)) == Success(failure)


@given(json_values)
def test_json_values_pass_the_check_unchanged(value: JsonValue) -> None:
    assert check_json(value) == Success(value)


def every_event(state: RunState, failure: StepFailure) -> list[Event]:
    events: list[Event] = [CancelRequested(), ReplayRequested(new_run_id=state.id)]
    for job_id in [j.id for j in state.jobs] + [JobId(f"{state.id}/ghost/1")]:
        for token in {
            LeaseToken("fresh"),
            *(LeaseToken(j.lease_token) for j in state.jobs if j.lease_token),
        }:
            events += [
                JobDelivered(job_id=job_id, lease_token=token),
                StepSucceeded(job_id=job_id, lease_token=token, output={"x": 1}),
                StepFailed(job_id=job_id, lease_token=token, failure=failure),
                LeaseExpired(job_id=job_id, lease_token=token),
            ]
    return events


@given(run_states(), step_failures)
def test_decide_never_accepts_a_change_missing_from_the_table(
    sample: tuple[WorkflowDefinition, RunState], failure: StepFailure
) -> None:
    definition, state = sample
    for event in every_event(state, failure):
        result = decide(definition, state, event, now=BASE_TIME)
        if isinstance(result, Success) and not isinstance(event, ReplayRequested):
            assert run_transition_allowed(state.status, result.unwrap().state.status)


@given(run_states(), step_failures)
def test_terminal_states_absorb_every_later_event(
    sample: tuple[WorkflowDefinition, RunState], failure: StepFailure
) -> None:
    definition, state = sample
    if not state.status.terminal:
        return
    for event in every_event(state, failure):
        if isinstance(event, ReplayRequested):
            continue
        result = decide(definition, state, event, now=BASE_TIME)
        if isinstance(result, Success):
            decision = result.unwrap()
            assert decision.state.status == state.status
            assert not any(isinstance(c, ScheduleJob) for c in decision.commands)


@given(run_states(), run_ids)
def test_replay_never_touches_the_source(
    sample: tuple[WorkflowDefinition, RunState], new_id: str
) -> None:
    definition, state = sample
    event = ReplayRequested(new_run_id=new_id, allow_irreversible=True)  # type: ignore[arg-type]
    decision = decide(definition, state, event, now=BASE_TIME).unwrap()
    assert decision.state.replayed_from == state.id
    assert decision.state.id != state.id and decision.state.version == 1


def test_every_status_appears_in_the_table() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert all(not RUN_TRANSITIONS[s] for s in RunStatus if s.terminal)


@given(st.sampled_from(list(RunStatus)), st.sampled_from(list(RunStatus)))
def test_table_is_the_only_authority(src: RunStatus, dst: RunStatus) -> None:
    assert run_transition_allowed(src, dst) == (src == dst or dst in RUN_TRANSITIONS[src])
