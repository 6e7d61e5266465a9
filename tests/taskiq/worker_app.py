"""The host application the worker-process tests run: ``tests.taskiq.worker_app:runtime``.

Configured through environment variables so each test can point its workers at
its own schema, queue and Redis:

* ``SQUIDMESH_TEST_APP_STORE``  store spec (a PostgreSQL URL with ``?schema=``)
* ``SQUIDMESH_TEST_APP_REDIS``  Redis URL; ``SQUIDMESH_TEST_APP_QUEUE`` stream name
* ``SQUIDMESH_TEST_APP_LOG``    file every step attempt appends a line to
* ``SQUIDMESH_TEST_APP_LEASE``  lease seconds (heartbeat a quarter of it)
* ``SQUIDMESH_TEST_APP_DUPLICATE=1`` publish every message twice
* ``SQUIDMESH_TEST_APP_INLINE=0`` turn the inline fast path off
* ``SQUIDMESH_TEST_APP_SHIPMENT_TIMEOUT`` seconds the order example waits for ``shipped``
* ``SQUIDMESH_TEST_APP_FAST_CLOCK=EPOCH:FACTOR`` run on a clock that passes FACTOR
  seconds per real second since the Unix time EPOCH (the same in every worker),
  with the store comparing the runtime's times, and activate the minutely cron
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

from taskiq import AsyncBroker
from taskiq.message import BrokerMessage

from squidmesh_backends.examples.order_approval import order_approval
from squidmesh_backends.postgres import PostgresRunStore, step_connection
from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_backends.runtime.bootstrap import split_schema
from squidmesh_backends.taskiq import SquidMeshStreamBroker, TaskiqExecutor, redis_stream_broker
from squidmesh_core import (
    COMPLETE,
    NonRetryableError,
    Retry,
    StepContext,
    WorkflowDefinition,
    chain,
    cron,
    manual,
    step,
    workflow,
)

FIVE = [f"s{i}" for i in range(1, 6)]


def _record(ctx: StepContext, what: str) -> None:
    line = f"{what} {os.getpid()} {ctx.run_id} {ctx.step} {ctx.attempt}\n"
    with open(os.environ["SQUIDMESH_TEST_APP_LOG"], "a", encoding="utf-8") as log:
        log.write(line)


async def quick(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    _record(ctx, "ran")
    return {ctx.step: ctx.attempt}


async def slow_first_attempt(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    _record(ctx, "start")
    if ctx.attempt == 1:
        await asyncio.sleep(30)  # long enough to be killed in the middle
    _record(ctx, "ran")
    return {"slow": ctx.attempt}


five_steps = workflow(
    "workers.five",
    triggers=[manual()],
    steps=[step(name, quick) for name in FIVE],
    transitions=chain(*FIVE, COMPLETE),
)
crashable = workflow(
    "workers.crashable",
    triggers=[manual()],
    steps=[step("slow", slow_first_attempt, retry=Retry(max_attempts=3)), step("after", quick)],
    transitions=chain("slow", "after", COMPLETE),
)


hangs_once = workflow(
    "workers.hangs_once",
    triggers=[manual()],
    steps=[
        step(
            "slow",
            slow_first_attempt,
            retry=Retry(max_attempts=2),
            timeout=timedelta(seconds=1),
        ),
        step("after", quick),
    ],
    transitions=chain("slow", "after", COMPLETE),
)


async def never_ships(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    _record(ctx, "ran")
    raise NonRetryableError("no courier", code="no_courier")


saga_crash = workflow(
    "workers.saga_crash",
    triggers=[manual()],
    steps=[
        step("book", quick, compensate=slow_first_attempt),
        step("charge", quick, compensate=quick),
        step("ship", never_ships),
    ],
    transitions=chain("book", "charge", "ship"),
)


async def effect(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    """Writes one effect row through the step's transaction, slowly enough to be killed."""
    _record(ctx, "start")
    schema = split_schema(os.environ["SQUIDMESH_TEST_APP_STORE"])[1]
    conn = step_connection(ctx)
    await conn.execute(
        f"INSERT INTO {schema}.effects (run_id, step, attempt, pid) VALUES (%s, %s, %s, %s)",
        (ctx.run_id, ctx.step, ctx.attempt, os.getpid()),
    )
    await asyncio.sleep(0.05 + (hash((ctx.run_id, ctx.step)) % 150) / 1000)
    _record(ctx, "ran")
    return {ctx.step: ctx.attempt}


