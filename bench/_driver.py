"""The scenarios of the side-by-side benchmark, shared by every engine's runner.

This module needs only the standard library and psycopg, so each engine's
runner can import it from its own environment (DBOS runs in a separate virtual
environment from SquidMesh). An engine is any object with these coroutines:

* ``run(steps)``: start one workflow of ``steps`` sequential no-op steps and
  return once it has completed;
* ``timer(seconds)``: run one workflow whose single ``wait``/sleep lasts
  ``seconds`` and return how late the step after it started (seconds);
* ``enqueue(count)``: start ``count`` one-step workflows without waiting;
* ``pending()``: how many of this engine's workflows have not finished (read
  from its own tables, the same way for every engine).

A runner prints one JSON object on its last line of output; ``compare.py``
collects them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import psycopg


class Engine(Protocol):
    async def run(self, steps: int) -> None: ...
    async def timer(self, seconds: float) -> float: ...
    async def enqueue(self, count: int) -> None: ...
    async def pending(self) -> int: ...


def summary(samples: list[float]) -> dict[str, float]:
    """Mean and percentiles of ``samples`` (seconds), in milliseconds."""
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    return {
        "n": len(ordered),
        "mean": statistics.fmean(ordered) * 1000,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
    }


def counters(dsn: str) -> dict[str, int]:
    """Server-side counters of the engine's database, plus the cluster's WAL position."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    keys = ("transactions", "inserted", "updated", "deleted", "wal_bytes")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, float]:
    return {k: float(after[k] - before[k]) for k in after}


async def timed(call: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    await call()
    return time.perf_counter() - began


async def at_concurrency(engine: Engine, workflows: int, concurrency: int, steps: int) -> float:
    """Run ``workflows`` workflows, ``concurrency`` in flight at any time; the wall time."""
    remaining = workflows

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await engine.run(steps)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - began


async def serial(engine: Engine, count: int, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Serial latency by workflow length; per-step overhead from the 1- and 10-step means.

    ``(T10 - T1) / 9`` rather than ``(T10 - T0) / 10``: a SquidMesh workflow needs
    at least one step, and both forms cancel the cost of starting and finishing.
    The 0-step figure is kept for engines that have one.
    """
    out: dict[str, Any] = {}
    for steps in sizes:
        samples = [await timed(partial(engine.run, steps)) for _ in range(count)]
        out[f"steps_{steps}"] = summary(samples)
    out["per_step_ms"] = (out["steps_10"]["mean"] - out["steps_1"]["mean"]) / 9
    if "steps_0" in out:
        out["per_step_from_0_ms"] = (out["steps_10"]["mean"] - out["steps_0"]["mean"]) / 10
    return out


async def throughput(engine: Engine, workflows: int, concurrency: int) -> dict[str, float]:
    seconds = await at_concurrency(engine, workflows, concurrency, 10)
    return {
        "concurrency": concurrency,
        "workflows": workflows,
        "seconds": seconds,
        "workflows_per_s": workflows / seconds,
        "steps_per_s": workflows * 10 / seconds,
    }


async def writes(
    engine: Engine, dsn: str, workflows: int, *, concurrency: int, idle: float, settle: float
) -> dict[str, float]:
    """Server work per step transition, less the engine's idle background rate.

    A backend reports its statistics to ``pg_stat_database`` about a second after
    it goes idle, but up to ten seconds later when many report at once (the
    shared statistics lock is only tried, and retried after
    ``PGSTAT_IDLE_INTERVAL``). Each reading is therefore taken after a quiet
    spell of eleven seconds, and this scenario runs first, before the others.
    """

    await asyncio.sleep(settle)
    before_idle = counters(dsn)
    began = time.perf_counter()
    await asyncio.sleep(idle)
    idle_rate = {
        k: v / (time.perf_counter() - began) for k, v in delta(counters(dsn), before_idle).items()
    }
    before = counters(dsn)
    # What the engine counts itself, if anything (SquidMesh's store counts its commits).
    own: Callable[[], dict[str, int]] = getattr(engine, "own_counters", dict)
    own_before = own()
    began = time.perf_counter()
    await at_concurrency(engine, workflows, concurrency, 10)
    own_after = own()
    await asyncio.sleep(settle)
    elapsed = time.perf_counter() - began
    raw = delta(counters(dsn), before)
    steps = workflows * 10
    per_step = {k: max(0.0, raw[k] - idle_rate[k] * elapsed) / steps for k in raw}
    for k, v in own_after.items():
        per_step[k] = (v - own_before[k]) / steps
    per_step["idle_transactions_per_s"] = idle_rate["transactions"]
    per_step["idle_wal_bytes_per_s"] = idle_rate["wal_bytes"]
    return per_step


async def timers(engine: Engine, count: int, seconds: float, concurrency: int) -> dict[str, float]:
    late: list[float] = []
    remaining = count

    async def client(offset: float) -> None:
        nonlocal remaining
        await asyncio.sleep(offset)  # spread the due times
        while remaining > 0:
            remaining -= 1
            late.append(await engine.timer(seconds))

    await asyncio.gather(*(client(i * seconds / concurrency) for i in range(concurrency)))
    return summary(late) | {"wait_s": seconds}


def memory_kib() -> tuple[int, int]:
    """This process's resident set now and its peak (``VmRSS``, ``VmHWM``), in KiB.

    Not ``getrusage``: its peak survives ``exec`` on Linux, so a runner started
    by a larger parent would report the parent's peak.
    """
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def scale(engine: Engine, count: int) -> dict[str, float]:
    """Start ``count`` one-step workflows, then wait until all have finished."""
    gc.collect()
    rss0, _ = memory_kib()
    began = time.perf_counter()
    await engine.enqueue(count)
    started = time.perf_counter() - began
    while await engine.pending() > 0:
        await asyncio.sleep(0.1)
    total = time.perf_counter() - began
    _, peak = memory_kib()
    return {
        "runs": count,
        "start_s": started,
        "total_s": total,
        "us_per_run": total / count * 1e6,
        "rss_before_mb": rss0 / 1024,
        "peak_rss_mb": peak / 1024,
        "peak_growth_kb_per_run": max(0, peak - rss0) / count,
    }


async def drive(engine: Engine, dsn: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the scenarios ``spec`` names, after a warm-up."""
    out: dict[str, Any] = {}
    if "scale" in spec:
        await engine.run(1)  # warm-up
        out["scale"] = await scale(engine, int(spec["scale"]))
        return out
    for _ in range(int(spec.get("warmup", 20))):
        await engine.run(10)
    if "writes" in spec:
        out["writes"] = await writes(
            engine,
            dsn,
            int(spec["writes"]),
            concurrency=16,
            idle=float(spec.get("idle", 5)),
            settle=float(spec.get("settle", 11)),
        )
    if "serial" in spec:
        out["serial"] = await serial(
            engine, int(spec["serial"]), tuple(spec.get("sizes", (0, 1, 10)))
        )
    if "throughput" in spec:
        workflows = int(spec["throughput"])
        out["throughput"] = [
            await throughput(engine, workflows, c) for c in spec.get("concurrency", [16, 64])
        ]
    if "timers" in spec:
        out["timers"] = await timers(
            engine,
            int(spec["timers"]),
            float(spec.get("wait", 0.5)),
            int(spec.get("timer_concurrency", 20)),
        )
    return out


def emit(result: dict[str, Any]) -> None:
    """The runner's result: the last line of its standard output."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
