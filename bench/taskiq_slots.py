"""Benchmark: a one-slot Taskiq worker keeps its slot busy (the idle-slot fix).

A runtime with ``concurrency=1`` on PostgreSQL and Redis is its own Taskiq
worker. ``--runs`` one-step runs, whose step works ``--step-ms``, are started at
once; the figure is runs per second and the mean gap between one run's end and
the next run's start. The ideal gap is the dispatch cost (milliseconds); a slot
left idle after a fast delivery showed as gaps of about two seconds
(``PUBLISH_HORIZON``).

Not part of the test run. ``python bench/taskiq_slots.py --write docs/performance.md``
rewrites its section; run it with ``PYTHONPATH`` pointing at another checkout to
measure that one (the section records the commit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import redis.asyncio as aredis
from _finished import Finished
from _sections import write_section

import squidmesh_backends
from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_backends.taskiq import TaskiqExecutor, redis_stream_broker
from squidmesh_core import COMPLETE, StepContext, chain, manual, step, workflow

DSN = os.environ.get("SQUIDMESH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SQUIDMESH_BENCH_REDIS", "redis://127.0.0.1:6379/0")
START = "<!-- taskiq-slots:start -->"
END = "<!-- taskiq-slots:end -->"
STARTS: dict[str, float] = {}
ENDS: dict[str, float] = {}
STEP_SECONDS = [0.05]


async def work(data: dict[str, object], ctx: StepContext) -> dict[str, object]:
    STARTS[ctx.run_id] = time.perf_counter()
    await asyncio.sleep(STEP_SECONDS[0])
    ENDS[ctx.run_id] = time.perf_counter()
    return {}


ONE = workflow(
    "bench.slots",
    triggers=[manual()],
    steps=[step("work", work)],
    transitions=chain("work", COMPLETE),
)


def commit_of(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


async def measure(runs: int) -> tuple[float, float, float]:
    schema = f"bench_{secrets.token_hex(4)}"
    queue = f"bench_slots_{secrets.token_hex(4)}"
    await migrate(DSN, schema=schema)
    settings = RuntimeSettings(poll_interval=timedelta(seconds=1), concurrency=1)
    store = PostgresRunStore(DSN, schema=schema, max_size=4)
    finished = Finished()
    runtime = Runtime(
        store=store,
        workflows=[ONE],
        executor=TaskiqExecutor(
            redis_stream_broker(REDIS, lease=settings.lease, queue=queue), concurrency=1
        ),
        settings=settings,
        sinks=[finished],
    )
    try:
        async with store, runtime:
            began = time.perf_counter()
            ids = [(await runtime.start_run(ONE, {})).unwrap().id for _ in range(runs)]
            for run_id in ids:
                await asyncio.wait_for(finished.wait(run_id), 600)
            took = time.perf_counter() - began
    finally:
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        client = aredis.Redis.from_url(REDIS)
        await client.delete(queue)
        await client.aclose()
    order = sorted(ids, key=STARTS.__getitem__)
    gaps = [STARTS[b] - ENDS[a] for a, b in itertools.pairwise(order)]
    return runs / took, statistics.fmean(gaps), max(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--step-ms", type=float, default=50)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    STEP_SECONDS[0] = args.step_ms / 1000
    tree = Path(squidmesh_backends.__file__).resolve().parents[1]
    rate, gap, worst = asyncio.run(measure(args.runs))
    line = (
        f"| {commit_of(tree)} | {args.runs} runs, step {args.step_ms:.0f} ms | {rate:.2f} runs/s"
        f" | {gap * 1000:.0f} ms | {worst * 1000:.0f} ms |"
    )
    print(line)
    if args.write:
        doc = args.write.read_text()
        _, _, rest = doc.partition(START)
        kept = [
            row
            for row in rest.partition(END)[0].splitlines()
            if row.startswith("| ") and "commit" not in row and "---" not in row
        ]
        text = "\n".join(
            [
                START,
                "Command: `python bench/taskiq_slots.py"
                f" --runs {args.runs} --step-ms {args.step_ms:.0f}`",
                "",
                "| commit | load | throughput | mean gap between runs | worst gap |",
                "| --- | --- | --- | --- | --- |",
                *kept[-3:],
                line,
                END,
            ]
        )
        write_section(args.write, START, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
