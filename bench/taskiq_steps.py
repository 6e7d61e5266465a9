"""Benchmark: steps through Taskiq on Redis, with and without the inline fast path.

Measured side by side in one run, on the same Redis and PostgreSQL:

* **raw Taskiq**: a no-op task sent with ``kiq`` and received by Taskiq's own
  receiver on taskiq-redis's ``RedisStreamBroker``: serial round trips (latency) and a burst
  (messages per second). This is the floor any Taskiq-based engine pays.
* **SquidMesh through Taskiq**: a runtime on ``PostgresRunStore`` whose executor
  is a ``TaskiqExecutor`` on the same kind of broker (the process is its own
  worker). Serial runs of 1- and 10-step no-op workflows give the per-step
  latency as ``(T10 - T1) / 9``; a burst of concurrent 10-step runs gives
  steps per second. Once with ``inline_next_step`` on, once off.

Not part of the test run: ``make bench-taskiq`` runs it and rewrites the Taskiq
section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import redis.asyncio as aredis
from _finished import Finished
from _flows import chain_of
from _sections import write_section
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_backends.taskiq import TaskiqExecutor, redis_stream_broker
from squidmesh_core import WorkflowDefinition

DSN = os.environ.get("SQUIDMESH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SQUIDMESH_BENCH_REDIS", "redis://127.0.0.1:6379/0")
START = "<!-- taskiq-bench:start -->"
END = "<!-- taskiq-bench:end -->"
LEASE = timedelta(seconds=30)


ONE, TEN = chain_of(1, "bench.taskiq"), chain_of(10, "bench.taskiq")


@dataclass(frozen=True)
class Latency:
    samples: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


@dataclass(frozen=True)
class Raw:
    serial: Latency
    burst_per_second: float


@dataclass(frozen=True)
class Engine:
    inline: bool
    one_step: Latency
    ten_steps: Latency
    steps_per_second: float

    @property
    def per_step_ms(self) -> float:
        return (self.ten_steps.mean - self.one_step.mean) / 9 * 1000


async def raw_taskiq(serial: int, burst: int, redis_url: str = REDIS) -> Raw:
    """Taskiq alone: taskiq-redis's stream broker and Taskiq's own receiver."""
    queue = f"bench_raw_{secrets.token_hex(4)}"
    broker = redis_stream_broker(
        redis_url, lease=LEASE, queue=queue, broker_class=RedisStreamBroker
    )
    done: dict[int, asyncio.Future[None]] = {}

    async def ping(i: int) -> None:
        future = done.get(i)
        if future is not None and not future.done():
            future.set_result(None)

    task = broker.register_task(ping, task_name=f"bench.ping.{queue}")
    broker.is_worker_process = True
    await broker.startup()
    finish = asyncio.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        receiver = Receiver(
            broker=broker,
            executor=pool,
            run_startup=False,
            max_async_tasks=8,
            ack_type=AcknowledgeType.WHEN_EXECUTED,
        )
        listening = asyncio.create_task(receiver.listen(finish))
        loop = asyncio.get_running_loop()
        try:
            samples = []
            for i in range(serial + 5):
                done[i] = loop.create_future()
                began = time.perf_counter()
                await task.kiq(i)
                await asyncio.wait_for(done[i], 10)
                if i >= 5:  # warm-up
                    samples.append(time.perf_counter() - began)
            base = serial + 5
            for i in range(base, base + burst):
                done[i] = loop.create_future()
            began = time.perf_counter()
            for i in range(base, base + burst):
                await task.kiq(i)
            await asyncio.wait_for(
                asyncio.gather(*(done[i] for i in range(base, base + burst))), 60
            )
            rate = burst / (time.perf_counter() - began)
        finally:
            finish.set()
            listening.cancel()
            await asyncio.wait({listening}, timeout=5)
            await broker.shutdown()
            client = aredis.Redis.from_url(redis_url)
            await client.delete(queue)
            await client.aclose()
    return Raw(serial=Latency(samples), burst_per_second=rate)


async def squidmesh(
    inline: bool, serial: int, burst: int, dsn: str = DSN, redis_url: str = REDIS
) -> Engine:
    schema = f"bench_{secrets.token_hex(4)}"
    queue = f"bench_sm_{secrets.token_hex(4)}"
    await migrate(dsn, schema=schema)
    settings = RuntimeSettings(
        lease=LEASE,
        poll_interval=timedelta(milliseconds=200),
        claim_batch=32,
        inline_next_step=inline,
    )
    broker = redis_stream_broker(redis_url, lease=LEASE, queue=queue)
    store = PostgresRunStore(dsn, schema=schema, max_size=16)
    finished = Finished()
    runtime = Runtime(
        store=store,
        workflows=[ONE, TEN],
        executor=TaskiqExecutor(broker),
        settings=settings,
        sinks=[finished],
    )
    try:
        async with store, runtime:

            async def one_run(definition: WorkflowDefinition) -> float:
                began = time.perf_counter()
                run = (await runtime.start_run(definition, {})).unwrap()
                await asyncio.wait_for(finished.wait(run.id), 60)
                return time.perf_counter() - began

            for _ in range(3):
                await one_run(TEN)
            one = [await one_run(ONE) for _ in range(serial)]
            ten = [await one_run(TEN) for _ in range(serial)]
            began = time.perf_counter()
            ids = [(await runtime.start_run(TEN, {})).unwrap().id for _ in range(burst)]
            for run_id in ids:
                await asyncio.wait_for(finished.wait(run_id), 300)
            steps_per_second = burst * 10 / (time.perf_counter() - began)
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        client = aredis.Redis.from_url(redis_url)
        await client.delete(queue)
        await client.aclose()
    return Engine(inline, Latency(one), Latency(ten), steps_per_second)


def _ms(value: float) -> str:
    return f"{value * 1000:.2f}"


def report(raw: Raw, engines: list[Engine], command: str) -> str:
    lines = [
        START,
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}; PostgreSQL and Redis on loopback; one process "
        "(the runtime is its own Taskiq worker)",
        "",
        "| variant | serial latency mean / p50 / p95 (ms) | per-step overhead (ms) "
        "| burst throughput |",
        "| --- | --- | --- | --- |",
        f"| raw Taskiq round trip (RedisStreamBroker) | {_ms(raw.serial.mean)} / "
        f"{_ms(raw.serial.p50)} / {_ms(raw.serial.p95)} | {_ms(raw.serial.mean)} "
        f"| {raw.burst_per_second:,.0f} messages/s |",
    ]
    for engine in engines:
        name = "SquidMesh via Taskiq, inline " + ("on" if engine.inline else "off")
        ten = engine.ten_steps
        lines.append(
            f"| {name}: 10-step run | {_ms(ten.mean)} / {_ms(ten.p50)} / {_ms(ten.p95)} "
            f"| {engine.per_step_ms:.2f} ({engine.per_step_ms / (raw.serial.mean * 1000):.2f}x "
            f"raw) | {engine.steps_per_second:,.0f} steps/s |"
        )
    lines += [
        "",
        "Per-step overhead is `(T10 - T1) / 9` from serial runs, so run creation and",
        "the wait for completion cancel out. Without the inline path every step is",
        "claimed, published to Redis, received and then run; with it, a worker that",
        "finishes a step records its outcome and leases the next step in one commit,",
        "then runs it at once.",
        END,
    ]
    return "\n".join(lines)


async def measure(serial: int, burst: int, raw_burst: int) -> tuple[Raw, list[Engine]]:
    raw = await raw_taskiq(serial, raw_burst)
    engines = [await squidmesh(inline, serial, burst) for inline in (True, False)]
    return raw, engines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serial", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--raw-burst", type=int, default=2000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    raw, engines = asyncio.run(measure(args.serial, args.burst, args.raw_burst))
    command = (
        f"python bench/taskiq_steps.py --serial {args.serial} --burst {args.burst}"
        f" --raw-burst {args.raw_burst}"
    )
    text = report(raw, engines, command)
    print(text)
    if args.write:
        write_section(args.write, START, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
