"""The SquidMesh runner of the side-by-side benchmark.

One started ``Runtime`` over ``PostgresRunStore`` in the engine's own database,
with one of three executors (``--variant``):

* ``inprocess``: the default in-process executor (inline fast path on);
* ``taskiq-inline``: a ``TaskiqExecutor`` on a ``RedisStreamBroker``, the process
  being its own worker, with the inline fast path on;
* ``taskiq-plain``: the same with the inline path off, so every step goes
  through Redis.

Completion is heard from the runtime's event sink (no polling); ``pending``
counts unfinished runs in the store's table, as the DBOS runner does in its own.

Usage: ``python bench/engines/squidmesh_engine.py --variant V --dsn URL --spec JSON``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import redis.asyncio as aredis
from _driver import drive, emit
from _finished import Finished
from _flows import chain_of, noop

from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.probe import COMMITS, STATEMENTS, Counters
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_backends.taskiq import TaskiqExecutor, redis_stream_broker
from squidmesh_core import (
    COMPLETE,
    WorkflowDefinition,
    chain,
    manual,
    step,
    wait,
    workflow,
)

REDIS = os.environ.get("SQUIDMESH_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SCHEMA = "squidmesh"
VARIANTS = ("inprocess", "taskiq-inline", "taskiq-plain")


def timer_flow(seconds: float) -> WorkflowDefinition:
    return workflow(
        f"bench.timer.{seconds}",
        triggers=[manual()],
        steps=[wait("pause", timedelta(seconds=seconds)), step("after", noop)],
        transitions=chain("pause", "after", COMPLETE),
    )


class SquidMeshEngine:
    def __init__(
        self, runtime: Runtime, store: PostgresRunStore, probe: Counters, finished: Finished
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.probe = probe
        self.finished = finished
        self.flows = {n: runtime.workflows[f"bench.steps.{n}"] for n in (1, 10)}

    async def run(self, steps: int) -> None:
        run = (await self.runtime.start_run(self.flows[steps], {})).unwrap()
        await self.finished.wait(run.id)

    async def timer(self, seconds: float) -> float:
        flow = next(w for w in self.runtime.workflows.values() if w.name.startswith("bench.timer"))
        run = (await self.runtime.start_run(flow, {})).unwrap()
        await self.finished.wait(run.id)
        seen = (await self.runtime.inspect_run(run.id, include_history=True)).unwrap()
        history = {s.step: s for s in seen.history or ()}
        finished = history["pause"].attempts[-1].finished_at
        assert finished is not None
        due = finished + timedelta(seconds=seconds)
        return (history["after"].attempts[-1].started_at - due).total_seconds()

    def own_counters(self) -> dict[str, int]:
        """The store's own count of write transactions and statements (from its probe)."""
        return {
            "write_transactions": self.probe[COMMITS],
            "statements": self.probe[STATEMENTS],
        }

    async def enqueue(self, count: int) -> None:
        self.finished.recording = False  # completion is read from the table (``pending``)
        for _ in range(count):
            (await self.runtime.start_run(self.flows[1], {})).unwrap()

    async def pending(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.store.dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                f'SELECT count(*) FROM "{SCHEMA}".squidmesh_runs'
                " WHERE status NOT IN ('completed', 'failed', 'cancelled')"
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def main_async(variant: str, dsn: str, spec: dict[str, Any]) -> dict[str, Any]:
    await migrate(dsn, schema=SCHEMA)
    concurrency = int(spec.get("executor_concurrency", 64))
    settings = RuntimeSettings(
        poll_interval=timedelta(milliseconds=200),
        concurrency=concurrency,
        claim_batch=64,
        inline_next_step=variant != "taskiq-plain",
    )
    probe = Counters()
    store = PostgresRunStore(dsn, schema=SCHEMA, max_size=int(spec.get("pool", 20)), probe=probe)
    queue = f"bench_{secrets.token_hex(4)}"
    executor = (
        None
        if variant == "inprocess"
        else TaskiqExecutor(redis_stream_broker(REDIS, lease=settings.lease, queue=queue))
    )
    finished = Finished()
    flows = [chain_of(n) for n in (1, 10)] + [timer_flow(float(spec.get("wait", 0.5)))]
    runtime = Runtime(
        store=store, workflows=flows, executor=executor, settings=settings, sinks=[finished]
    )
    spec = {**spec, "sizes": [1, 10]}  # a SquidMesh workflow has at least one step
    try:
        async with store, runtime:
            return await drive(SquidMeshEngine(runtime, store, probe, finished), dsn, spec)
    finally:
        if executor is not None:
            client = aredis.Redis.from_url(REDIS)
            await client.delete(queue)
            await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--spec", required=True, help="the scenarios, as JSON")
    args = parser.parse_args()
    emit(asyncio.run(main_async(args.variant, args.dsn, json.loads(args.spec))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
