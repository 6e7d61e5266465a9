"""The fault experiments. Each starts runs, injects its fault under load, and measures.

Every experiment has a small size (CI, on every change) and a full one
(``make chaos``); :data:`SIZES` holds both. All of them share one own
PostgreSQL cluster and one own Redis (``chaos.servers``), each in a schema and
stream of its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from chaos.hostile import HOSTILE
from chaos.lab import Figures, Lab, figures


@dataclass(frozen=True, slots=True)
class Size:
    """How much load and how many faults an experiment gets."""

    runs: int
    faults: int
    every: float
    """Seconds between faults."""
    workers: int = 3
    step_ms: int = 150


SIZES: dict[str, dict[str, Size]] = {
    "small": {"default": Size(runs=60, faults=3, every=0.8)},
    "full": {"default": Size(runs=400, faults=12, every=1.5)},
}

Experiment = Callable[[Lab, Size], Awaitable[Figures]]
DRAIN_TIMEOUT = 240.0


async def _under_load(lab: Lab, size: Size, inject: Callable[[int], Awaitable[None]]) -> float:
    """Start every run at once (a backlog), then inject a fault every ``size.every`` seconds.

    Returns the time of the last fault.
    """
    await lab.start_runs(size.runs)
    last = time.time()
    for n in range(size.faults):
        await asyncio.sleep(size.every)
        await inject(n)
        last = time.time()
    return last


async def _finish(lab: Lab, name: str, *, faults: int, last: float, notes: str = "") -> Figures:
    runs = await lab.finished(DRAIN_TIMEOUT)
    drained = time.time()
    codes = await lab.stop_workers()
    clean = all(c == 0 for c in codes)
    if not clean:
        notes = f"{notes}; worker exit codes {codes}" if notes else f"worker exit codes {codes}"
    return figures(
        lab, name, runs, faults=faults, last_fault=last, drained_at=drained, notes=notes,
        clean_exit=clean,
    )  # fmt: skip


async def _faulted(
    lab: Lab,
    size: Size,
    key: str,
    name: str,
    inject: Callable[[int], Awaitable[object]],
    *,
    sqlite: bool = False,
    workers: int | None = None,
) -> Figures:
    """The common shape: fresh lab, workers, a backlog, one fault every ``size.every``."""
    await lab.begin(key, sqlite=sqlite)
    await lab.start_workers(workers or size.workers, SQUIDMESH_CHAOS_STEP_MS=str(size.step_ms))
    results: list[object] = []

    async def injected(n: int) -> None:
        results.append(await inject(n))

    last = await _under_load(lab, size, injected)
    notes = ", ".join(str(r) for r in results if r)
    return await _finish(lab, name, faults=size.faults, last=last, notes=notes)


async def worker_kills(lab: Lab, size: Size) -> Figures:
    """Kill -9 of a random worker under load, a new one started in its place."""
    chooser = random.Random(7)

    async def inject(n: int) -> None:
        await lab.kill(chooser.choice(lab.workers))
        await lab.start_workers(1, SQUIDMESH_CHAOS_STEP_MS=str(size.step_ms))

    return await _faulted(lab, size, "kill9", "worker kill -9", inject)


async def redis_restart(lab: Lab, size: Size) -> Figures:
    """Redis stopped under load and started again empty."""

    async def inject(n: int) -> None:
        await asyncio.to_thread(lab.redis.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(lab.redis.start)

    return await _faulted(lab, size, "redis", "Redis restarted empty", inject)


async def redis_flushall(lab: Lab, size: Size) -> Figures:
    """FLUSHALL mid-flight: every queued message and the consumer group are gone."""

    async def inject(n: int) -> None:
        client = aioredis.Redis.from_url(lab.redis.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()

    return await _faulted(lab, size, "flush", "Redis FLUSHALL", inject)


async def postgres_stops(lab: Lab, size: Size) -> Figures:
    """PostgreSQL stopped (alternately fast and crash) under load, started after 2 s."""

    async def inject(n: int) -> None:
        await asyncio.to_thread(lab.postgres.stop, "immediate" if n % 2 else "fast")
        await asyncio.sleep(2)
        await asyncio.to_thread(lab.postgres.start)

    return await _faulted(lab, size, "pgstop", "PostgreSQL fast and crash stops", inject)


async def terminated_connections(lab: Lab, size: Size) -> Figures:
    """Every backend connection terminated (``pg_terminate_backend``) under load."""

    async def inject(n: int) -> str:
        return f"{await asyncio.to_thread(lab.terminate_backends)} connections ended"

    return await _faulted(lab, size, "pgterm", "connections terminated", inject)


async def triplicates(lab: Lab, size: Size) -> Figures:
    """Every message published three times."""
    await lab.begin("triple")
    await lab.start_workers(
        size.workers, SQUIDMESH_CHAOS_COPIES="3", SQUIDMESH_CHAOS_STEP_MS=str(size.step_ms)
    )
    await lab.start_runs(size.runs)
    return await _finish(lab, "every message three times", faults=size.runs, last=time.time())


async def hostile_messages(lab: Lab, size: Size) -> Figures:
    """Forged and malformed entries written to the stream while runs go on."""
    await lab.begin("hostile")
    await lab.start_workers(size.workers, SQUIDMESH_CHAOS_STEP_MS=str(size.step_ms))
    client = aioredis.Redis.from_url(lab.redis.url)
    written = 0
    try:
        for _ in range(max(size.faults // 3, 1)):
            await lab.start_runs(size.runs // max(size.faults // 3, 1))
            for fields, _ in HOSTILE.values():
                await client.xadd(lab.queue, fields)  # type: ignore[arg-type]
                written += 1
        last = time.time()
        runs = await lab.finished(DRAIN_TIMEOUT)
        drained = time.time()
        stored_runs, stored_jobs = lab.stored_rows()
        pending = await _unacknowledged(client, lab.queue)
    finally:
        await client.aclose()
    codes = await lab.stop_workers()
    return figures(
        lab, "forged and malformed messages", runs, faults=written, last_fault=last,
        drained_at=drained, refused_rows=stored_runs - len(lab.run_ids) + stored_jobs,
        pending=pending, clean_exit=all(c == 0 for c in codes),
    )  # fmt: skip


async def _unacknowledged(client: aioredis.Redis, queue: str, settle: float = 10.0) -> int:
    """Entries of ``queue`` not yet read or acknowledged, once the workers had ``settle`` s."""
    deadline = time.monotonic() + settle
    while True:
        groups = await client.xinfo_groups(queue)
        left = sum(int(g["pending"]) + int(g.get("lag") or 0) for g in groups)
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


async def sqlite_shared(lab: Lab, size: Size) -> Figures:
    """Two worker processes on one SQLite file, one killed -9 again and again."""

    async def inject(n: int) -> None:
        await lab.kill(lab.workers[0])
        await lab.start_workers(1, SQUIDMESH_CHAOS_STEP_MS=str(size.step_ms))

    name = "SQLite shared by two processes, kill -9"
    return await _faulted(lab, size, "sqlite", name, inject, sqlite=True, workers=2)


EXPERIMENTS: dict[str, Experiment] = {
    "kill9": worker_kills,
    "redis": redis_restart,
    "flush": redis_flushall,
    "pgstop": postgres_stops,
    "pgterm": terminated_connections,
    "triple": triplicates,
    "hostile": hostile_messages,
    "sqlite": sqlite_shared,
}
