"""Named regressions from the review of the issue 16 work."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest

from squidmesh_backends import ConfigurationError, RuntimeSettings, TimeSkippingRuntime, compose
from squidmesh_backends.runtime import InProcessExecutor
from squidmesh_core import (
    InvalidWorkflowError,
    Recheck,
    Retry,
    RunStatus,
    StepContext,
    StepFailure,
    chain,
    manual,
    step,
    workflow,
)
from squidmesh_core.protocol import CancelRequested, Emit, Topic, TriggerSpec
from tests.unit.helpers import Driver, handler


def test_a_lost_attempt_of_a_step_with_a_short_timeout_is_lost_not_timed_out() -> None:
    flow = workflow(
        "regress.lost_timeout",
        triggers=[manual()],
        steps=[step("a", handler, timeout=timedelta(seconds=10))],
    )
    d = Driver(flow)
    d.deliver("a")
    d.advance(timedelta(seconds=30))  # the lease (30 s) outlives the timeout (10 s)
    d.expire("a")
    a = d.state.step_run("a")
    assert a is not None and a.attempts[0].status.value == "lost"
    assert d.status() is RunStatus.RETRYING  # re-run without a retry policy


def test_cancelling_a_run_with_a_deadline_still_waits_for_the_running_attempt() -> None:
    flow = workflow(
        "regress.cancel_deadline",
        triggers=[manual()],
        steps=[step("a", handler)],
        deadline=timedelta(hours=1),
    )
    d = Driver(flow)
    d.deliver("a")
    d.accept(CancelRequested())
    assert d.status() is RunStatus.CANCELLING
    [deadline] = [j for j in d.state.jobs if j.step == "__deadline__"]
    assert deadline.due_at > d.now  # not moved to now by the cancel
    d.succeed("a")
    assert d.status() is RunStatus.CANCELLED


async def test_a_malformed_recheck_is_an_invalid_output_not_a_crash() -> None:
    async def bad(data: dict[str, object]) -> object:
        return Recheck(after=60)  # type: ignore[arg-type]  # seconds, not a timedelta

    flow = workflow("regress.recheck", triggers=[manual()], steps=[step("bad", bad)])
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "invalid_output"
    assert done.history is not None and len(done.history[0].attempts) == 1


async def test_explain_names_a_missed_deadline_and_counts_failed_attempts_only() -> None:
    from squidmesh_core import chain, wait

    slow = workflow(
        "regress.deadline_explain",
        triggers=[manual()],
        steps=[wait("nap", timedelta(hours=2)), step("after", handler)],
        transitions=chain("nap", "after"),
        deadline=timedelta(hours=1),
    )
    rt = TimeSkippingRuntime(workflows=[slow])
    run = (await rt.start_run(slow, {})).unwrap()
    await rt.run_until_complete(run.id)
    explained = (await rt.explain_run(run.id)).unwrap()
    assert explained.reason == "deadline_exceeded"
    d = Driver(
        workflow(
            "regress.counts",
            triggers=[manual()],
            steps=[step("a", handler, retry=Retry(max_attempts=3))],
        )
    )
    from squidmesh_core.explain import explain
    from squidmesh_core.protocol import StepDeferred

    for _ in range(2):
        job = d.deliver("a")
        d.accept(StepDeferred(job_id=job, lease_token=d.token_of(job), after=timedelta(0)))
    d.deliver("a")
    d.fail("a", StepFailure(kind="x", message="no", retryable=False))
    e = explain(d.definition, d.state, now=d.now)
    assert e.reason == "step_failed" and e.details["attempts"] == 1


async def test_the_deadline_timer_is_not_a_step_in_events_or_history() -> None:
    seen: list[Emit] = []

    class Sink:
        def publish(self, event: Emit) -> None:
            seen.append(event)

    flow = workflow(
        "regress.deadline_events",
        triggers=[manual()],
        steps=[step("a", handler)],
        deadline=timedelta(hours=1),
    )
    rt = TimeSkippingRuntime(workflows=[flow], sinks=[Sink()])
    run = (await rt.start_run(flow, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.history is not None and [s.step for s in done.history] == ["a"]
    assert not any(e.step == "__deadline__" for e in seen if e.topic is Topic.STEP_CANCELLED)


async def test_a_handler_that_swallows_cancellation_is_abandoned_at_its_timeout() -> None:
    async def stubborn(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        if ctx.attempt == 1:
            for _ in range(40):
                with contextlib.suppress(asyncio.CancelledError):  # ignores being stopped
                    await asyncio.sleep(0.1)
        return {"ok": ctx.attempt}

    flow = workflow(
        "regress.stubborn",
        triggers=[manual()],
        steps=[
            step("s", stubborn, timeout=timedelta(milliseconds=200), retry=Retry(max_attempts=2))
        ],
    )
    rt = compose(
        workflows=[flow],
        store="memory",
        settings=RuntimeSettings(poll_interval=timedelta(milliseconds=20)),
    )
    async with rt:
        started = asyncio.get_running_loop().time()
        run = (await rt.start_run(flow, {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=10))).unwrap()
        took = asyncio.get_running_loop().time() - started
    assert done.status is RunStatus.COMPLETED and took < 2.0, took


def test_compose_refuses_an_executor_class_and_string_trigger_kinds() -> None:
    flow = workflow("regress.exec", triggers=[manual()], steps=[step("a", handler)])
    with pytest.raises(ConfigurationError, match="a class was given"):
        compose(workflows=[flow], store="memory", executor=InProcessExecutor)  # type: ignore[arg-type]
    stringly = TriggerSpec(name="t", kind="cron", expression="* * * * *")  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflowError, match="give its kind as TriggerKind"):
        workflow("regress.kind", triggers=[stringly], steps=[step("a", handler)])


async def test_regression_a_step_handed_on_inline_gets_a_lease_from_when_it_starts(
    tmp_path: object,
) -> None:
    """Review of issue 16: the next step's lease was taken before the previous step ran."""
    calls: list[int] = []

    async def slow(data: dict[str, object]) -> dict[str, object]:
        await asyncio.sleep(1.3)  # longer than the lease; heartbeats keep its own
        return {}

    async def then(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        calls.append(ctx.attempt)
        await asyncio.sleep(0.5)
        return {}

    flow = workflow(
        "regress.inline_lease",
        triggers=[manual()],
        steps=[step("a", slow), step("b", then)],
        transitions=chain("a", "b"),
    )
    settings = RuntimeSettings(
        poll_interval=timedelta(milliseconds=50),
        lease=timedelta(seconds=1),
        heartbeat_every=timedelta(milliseconds=300),
        shutdown_timeout=timedelta(seconds=2),
    )
    rt = compose(workflows=[flow], store=f"sqlite:{tmp_path}/lease.db", settings=settings)
    async with rt:
        run = (await rt.start_run(flow, {})).unwrap()
        done = (await rt.wait_for(run.id, timeout=timedelta(seconds=20))).unwrap()
    assert done.status is RunStatus.COMPLETED
    assert calls == [1]  # b ran once, on the lease it was handed
