"""The host application every fault experiment runs in its workers: ``chaos.app:runtime``.

One workflow, ``chaos.steps``: five short steps, each retried up to five
times. Every attempt appends ``start`` and ``ran`` lines (pid, run, step,
attempt, Unix time) to a shared file, so the harness can tell which attempts
began, which ran to the end and which ran more than once.

Configured through environment variables:

* ``SQUIDMESH_CHAOS_STORE``      store spec (PostgreSQL URL with ``?schema=``, or ``sqlite:PATH``)
* ``SQUIDMESH_CHAOS_REDIS``      Redis URL (absent: the in-process executor)
* ``SQUIDMESH_CHAOS_QUEUE``      stream name
* ``SQUIDMESH_CHAOS_LOG``        the attempt log
* ``SQUIDMESH_CHAOS_LEASE``      lease seconds (heartbeat a quarter of it)
* ``SQUIDMESH_CHAOS_STEP_MS``    how long each step works (default 20)
* ``SQUIDMESH_CHAOS_COPIES``     publish every message this many times (default 1)
* ``SQUIDMESH_CHAOS_CONCURRENCY`` steps one worker runs at once (default 4)
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from taskiq.message import BrokerMessage

from squidmesh_backends.runtime import Runtime, RuntimeSettings, compose
from squidmesh_backends.taskiq import SquidMeshStreamBroker, redis_stream_broker
from squidmesh_core import COMPLETE, Retry, StepContext, chain, manual, step, workflow

STEPS = [f"s{i}" for i in range(1, 6)]


def _record(ctx: StepContext, what: str) -> None:
    line = f"{what} {os.getpid()} {ctx.run_id} {ctx.step} {ctx.attempt} {time.time():.6f}\n"
    with open(os.environ["SQUIDMESH_CHAOS_LOG"], "a", encoding="utf-8") as log:
        log.write(line)


async def work(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    _record(ctx, "start")
    await asyncio.sleep(float(os.environ.get("SQUIDMESH_CHAOS_STEP_MS", "20")) / 1000)
    _record(ctx, "ran")
    return {ctx.step: ctx.attempt}


steps = workflow(
    "chaos.steps",
    triggers=[manual()],
    steps=[step(name, work, retry=Retry(max_attempts=5)) for name in STEPS],
    transitions=chain(*STEPS, COMPLETE),
)


class CopyingStreamBroker(SquidMeshStreamBroker):
    """Publishes every message ``SQUIDMESH_CHAOS_COPIES`` times."""

    async def kick(self, message: BrokerMessage) -> None:
        for _ in range(int(os.environ.get("SQUIDMESH_CHAOS_COPIES", "1"))):
            await super().kick(message)


def settings() -> RuntimeSettings:
    lease = float(os.environ.get("SQUIDMESH_CHAOS_LEASE", "2"))
    return RuntimeSettings(
        lease=timedelta(seconds=lease),
        heartbeat_every=timedelta(seconds=lease / 4),
        poll_interval=timedelta(milliseconds=250),
        shutdown_timeout=timedelta(seconds=3),
        concurrency=int(os.environ.get("SQUIDMESH_CHAOS_CONCURRENCY", "4")),
        owner=f"worker-{os.getpid()}",
    )


def runtime() -> Runtime:
    chosen = settings()
    redis = os.environ.get("SQUIDMESH_CHAOS_REDIS")
    broker = None
    if redis:
        broker = redis_stream_broker(
            redis,
            lease=chosen.lease,
            queue=os.environ.get("SQUIDMESH_CHAOS_QUEUE", "squidmesh"),
            broker_class=CopyingStreamBroker,
        )
    return compose(
        workflows=[steps], store=os.environ["SQUIDMESH_CHAOS_STORE"], broker=broker, settings=chosen
    )
