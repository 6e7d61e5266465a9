"""Which failures a step reports retry, and what they keep; definition checks that go with them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from returns.result import Failure

from squidmesh_backends import ConfigurationError, TimeSkippingRuntime, compose
from squidmesh_core import (
    COMPLETE,
    InvalidWorkflowError,
    NonRetryableError,
    Retry,
    RunStatus,
    chain,
    cron,
    manual,
    step,
    workflow,
)
from squidmesh_core.protocol import Emit, Topic, TriggerSpec
from squidmesh_core.views import Run

THREE = Retry(max_attempts=3)


class Declined(Exception):
    code = "card_declined"


async def run_once(handler: object, retry: Retry | None = THREE) -> Run:
    flow = workflow(
        "failures.flow",
        triggers=[manual()],
        steps=[step("act", handler, retry=retry)],  # type: ignore[arg-type]
        transitions=chain("act", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    return await rt.run_until_complete(run.id)


def attempts(run: Run) -> int:
    assert run.history is not None
    return len(run.history[0].attempts)


async def test_our_non_retryable_error_is_never_retried_and_keeps_its_code() -> None:
    def act(data: object) -> None:
        raise NonRetryableError("account closed", code="account_closed")

    done = await run_once(act)
    assert done.status is RunStatus.FAILED and attempts(done) == 1
    assert done.last_error is not None and not done.last_error.retryable
    assert done.last_error.details["code"] == "account_closed"
    assert done.last_error.details["type"] == "squidmesh_core.errors.NonRetryableError"


async def test_a_policy_names_the_exceptions_that_retry_and_those_that_do_not() -> None:
    def key_error(data: object) -> None:
        raise KeyError("missing")

    def value_error(data: object) -> None:
        raise ValueError("bad")

    no_keys = Retry(max_attempts=3, no_retry_on=(KeyError,))
    assert attempts(await run_once(key_error, no_keys)) == 1
    assert attempts(await run_once(value_error, no_keys)) == 3
    only_timeouts = Retry(max_attempts=3, retry_on=(TimeoutError,))
    assert attempts(await run_once(value_error, only_timeouts)) == 1


async def test_a_returned_exception_keeps_its_type_message_and_code() -> None:
    def act(data: object) -> object:
        return Failure(Declined("card declined"))

    done = await run_once(act, Retry(max_attempts=3, no_retry_on=(Declined,)))
    assert attempts(done) == 1
    error = done.last_error
    assert error is not None and error.message == "card declined"
    assert error.details["code"] == "card_declined"
    assert str(error.details["type"]).endswith("Declined")


class Broken(BaseModel):
    inner: Undefined  # type: ignore[name-defined]  # noqa: F821  # never defined


async def test_a_broken_input_model_fails_once_as_a_definition_problem() -> None:
    def act(data: Broken) -> None:
        return None

    done = await run_once(act)
    assert attempts(done) == 1
    assert done.last_error is not None and done.last_error.kind == "invalid_step"
    assert not done.last_error.retryable


async def test_retry_events_name_the_failed_and_the_scheduled_attempt() -> None:
    seen: list[Emit] = []

    class Sink:
        def publish(self, event: Emit) -> None:
            seen.append(event)

    def act(data: object) -> None:
        raise RuntimeError("again")

    flow = workflow("failures.events", triggers=[manual()], steps=[step("act", act, retry=THREE)])
    rt = TimeSkippingRuntime(workflows=[flow], sinks=[Sink()])
    run = (await rt.start_run(flow, {})).unwrap()
    await rt.run_until_complete(run.id)
    retries = [e.attributes for e in seen if e.topic is Topic.STEP_RETRY_SCHEDULED]
    assert [(r["failed_attempt"], r["next_attempt"]) for r in retries] == [(1, 2), (2, 3)]


def noop(data: object) -> None:
    return None


def test_definitions_refuse_an_empty_after_and_bad_trigger_kinds() -> None:
    with pytest.raises(InvalidWorkflowError, match=r"after=\[\] names no step"):
        workflow("bad.after", triggers=[manual()], steps=[step("a", noop, after=[])])
    bogus = TriggerSpec(name="t", kind="webhook")  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflowError, match="unknown kind 'webhook'"):
        workflow("bad.kind", triggers=[bogus], steps=[step("a", noop)])
    sneaky = TriggerSpec(name="t", kind=manual().kind, expression="* * * * *")
    with pytest.raises(InvalidWorkflowError, match="manual trigger but carries a cron"):
        workflow("bad.manual", triggers=[sneaky], steps=[step("a", noop)])
    ok = workflow("good.cron", triggers=[cron("c", "* * * * *")], steps=[step("a", noop)])
    assert ok.default_trigger.expression == "* * * * *"


def test_compose_refuses_an_executor_that_is_not_one() -> None:
    flow = workflow("bad.exec", triggers=[manual()], steps=[step("a", noop)])
    with pytest.raises(ConfigurationError, match="is not an executor"):
        compose(workflows=[flow], store="memory", executor=object())  # type: ignore[arg-type]
