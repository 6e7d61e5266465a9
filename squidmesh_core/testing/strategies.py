"""Hypothesis strategies for definitions, payloads, failures, events and states.

Shipped with the core (like ``zarr.testing``) so backends and users can reuse
them. Generated workflows are always valid; generated states are *reachable*:
they are produced by folding generated events through ``decide``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st
from pydantic import BaseModel

from squidmesh_core.decide import decide
from squidmesh_core.definition import COMPLETE, FAIL, StepSpec, WorkflowDefinition
from squidmesh_core.dsl import (
    approval,
    error,
    log,
    manual,
    ok,
    pause,
    step,
    wait,
    wait_for_signal,
    workflow,
)
from squidmesh_core.events import (
    CancelRequested,
    Event,
    JobDelivered,
    LeaseExpired,
    RunRequested,
    StepFailed,
    StepSucceeded,
)
from squidmesh_core.ids import LeaseToken, RunId
from squidmesh_core.jsonvalue import JsonValue
from squidmesh_core.retry import Backoff, Exponential, Fixed, Linear, Retry
from squidmesh_core.state import JobStatus, RunState, StepFailure

STEP_NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


class SamplePayload(BaseModel):
    """The payload contract every generated workflow uses."""

    account: str
    amount: int = 0


class SampleSignal(BaseModel):
    """The payload every generated signal step (signal ``go``) takes."""

    code: str


SAMPLE_SIGNAL = "go"


def sample_handler(data: object, ctx: object) -> dict[str, JsonValue]:
    """A handler that is never called by the core; it only has to be callable."""
    return {}


SAFE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
"""Characters every store accepts: no NUL, no lone surrogate."""

run_ids = st.uuids().map(lambda u: RunId(str(u)))
utc_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
whole_ms = st.integers(min_value=1, max_value=10_000_000).map(lambda ms: timedelta(milliseconds=ms))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(SAFE_CHARS, max_size=20),
)
json_keys = st.text(SAFE_CHARS, min_size=1, max_size=8)
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(json_keys, inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=5)
payloads = st.builds(
    lambda account, amount: {"account": account, "amount": amount},
    st.text(SAFE_CHARS, max_size=10),
    st.integers(min_value=0, max_value=10**6),
)


def backoffs(*, jitter: bool = True) -> st.SearchStrategy[Backoff]:
    """Valid backoffs; ``jitter=False`` keeps delays predictable for the reference model."""
    jitters = st.floats(min_value=0, max_value=1) if jitter else st.just(0.0)

    @st.composite
    def exponential(draw: st.DrawFn) -> Backoff:
        low = draw(whole_ms)
        high = low + draw(st.integers(0, 10_000_000).map(lambda ms: timedelta(milliseconds=ms)))
        factor = draw(st.sampled_from([1.0, 1.5, 2.0, 3.0]))
        return Exponential(min=low, max=high, factor=factor, jitter=draw(jitters))

    @st.composite
    def linear(draw: st.DrawFn) -> Backoff:
        low = draw(whole_ms)
        high = low + draw(st.integers(0, 10_000_000).map(lambda ms: timedelta(milliseconds=ms)))
        inc = draw(st.integers(0, 100_000).map(lambda ms: timedelta(milliseconds=ms)))
        return Linear(min=low, step=inc, max=high, jitter=draw(jitters))

    fixed = st.builds(lambda d, j: Fixed(delay=d, jitter=j), whole_ms, jitters)
    return st.one_of(exponential(), linear(), fixed)


def retries(*, jitter: bool = True) -> st.SearchStrategy[Retry | None]:
    """No policy, or a policy of 1 to 5 attempts with an optional backoff."""
    return st.one_of(
        st.none(),
        st.builds(
            lambda n, b: Retry(max_attempts=n, backoff=b),
            st.integers(min_value=1, max_value=5),
            st.none() | backoffs(jitter=jitter),
        ),
    )


step_failures = st.builds(
    lambda kind, message, retryable, after, details: StepFailure(
        kind=kind, message=message, retryable=retryable, retry_after=after, details=details
    ),
    st.sampled_from(["exception", "step_failed", "http"]),
    st.text(max_size=20).filter(lambda t: "\x00" not in t),
    st.booleans(),
    st.none() | st.integers(0, 600_000).map(lambda ms: timedelta(milliseconds=ms)),
    st.dictionaries(st.sampled_from(["status", "type"]), json_scalars, max_size=2),
)


@st.composite
def _step_specs(
    draw: st.DrawFn, names: tuple[str, ...], *, jitter: bool, people: bool = False
) -> list[StepSpec]:
    kinds = ["action", "action", "action", "wait", "log"]
    if people:
        kinds += ["pause", "approval", "signal"]
    specs: list[StepSpec] = []
    for index, name in enumerate(names):
        kind = draw(st.sampled_from(kinds))
        if kind == "pause":
            specs.append(pause(name, output=draw(st.none() | st.just("held"))))
        elif kind == "approval":
            specs.append(approval(name))
        elif kind == "signal":
            timeout = draw(st.none() | whole_ms)
            later = (*names[index + 1 :], COMPLETE, FAIL)
            on_timeout = draw(st.none() | st.sampled_from(later)) if timeout else None
            specs.append(
                wait_for_signal(
                    name,
                    SAMPLE_SIGNAL,
                    payload=SampleSignal,
                    timeout=timeout,
                    on_timeout=on_timeout,
                )
            )
        elif kind == "wait":
            specs.append(wait(name, draw(whole_ms)))
        elif kind == "log":
            specs.append(log(name, f"{name} reached"))
        else:
            output = draw(st.none() | st.sampled_from(["result", "out"]))
            marker = draw(st.sampled_from(["none", "none", "none", "irreversible", "final"]))
            undo = marker != "final" and draw(st.booleans())
            specs.append(
                step(
                    name,
                    sample_handler,
                    output=output,
                    retry=draw(retries(jitter=jitter)),
                    irreversible=marker == "irreversible",
                    compensatable=marker != "final",
                    timeout=draw(st.none() | st.none() | whole_ms),
                    compensate=sample_handler if undo else None,
                    compensate_retry=draw(retries(jitter=jitter)) if undo else None,
                )
            )
    return specs


@st.composite
def transition_workflows(
    draw: st.DrawFn, *, jitter: bool = True, people: bool = False
) -> WorkflowDefinition:
    """A chain of 1-5 steps with optional ``error`` routes forward or to ``complete``.

    With ``people``, steps may also be pauses, approvals and waits for signal
    ``go`` (with or without a timeout, which may lead to a later step).
    """
    n = draw(st.integers(min_value=1, max_value=5))
    names = STEP_NAMES[:n]
    specs = draw(_step_specs(names, jitter=jitter, people=people))
    last = draw(st.sampled_from([COMPLETE, COMPLETE, FAIL, None]))  # None: no route at all
    routes = [ok(a, b) for a, b in zip(names, (*names[1:], last or COMPLETE), strict=True)]
    if last is None:
        routes.pop()  # the last step has no route: its success completes the run
    for index, name in enumerate(names):
        if draw(st.booleans()) and (last is not None or index < len(names) - 1):
            ends = (*names[index + 1 :], COMPLETE, FAIL)
            marker = draw(st.sampled_from([None, None, "compensation", "undo"]))
            routes.append(error(name, draw(st.sampled_from(ends)), recovery=marker))
    return workflow(
        "sample.transitions",
        triggers=[manual("start", payload=SamplePayload)],
        steps=specs,
        transitions=routes,
        deadline=draw(st.none() | st.none() | whole_ms),
        compensate_on_cancel=draw(st.booleans()),
    )


@st.composite
def dependency_workflows(draw: st.DrawFn, *, jitter: bool = True) -> WorkflowDefinition:
    """A DAG of 1-5 steps; each step depends on a subset of the steps declared before it."""
    n = draw(st.integers(min_value=1, max_value=5))
    names = STEP_NAMES[:n]
    specs = []
    for index, spec in enumerate(draw(_step_specs(names, jitter=jitter))):
        earlier = names[:index]
        after = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        specs.append(replace(spec, after=tuple(after)))
    if all(not s.after for s in specs):
        return draw(transition_workflows(jitter=jitter))
    return workflow(
        "sample.dependencies",
        triggers=[manual("start", payload=SamplePayload)],
        steps=specs,
        deadline=draw(st.none() | st.none() | whole_ms),
        compensate_on_cancel=draw(st.booleans()),
    )


def workflows(
    *, jitter: bool = True, people: bool = False
) -> st.SearchStrategy[WorkflowDefinition]:
    """Valid workflows of either shape (``people``: transition ones may park, see above)."""
    return st.one_of(
        transition_workflows(jitter=jitter, people=people), dependency_workflows(jitter=jitter)
    )


@st.composite
def event_for(draw: st.DrawFn, state: RunState, token_seed: int) -> Event:
    """A plausible next event for ``state`` (valid most of the time, stale sometimes)."""
    choices: list[Event] = [CancelRequested()]
    for job in state.jobs:
        token = LeaseToken(f"lease-{token_seed}")
        if job.status is JobStatus.SCHEDULED:
            worker = f"worker-{token_seed % 3}" if token_seed % 4 else None
            choices.append(JobDelivered(job_id=job.id, lease_token=token, worker=worker))
        elif job.lease_token is not None:
            held = job.lease_token
            choices.extend(
                [
                    StepSucceeded(job_id=job.id, lease_token=held, output=draw(json_objects)),
                    StepFailed(job_id=job.id, lease_token=held, failure=draw(step_failures)),
                    LeaseExpired(job_id=job.id, lease_token=held),
                    JobDelivered(job_id=job.id, lease_token=held),
                ]
            )
    return draw(st.sampled_from(choices))


@st.composite
def run_states(draw: st.DrawFn, max_events: int = 12) -> tuple[WorkflowDefinition, RunState]:
    """A workflow and a reachable state of one of its runs."""
    definition = draw(workflows())
    now = draw(utc_times)
    started = decide(
        definition,
        None,
        RunRequested(run_id=draw(run_ids), payload=draw(payloads)),
        now=now,
    ).unwrap()
    state = started.state
    for seed in range(draw(st.integers(0, max_events))):
        event = draw(event_for(state, seed))
        now = now + draw(st.integers(0, 120_000).map(lambda ms: timedelta(milliseconds=ms)))
        result = decide(definition, state, event, now=now)
        state = result.map(lambda d: d.state).value_or(state)
    return definition, state
