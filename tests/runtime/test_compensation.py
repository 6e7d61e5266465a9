"""Saga compensation on the runtime: handlers, order, retries, crashes, explain, every store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from returns.result import Failure

from squidmesh_backends import TimeSkippingRuntime
from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_core import (
    AttemptStatus,
    Fixed,
    Reason,
    Retry,
    RunStatus,
    StepContext,
    StepFailure,
    StepStatus,
    WorkflowDefinition,
    chain,
    manual,
    step,
    wait,
    workflow,
)

calls: list[tuple[str, str, object]] = []
refund_failures = {"left": 0}


async def reserve(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    calls.append(("do", ctx.step, ctx.idempotency_key))
    return {"hold": "H-1"}


async def release(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    calls.append(("undo", ctx.step, data))
    return {"released": data["output"]}


async def charge(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    calls.append(("do", ctx.step, ctx.idempotency_key))
    return {"charge": "C-7"}


async def refund(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    calls.append(("undo", ctx.step, ctx.idempotency_key))
    if refund_failures["left"] > 0:
        refund_failures["left"] -= 1
        raise ConnectionError("payments API unavailable")
    return {"refunded": True}


async def ship(data: dict[str, object], ctx: StepContext) -> object:
    return Failure(StepFailure(kind="no_stock", message="nothing to ship", retryable=False))


def saga(name: str = "saga.runtime") -> WorkflowDefinition:
    return workflow(
        name,
        triggers=[manual()],
        steps=[
            step("reserve", reserve, compensate=release),
            step(
                "charge",
                charge,
                compensate=refund,
                compensate_retry=Retry(max_attempts=3, backoff=Fixed(delay=timedelta(seconds=1))),
            ),
            step("ship", ship),
        ],
        transitions=chain("reserve", "charge", "ship"),
    )


SAGA = saga()


@pytest.fixture(autouse=True)
def reset() -> None:
    calls.clear()
    refund_failures["left"] = 0


async def test_a_failed_run_runs_its_compensations_latest_first() -> None:
    rt = TimeSkippingRuntime(workflows=[SAGA])
    run = (await rt.start_run(SAGA, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.last_error is not None and done.last_error.kind == "no_stock"
    undos = [c for c in calls if c[0] == "undo"]
    assert [c[1] for c in undos] == ["charge:compensate", "reserve:compensate"]
    assert undos[0][2] == f"squidmesh:{run.id}:charge:compensate"  # its own idempotency key
    given = undos[1][2]
    assert isinstance(given, dict) and given["step"] == "reserve"
    assert given["output"] == {"hold": "H-1"}
    assert given["error"]["kind"] == "no_stock"
    assert done.history is not None
    names = [s.step for s in done.history]
    assert names == ["reserve", "charge", "ship", "charge:compensate", "reserve:compensate"]
    assert done.history[-1].output == {"released": {"hold": "H-1"}}
    why = (await rt.explain_run(run.id)).unwrap()
    assert why.reason is Reason.STEP_FAILED
    assert why.details["compensation"] == {
        "ends_as": "failed",
        "steps": {"charge": "completed", "reserve": "completed"},
    }


async def test_a_compensation_retries_then_the_run_ends_failed() -> None:
    refund_failures["left"] = 2
    rt = TimeSkippingRuntime(workflows=[SAGA])
    run = (await rt.start_run(SAGA, {})).unwrap()
    await rt.run_due()
    middle = (await rt.explain_run(run.id)).unwrap()
    assert middle.status is RunStatus.COMPENSATING and middle.reason is Reason.COMPENSATING
    assert "charge" in middle.summary
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.history is not None
    refunds = next(s for s in done.history if s.step == "charge:compensate")
    assert [a.status for a in refunds.attempts] == [
        AttemptStatus.FAILED,
        AttemptStatus.FAILED,
        AttemptStatus.SUCCEEDED,
    ]


async def test_a_compensation_that_gives_up_ends_compensation_failed() -> None:
    refund_failures["left"] = 99
    rt = TimeSkippingRuntime(workflows=[SAGA])
    run = (await rt.start_run(SAGA, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.COMPENSATION_FAILED
    assert [c[1] for c in calls if c[0] == "undo"][-1] == "reserve:compensate"  # still ran
    assert done.last_error is not None and done.last_error.kind == "compensation_failed"
    why = (await rt.explain_run(run.id)).unwrap()
    assert why.reason is Reason.COMPENSATION_FAILED
    assert why.next_actions[0].action == "repair_by_hand"
    undo = why.details["compensation"]
    assert isinstance(undo, dict) and undo["steps"] == {"charge": "failed", "reserve": "completed"}


async def test_a_worker_killed_during_a_compensation_resumes_it() -> None:
    rt = TimeSkippingRuntime(workflows=[SAGA])
    rt.faults.kill_worker_during("charge:compensate")
    run = (await rt.start_run(SAGA, {})).unwrap()
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.FAILED
    assert done.history is not None
    refunds = next(s for s in done.history if s.step == "charge:compensate")
    assert [a.status for a in refunds.attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCEEDED]
    assert refunds.status is StepStatus.COMPLETED


@pytest.mark.parametrize("opted_in", [True, False])
async def test_a_cancelled_run_compensates_when_its_workflow_opts_in(opted_in: bool) -> None:
    flow = workflow(
        f"saga.cancel.{opted_in}",
        triggers=[manual()],
        steps=[
            step("reserve", reserve, compensate=release),
            wait("cool_off", timedelta(hours=1)),
            step("charge", charge, compensate=refund),
        ],
        transitions=chain("reserve", "cool_off", "charge"),
        compensate_on_cancel=opted_in,
    )
    rt = TimeSkippingRuntime(workflows=[flow])
    run = (await rt.start_run(flow, {})).unwrap()
    await rt.run_due()  # reserve completes; charge is due in an hour
    cancelled = (await rt.cancel_run(run.id, actor="ops")).unwrap()
    assert cancelled.status is RunStatus.CANCELLING
    done = await rt.run_until_complete(run.id)
    assert done.status is RunStatus.CANCELLED
    undone = [c[1] for c in calls if c[0] == "undo"]
    assert undone == (["reserve:compensate"] if opted_in else [])


async def test_a_compensating_run_refuses_a_cancel() -> None:
    refund_failures["left"] = 1
    rt = TimeSkippingRuntime(workflows=[SAGA])
    run = (await rt.start_run(SAGA, {})).unwrap()
    await rt.run_due()
    refused = await rt.cancel_run(run.id, actor="ops")
    assert isinstance(refused, Failure) and refused.failure().code == "invalid_transition"


# ---------------------------------------------------------------- every store

FAST = RuntimeSettings(
    poll_interval=timedelta(milliseconds=50),
    lease=timedelta(seconds=5),
    heartbeat_every=timedelta(seconds=1),
    shutdown_timeout=timedelta(seconds=2),
)


async def compensates_on(live: Runtime) -> None:
    refund_failures["left"] = 1
    async with live:
        run = (await live.start_run(SAGA, {})).unwrap()
        done = (await live.wait_for(run.id, timeout=timedelta(seconds=30))).unwrap()
        again = (await live.inspect_run(run.id, include_history=True)).unwrap()
    assert done.status is RunStatus.FAILED
    assert [c[1] for c in calls if c[0] == "undo"] == [
        "charge:compensate",
        "charge:compensate",
        "reserve:compensate",
    ]
    assert again.history is not None
    steps = {s.step: s.status for s in again.history}
    assert steps["charge:compensate"] is StepStatus.COMPLETED
    assert steps["reserve:compensate"] is StepStatus.COMPLETED
    assert again.jobs == ()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_compensation_on_the_embedded_stores(kind: str, tmp_path: Path) -> None:
    spec = "memory" if kind == "memory" else f"sqlite:{tmp_path}/saga.db"
    await compensates_on(compose(workflows=[SAGA], store=spec, settings=FAST))


@pytest.mark.postgres
async def test_compensation_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    store = PostgresRunStore(pg_dsn, schema=pg_schema, max_size=4)
    await compensates_on(compose(workflows=[SAGA], store=store, settings=FAST))
