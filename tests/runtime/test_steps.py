"""Every supported step shape, and what each kind of outcome records."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from pydantic import BaseModel, ConfigDict
from returns.result import Failure, Success

from squidmesh_backends.runtime import TimeSkippingRuntime
from squidmesh_core import (
    COMPLETE,
    Retry,
    RunStatus,
    StepContext,
    StepFailure,
    chain,
    log,
    manual,
    step,
    workflow,
)
from squidmesh_core.views import Run


class Account(BaseModel):
    account_id: str
    limit: int = 5


class Balance(BaseModel):
    balance: int


class StrictAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_id: int


async def one_step(handler: object, payload: dict[str, object] | None = None, **kw: object) -> Run:
    wf = workflow(
        "steps.one",
        triggers=[manual(payload=Account)],
        steps=[step("only", handler, **kw)],  # type: ignore[arg-type]
        transitions=chain("only", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[wf])
    run = (await rt.start_run(wf, payload or {"account_id": "a1"})).unwrap()
    return await rt.run_until_complete(run.id)


async def test_async_function_with_a_model_input() -> None:
    async def handler(data: Account, ctx: StepContext) -> dict[str, object]:
        return {"seen": data.account_id, "limit": data.limit, "attempt": ctx.attempt}

    done = await one_step(handler)
    assert done.context == {"seen": "a1", "limit": 5, "attempt": 1}


def test_plain_functions_run_off_the_event_loop() -> None:
    import asyncio
    import threading

    main = threading.get_ident()

    def handler(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {"other_thread": threading.get_ident() != main}

    done = asyncio.run(one_step(handler))
    assert done.context == {"other_thread": True}


async def test_one_argument_handlers() -> None:
    def handler(data: Account) -> Balance:
        return Balance(balance=len(data.account_id))

    assert (await one_step(handler)).context == {"balance": 2}


async def test_class_steps_get_a_fresh_instance_per_attempt() -> None:
    instances: list[object] = []

    class Charge:
        def __init__(self) -> None:
            instances.append(self)

        async def run(self, data: Account, ctx: StepContext) -> dict[str, object]:
            if ctx.attempt == 1:
                raise ConnectionError("try again")
            return {"ok": True}

    done = await one_step(Charge, retry=Retry(max_attempts=2))
    assert done.status is RunStatus.COMPLETED
    assert len(instances) == 2 and instances[0] is not instances[1]


async def test_result_values_are_understood() -> None:
    async def ok(data: Account, ctx: StepContext) -> object:
        return Success(Balance(balance=3))

    assert (await one_step(ok)).context == {"balance": 3}

    async def declined(data: Account, ctx: StepContext) -> object:
        return Failure(StepFailure(kind="declined", message="card declined", retryable=False))

    done = await one_step(declined, retry=Retry(max_attempts=5))
    assert done.status is RunStatus.FAILED
    assert done.last_error == StepFailure(kind="declined", message="card declined", retryable=False)

    async def odd(data: Account, ctx: StepContext) -> object:
        return Failure("bare reason")

    assert (await one_step(odd)).last_error == StepFailure(
        kind="step_failed", message="bare reason"
    )


async def test_none_means_an_empty_output() -> None:
    async def nothing(data: Account, ctx: StepContext) -> None:
        return None

    done = await one_step(nothing)
    assert done.status is RunStatus.COMPLETED
    assert done.context == {}


async def test_exceptions_record_type_and_message_and_are_retried() -> None:
    calls: list[int] = []

    async def flaky(data: Account, ctx: StepContext) -> dict[str, object]:
        calls.append(ctx.attempt)
        raise KeyError("missing thing")

    done = await one_step(flaky, retry=Retry(max_attempts=3))
    assert calls == [1, 2, 3]
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None
    assert done.last_error.kind == "exception"
    assert done.last_error.message == "'missing thing'"
    assert done.last_error.details == {"type": "builtins.KeyError"}


async def test_non_json_output_is_a_clear_non_retryable_failure() -> None:
    calls: list[int] = []

    async def bad(data: Account, ctx: StepContext) -> object:
        calls.append(ctx.attempt)
        return {"when": object()}

    done = await one_step(bad, retry=Retry(max_attempts=3))
    assert calls == [1]
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "invalid_output"
    assert "output.when is a object, which is not JSON" in done.last_error.message


@pytest.mark.parametrize(
    "output", [["a", "list"], "text", 42, {"nul": "\x00"}, {"nan": float("nan")}]
)
async def test_unstorable_outputs(output: object) -> None:
    async def bad(data: Account, ctx: StepContext) -> object:
        return output

    done = await one_step(bad)
    assert done.last_error is not None and done.last_error.kind == "invalid_output"


async def test_input_that_does_not_fit_the_model_is_non_retryable() -> None:
    calls: list[int] = []

    async def handler(data: StrictAccount, ctx: StepContext) -> dict[str, object]:
        calls.append(1)
        return {}

    done = await one_step(handler, retry=Retry(max_attempts=3))
    assert calls == []
    assert done.last_error is not None and done.last_error.kind == "invalid_input"
    assert done.last_error.retryable is False


async def test_declared_output_model_validates_dict_outputs() -> None:
    async def handler(data: Account, ctx: StepContext) -> Balance:
        return {"balance": "lots"}  # type: ignore[return-value]

    done = await one_step(handler)
    assert done.last_error is not None and done.last_error.kind == "invalid_output"

    async def good(data: Account, ctx: StepContext) -> Balance:
        return {"balance": 4}  # type: ignore[return-value]

    assert (await one_step(good)).context == {"balance": 4}


async def test_input_and_output_mapping() -> None:
    async def handler(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {"keys": sorted(data)}

    done = await one_step(handler, {"account_id": "a1"}, input=["account_id"], output="result")
    assert done.context == {"result": {"keys": ["account_id"]}}


async def test_log_steps_log_with_run_context(caplog: pytest.LogCaptureFixture) -> None:
    wf = workflow(
        "steps.log",
        triggers=[manual()],
        steps=[log("shout", "something happened", level="warning")],
        transitions=chain("shout", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[wf])
    run = (await rt.start_run(wf, {})).unwrap()
    with caplog.at_level(logging.INFO, logger="squidmesh.step"):
        await rt.run_until_complete(run.id)
    [record] = [r for r in caplog.records if r.getMessage() == "something happened"]
    assert record.levelno == logging.WARNING
    assert record.run_id == run.id  # type: ignore[attr-defined]
    assert record.step == "shout"  # type: ignore[attr-defined]
    assert record.attempt == 1  # type: ignore[attr-defined]


async def test_failing_event_sinks_never_break_the_runtime() -> None:
    seen: list[str] = []

    class Broken:
        def publish(self, event: object) -> None:
            raise RuntimeError("subscriber bug")

    class Recording:
        def publish(self, event: object) -> None:
            seen.append(str(getattr(event, "topic", "")))

    async def handler(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {}

    wf = workflow(
        "steps.sinks",
        triggers=[manual()],
        steps=[step("a", handler)],
        transitions=chain("a", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[wf], sinks=[Broken(), Recording()])
    run = (await rt.start_run(wf, {})).unwrap()
    assert (await rt.run_until_complete(run.id)).status is RunStatus.COMPLETED
    assert seen == [
        "run.created",
        "step.started",
        "run.transition",
        "step.completed",
        "run.transition",
    ]


async def test_six_hour_wait_and_retries_take_no_real_time() -> None:
    import time

    async def handler(data: Account, ctx: StepContext) -> dict[str, object]:
        if ctx.attempt < 5:
            raise TimeoutError("slow gateway")
        return {}

    from squidmesh_core import Exponential, wait

    wf = workflow(
        "steps.slow",
        triggers=[manual(payload=Account)],
        steps=[
            wait("six_hours", timedelta(hours=6)),
            step(
                "call",
                handler,
                retry=Retry(
                    max_attempts=5,
                    backoff=Exponential(min=timedelta(minutes=1), max=timedelta(hours=1)),
                ),
            ),
        ],
        transitions=chain("six_hours", "call", COMPLETE),
    )
    rt = TimeSkippingRuntime(workflows=[wf])
    started = time.perf_counter()
    run = (await rt.start_run(wf, {"account_id": "a"})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert time.perf_counter() - started < 1.0
    assert done.status is RunStatus.COMPLETED
    assert rt.now - done.created_at == timedelta(hours=6, minutes=1 + 2 + 4 + 8)


async def test_unresolvable_annotations_are_reported_not_guessed() -> None:
    class Local(BaseModel):
        n: int

    async def handler(data: Local, ctx: StepContext) -> dict[str, object]:
        return {}

    done = await one_step(handler, retry=Retry(max_attempts=3))
    assert done.last_error is not None
    assert done.last_error.kind == "invalid_step"
    assert "name 'Local' is not defined" in done.last_error.message
    assert done.history is not None and len(done.history[0].attempts) == 1


async def test_every_runtime_log_record_carries_the_run(caplog: pytest.LogCaptureFixture) -> None:
    async def bad_output(data: dict[str, object], ctx: StepContext) -> object:
        return ["not", "an", "object"]

    wf = workflow(
        "steps.logged",
        triggers=[manual()],
        steps=[step("emit", bad_output)],
        transitions=chain("emit", COMPLETE),
    )
    caplog.set_level(logging.DEBUG, logger="squidmesh")
    rt = TimeSkippingRuntime(workflows=[wf])
    run = (await rt.start_run(wf, {})).unwrap()
    await rt.run_until_complete(run.id)
    from_steps = [r for r in caplog.records if r.name.startswith("squidmesh")]
    assert from_steps, "the runtime logged nothing"
    for record in from_steps:
        assert record.run_id == run.id  # type: ignore[attr-defined]
        assert record.workflow == "steps.logged"  # type: ignore[attr-defined]
        assert record.step in (None, "emit")  # type: ignore[attr-defined]
    in_step = [r for r in from_steps if r.step == "emit"]  # type: ignore[attr-defined]
    assert len(in_step) >= 2  # the step.started and step.failed events
    assert all(r.attempt == 1 for r in in_step)  # type: ignore[attr-defined]
    outside = logging.getLogger("squidmesh.runtime").makeRecord(
        "squidmesh.runtime", logging.INFO, __file__, 1, "x", (), None
    )
    assert not hasattr(outside, "run_id")


async def test_events_of_a_child_run_started_by_a_step_log_the_child(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def leaf(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        return {}

    child = workflow(
        "steps.child", triggers=[manual()], steps=[step("leaf", leaf)],
        transitions=chain("leaf", COMPLETE),
    )  # fmt: skip
    started: list[str] = []

    async def parent_step(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
        started.append((await rt.start_run(child, {})).unwrap().id)
        return {}

    parent = workflow(
        "steps.parent", triggers=[manual()], steps=[step("spawn", parent_step)],
        transitions=chain("spawn", COMPLETE),
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="squidmesh")
    rt = TimeSkippingRuntime(workflows=[parent, child])
    run = (await rt.start_run(parent, {})).unwrap()
    await rt.run_until_complete(run.id)
    (created,) = [
        r
        for r in caplog.records
        if r.getMessage().startswith("run.created") and r.run_id == started[0]  # type: ignore[attr-defined]
    ]
    assert (created.workflow, created.step, created.attempt) == ("steps.child", None, None)  # type: ignore[attr-defined]
