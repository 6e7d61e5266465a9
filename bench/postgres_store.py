"""Benchmark: the runtime on PostgreSQL, and what each step transition costs the server.

Runs complete runs of a 10-step no-op workflow through a started in-process
Runtime over ``PostgresRunStore`` in a throwaway schema, then reports:

* runs/s and steps/s at the given concurrency;
* write transactions and statements per decision (the store's probe counts), and
  every transaction the server committed per step (``pg_stat_database``, which
  also counts claims, heartbeats and autocommit reads);
* WAL bytes per step (``pg_current_wal_lsn()`` before and after);
* the statements of one "step succeeded, next step scheduled" transaction.

Not part of the test run: ``make bench-postgres`` runs it and rewrites the
PostgreSQL section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
from _flows import chain_of
from _sections import write_section

from squidmesh_backends.postgres import PostgresRunStore, migrate
from squidmesh_backends.probe import COMMITS, LAST_COMMIT, STATEMENTS, Counters
from squidmesh_backends.runtime import Runtime, RuntimeSettings
from squidmesh_core import RunStatus
from squidmesh_core.commands import Lease
from squidmesh_core.events import StepSucceeded
from squidmesh_core.handoff import decide_outcome
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import Fence
from squidmesh_core.testing.contracts.run_store import (
    FLOW,
    LEASE,
    T0,
    committed,
    deliver,
    new_run,
)

DSN = os.environ.get("SQUIDMESH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
START = "<!-- postgres-bench:start -->"
END = "<!-- postgres-bench:end -->"


TEN = chain_of(10, "bench.pg")


@dataclass(frozen=True)
class Result:
    runs: int
    concurrency: int
    seconds: float
    store_transactions: int
    store_statements: int
    server_transactions: int
    wal_bytes: int
    statement_list: list[str]
    server_version: str

    @property
    def steps(self) -> int:
        return self.runs * len(TEN.steps)

    @property
    def decisions(self) -> int:
        return self.store_transactions


async def _server_counters(dsn: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cursor = await conn.execute(
            "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


async def measure(runs: int, concurrency: int, dsn: str = DSN) -> Result:
    schema = f"bench_{secrets.token_hex(4)}"
    await migrate(dsn, schema=schema)
    settings = RuntimeSettings(
        poll_interval=timedelta(milliseconds=200),
        lease=timedelta(seconds=30),
        heartbeat_every=timedelta(seconds=10),
        concurrency=concurrency,
        claim_batch=concurrency,
    )
    try:
        probe = Counters()
        store = PostgresRunStore(dsn, schema=schema, max_size=max(4, concurrency // 2), probe=probe)
        async with store, Runtime(store=store, workflows=[TEN], settings=settings) as runtime:
            warm = (await runtime.start_run(TEN, {})).unwrap()
            await runtime.wait_for(warm.id, timeout=timedelta(seconds=60))
            async with await psycopg.AsyncConnection.connect(dsn) as conn:
                version = str((await (await conn.execute("SHOW server_version")).fetchall())[0][0])
            # The pg_stat counters are flushed lazily; let the warm-up settle first.
            await asyncio.sleep(1.2)
            xact0, wal0 = await _server_counters(dsn)
            tx0, st0 = probe[COMMITS], probe[STATEMENTS]
            began = time.perf_counter()
            ids = [(await runtime.start_run(TEN, {})).unwrap().id for _ in range(runs)]
            for run_id in ids:
                done = (await runtime.wait_for(run_id, timeout=timedelta(seconds=600))).unwrap()
                assert done.status is RunStatus.COMPLETED, done.status
            seconds = time.perf_counter() - began
            tx, st = probe[COMMITS] - tx0, probe[STATEMENTS] - st0
            await asyncio.sleep(1.2)
            xact1, wal1 = await _server_counters(dsn)
        statements = await _one_transition(store)  # with the runtime stopped
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return Result(
        runs=runs,
        concurrency=concurrency,
        seconds=seconds,
        store_transactions=tx,
        store_statements=st,
        server_transactions=xact1 - xact0,
        wal_bytes=wal1 - wal0,
        statement_list=statements,
        server_version=version,
    )


async def _one_transition(store: PostgresRunStore) -> list[str]:
    """The statements of one step transition as the inline path commits it.

    Step ``first`` succeeded and the same worker starts the next step under a
    new lease (``decide_outcome`` with ``next_lease``), fenced by the old lease.
    """
    probe = Counters()
    caller = PostgresRunStore(
        store.dsn, schema=store.schema, clock="caller", max_size=1, probe=probe
    )
    async with caller:
        state = await committed(caller, new_run(999_999))
        state, token = await deliver(caller, state, T0)
        job = JobId(f"{state.id}/first/1")
        succeeded = StepSucceeded(job_id=job, lease_token=token, output={"a": 1})
        lease = Lease(token=LeaseToken("n"), until=T0 + LEASE, owner="bench")
        both = decide_outcome(FLOW, state, succeeded, now=T0, next_lease=lease).unwrap()
        assert both.started is not None, "the next step was not handed over"
        await committed(caller, both, Fence(job_id=job, lease_token=token))
        lines = probe.detail(LAST_COMMIT)
        assert isinstance(lines, list)
        return [str(line).replace(f'"{store.schema}".', "") for line in lines]


async def transition_statements(dsn: str = DSN) -> list[str]:
    """The statements of one step transition, in a throwaway schema of ``dsn``."""
    schema = f"bench_{secrets.token_hex(4)}"
    await migrate(dsn, schema=schema)
    try:
        return await _one_transition(PostgresRunStore(dsn, schema=schema, max_size=1))
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(result: Result, command: str) -> str:
    per_decision_statements = result.store_statements / result.decisions
    lines = [
        START,
        f"Command: `{command}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}, PostgreSQL {result.server_version} on loopback; "
        "one process, in-process executor",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| runs (10 no-op steps each) | {result.runs:,} at concurrency {result.concurrency} |",
        f"| wall time | {result.seconds:.2f} s |",
        f"| runs per second | {result.runs / result.seconds:,.1f} |",
        f"| steps per second | {result.steps / result.seconds:,.0f} |",
        f"| write transactions (commits) | {result.decisions:,} "
        f"({result.decisions / result.steps:.2f} per step: one per transition, plus the run's "
        "creation and its first step's start) |",
        f"| statements per commit (mean) | {per_decision_statements:.2f} |",
        f"| server transactions per step (all kinds) | "
        f"{result.server_transactions / result.steps:.2f} |",
        f"| WAL bytes per step | {result.wal_bytes / result.steps:,.0f} |",
        "",
        "Statements of one transition (a step's success recorded and the next step started"
        " under the same worker's new lease), sent as one pipeline in one transaction:",
        "",
        *[f"{i}. `{line}`" for i, line in enumerate(result.statement_list, 1)],
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--write", type=Path, help="Markdown file whose section to rewrite")
    args = parser.parse_args()
    result = asyncio.run(measure(args.runs, args.concurrency))
    command = f"python bench/postgres_store.py --runs {args.runs} --concurrency {args.concurrency}"
    text = report(result, command)
    print(text)
    if args.write:
        write_section(args.write, START, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
