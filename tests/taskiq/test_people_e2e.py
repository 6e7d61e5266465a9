"""People and other systems in the loop, on PostgreSQL with Redis workers in other processes."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest

from squidmesh_backends.examples.order_approval import order_approval
from squidmesh_backends.postgres import PostgresRunStore
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_core import RunStatus, StepStatus
from squidmesh_core.state import OperatorCommand, RunState
from tests.cli.harness import squidmesh
from tests.taskiq.conftest import Workers
from tests.taskiq.processes import APP

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]

ORDER = {"order_id": "o-77", "amount": 30}


async def until(
    store: PostgresRunStore, run_id: str, status: RunStatus, timeout: float
) -> RunState:
    deadline = time.monotonic() + timeout
    while True:
        state = await store.load(run_id)  # type: ignore[arg-type]
        if state is not None and state.status is status:
            return state
        assert time.monotonic() < deadline, f"run is {None if state is None else state.status}"
        await asyncio.sleep(0.05)


def cli(workers: Workers, *args: str) -> dict[str, object]:
    """A ``squidmesh run ...`` command in its own process, against the workers' store."""
    done = squidmesh("run", *args, "--app", APP, "--json", env=workers.env)
    assert done.returncode == 0, done.stdout + done.stderr
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


async def test_an_approval_waits_across_a_worker_restart_and_is_approved_from_the_cli(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    [first] = workers.start(1)
    store = PostgresRunStore(pg_dsn, schema=pg_schema, max_size=2)
    await store.open()
    client = Runtime(store=store, workflows=[order_approval()], settings=RuntimeSettings())
    try:
        run_id = (await client.start_run("examples.order_approval", ORDER)).unwrap().id
        parked = await until(store, run_id, RunStatus.PAUSED, 30)
        assert parked.jobs == ()  # parked: no job, no lease, no worker held
        assert first.terminate() == 0
        [second] = workers.start(1)
        explained = cli(workers, "explain", run_id)
        assert explained["reason"] == "paused_for_approval"
        approved = cli(workers, "approve", run_id, "--actor", "ops", "--note", "fine")
        assert approved["receipt"]["entry"]["outcome"]["to"] == "paused"  # type: ignore[index]
        waiting = await until(store, run_id, RunStatus.PAUSED, 10)
        assert waiting.parked_step is not None and waiting.parked_step.step == "shipment"
        shipped = json.dumps({"carrier": "dhl", "tracking": "T-7"})
        cli(workers, "signal", run_id, "shipped", "--payload", shipped, "--actor", "warehouse")
        done = await until(store, run_id, RunStatus.COMPLETED, 30)
    finally:
        await store.close()
    assert second.terminate() == 0
    assert [(e.command, e.actor) for e in done.audit] == [
        (OperatorCommand.APPROVE, "ops"),
        (OperatorCommand.SIGNAL, "warehouse"),
    ]
    assert done.context["notified"] == {"order_id": "o-77", "tracking": "T-7"}
    assert [s.step for s in done.steps] == ["reserve", "review", "shipment", "notify"]
    assert all(len(s.attempts) == (0 if s.parked else 1) for s in done.steps)


async def test_a_signal_from_another_process_before_the_wait_is_kept(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    workers.start(1)
    store = PostgresRunStore(pg_dsn, schema=pg_schema, max_size=2)
    await store.open()
    client = Runtime(store=store, workflows=[order_approval()], settings=RuntimeSettings())
    try:
        run_id = (await client.start_run("examples.order_approval", ORDER)).unwrap().id
        await until(store, run_id, RunStatus.PAUSED, 30)
        shipped = json.dumps({"carrier": "ups", "tracking": "U-1"})
        early = cli(workers, "signal", run_id, "shipped", "--payload", shipped)
        assert early["receipt"]["entry"]["outcome"]["taken_by"] is None  # type: ignore[index]
        cli(workers, "approve", run_id, "--actor", "ops")
        done = await until(store, run_id, RunStatus.COMPLETED, 30)
    finally:
        await store.close()
    assert done.context["shipment"] == {"carrier": "ups", "tracking": "U-1"}
    assert [s.consumed_by for s in done.signals] == ["shipment"]


async def test_a_signal_timeout_fires_on_a_worker_and_takes_the_error_route(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    timeout = 2.0
    workers.env["SQUIDMESH_TEST_APP_SHIPMENT_TIMEOUT"] = str(timeout)
    workers.start(1)
    store = PostgresRunStore(pg_dsn, schema=pg_schema, max_size=2)
    await store.open()
    client = Runtime(
        store=store,
        workflows=[order_approval(timedelta(seconds=timeout))],
        settings=RuntimeSettings(),
    )
    try:
        run_id = (await client.start_run("examples.order_approval", ORDER)).unwrap().id
        await until(store, run_id, RunStatus.PAUSED, 30)
        (await client.approve_run(run_id, actor="ops")).unwrap()
        approved_at = time.monotonic()
        waiting = (await client.explain_run(run_id)).unwrap()
        assert waiting.reason == "waiting_for_signal" and waiting.details["signal"] == "shipped"
        done = await until(store, run_id, RunStatus.COMPLETED, 30)
        took = time.monotonic() - approved_at
    finally:
        await store.close()
    shipment = done.step_run("shipment")
    assert shipment is not None and shipment.status is StepStatus.FAILED
    assert shipment.error is not None and shipment.error.kind == "signal_timeout"
    assert done.context["released"] == "o-77"
    assert timeout - 0.1 <= took < timeout + 5, took


async def test_a_hung_step_times_out_on_a_taskiq_worker_and_is_retried(
    workers: Workers, pg_dsn: str, pg_schema: str
) -> None:
    from tests.taskiq.worker_app import hangs_once

    workers.start(1)
    store = PostgresRunStore(pg_dsn, schema=pg_schema, max_size=2)
    await store.open()
    client = Runtime(store=store, workflows=[hangs_once], settings=RuntimeSettings())
    try:
        began = time.monotonic()
        run_id = (await client.start_run(hangs_once, {})).unwrap().id
        done = await until(store, run_id, RunStatus.COMPLETED, 30)
        took = time.monotonic() - began
    finally:
        await store.close()
    slow = done.step_run("slow")
    assert slow is not None and [a.number for a in slow.attempts] == [1, 2]
    first = slow.attempts[0]
    assert first.error is not None and first.error.kind == "timed_out"
    assert took < 10, took  # the 30 s sleep did not hold the run