EFFECT_STEPS = ("debit", "credit", "receipt")
effects = workflow(
    "workers.effects",
    triggers=[manual()],
    steps=[
        step(name, effect, transaction=True, retry=Retry(max_attempts=3)) for name in EFFECT_STEPS
    ],
    transitions=chain(*EFFECT_STEPS),
)


every_minute = workflow(
    "workers.every_minute",
    triggers=[cron("minutely", "* * * * *")],
    steps=[step("tick", quick)],
    transitions=chain("tick", COMPLETE),
)


class FastClock:
    """Shared fake time: FACTOR seconds pass per real second since EPOCH, in every process."""

    def __init__(self, epoch: float, factor: float) -> None:
        self.epoch = epoch
        self.factor = factor
        self.start = datetime.fromtimestamp(epoch, UTC)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.epoch) * self.factor)


class DuplicatingStreamBroker(SquidMeshStreamBroker):
    """Publishes every message twice: each delivery then happens at least twice."""

    async def kick(self, message: BrokerMessage) -> None:
        await super().kick(message)
        await super().kick(message)


def settings() -> RuntimeSettings:
    lease = float(os.environ.get("SQUIDMESH_TEST_APP_LEASE", "10"))
    return RuntimeSettings(
        lease=timedelta(seconds=lease),
        heartbeat_every=timedelta(seconds=lease / 4),
        poll_interval=timedelta(milliseconds=250),
        shutdown_timeout=timedelta(seconds=3),
        claim_batch=8,
        owner=f"worker-{os.getpid()}",
        inline_next_step=os.environ.get("SQUIDMESH_TEST_APP_INLINE", "1") == "1",
    )


def broker(chosen: RuntimeSettings) -> AsyncBroker:
    url = os.environ["SQUIDMESH_TEST_APP_REDIS"]
    queue = os.environ["SQUIDMESH_TEST_APP_QUEUE"]
    duplicate = os.environ.get("SQUIDMESH_TEST_APP_DUPLICATE") == "1"
    return redis_stream_broker(
        url,
        lease=chosen.lease,
        queue=queue,
        broker_class=DuplicatingStreamBroker if duplicate else SquidMeshStreamBroker,
    )


def orders() -> list[WorkflowDefinition]:
    """The order example, with the shipment timeout this test asked for."""
    seconds = float(os.environ.get("SQUIDMESH_TEST_APP_SHIPMENT_TIMEOUT", str(3 * 86400)))
    return [order_approval(timedelta(seconds=seconds))]


def runtime() -> Runtime:
    chosen = settings()
    fast = os.environ.get("SQUIDMESH_TEST_APP_FAST_CLOCK")
    if fast:
        epoch, factor = (float(part) for part in fast.split(":"))
        dsn, schema = split_schema(os.environ["SQUIDMESH_TEST_APP_STORE"])
        built = Runtime(
            store=PostgresRunStore(dsn, schema=schema, clock="caller", max_size=4),
            executor=TaskiqExecutor(broker(chosen), concurrency=chosen.concurrency),
            workflows=[five_steps, crashable, every_minute],
            clock=FastClock(epoch, factor),
            settings=chosen,
            cron=[every_minute],
        )
        built.owns_store = True
        return built
    return compose(
        workflows=[
            five_steps,
            crashable,
            hangs_once,
            saga_crash,
            effects,
            every_minute,
            *orders(),
        ],
        store=os.environ["SQUIDMESH_TEST_APP_STORE"],
        broker=broker(chosen),
        settings=chosen,
    )
