"""The DBOS Transact runner of the side-by-side benchmark (runs in the peer's own venv).

DBOS 3.4.0 with its system database on the benchmark's PostgreSQL, in its own
database. It starts no admin server (3.4.0 has none) and no Conductor
connection. Workflows and steps are ``async`` functions, the natural match for
an asyncio application; each no-op step is a ``@DBOS.step`` and so records its
output, which is what makes a DBOS step durable.

Usage: ``python bench/engines/dbos_engine.py --dsn URL --spec JSON``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from _driver import drive, emit
from dbos import DBOS, DBOSConfig, Queue

logging.getLogger("dbos").setLevel(logging.WARNING)


@DBOS.step()
async def noop() -> None:
    return None


@DBOS.workflow()
async def steps_flow(n: int) -> None:
    for _ in range(n):
        await noop()


@DBOS.workflow()
async def timer_flow(seconds: float) -> float:
    due = time.time() + seconds
    await DBOS.sleep_async(seconds)
    return time.time() - due  # how late the code after the sleep started


class DbosEngine:
    def __init__(self, dsn: str, queue: Queue) -> None:
        self.dsn = dsn
        self.queue = queue

    async def run(self, steps: int) -> None:
        await steps_flow(steps)

    async def timer(self, seconds: float) -> float:
        return await timer_flow(seconds)

    async def enqueue(self, count: int) -> None:
        for _ in range(count):
            await self.queue.enqueue_async(steps_flow, 1)

    async def pending(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM dbos.workflow_status"
                " WHERE status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')"
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def main_async(dsn: str, spec: dict[str, Any]) -> dict[str, Any]:
    config: DBOSConfig = {
        "name": "squidmesh-bench-peer",
        "system_database_url": dsn,
        "sys_db_pool_size": int(spec.get("pool", 20)),
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        # The durable-queue way to start many workflows and let workers drain them.
        queue = await DBOS.register_queue_async(
            "bench_scale", worker_concurrency=64, polling_interval_sec=0.05
        )
        result = await drive(DbosEngine(dsn, queue), dsn, spec)
    finally:
        DBOS.destroy()
    result["version"] = version("dbos")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--spec", required=True, help="the scenarios, as JSON")
    args = parser.parse_args()
    emit(asyncio.run(main_async(args.dsn, json.loads(args.spec))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
