"""The lab an experiment runs in: own servers, worker processes, a producer, and the figures.

Figures come from two sources that cannot lie for each other: the store (each
run's attempts, with ``lost`` ones) and the attempt log the workers' steps
append to (``start`` and ``ran`` lines). A step that *ran* more than once is
explained when every extra run is an attempt of its own recorded ``lost``: a
worker killed after the step's body but before its commit.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from chaos.app import steps
from chaos.processes import WorkerProcess
from chaos.servers import OwnPostgres, OwnRedis
from squidmesh_backends import Client
from squidmesh_backends.postgres import migrate
from squidmesh_backends.runtime.bootstrap import open_store
from squidmesh_core import AttemptStatus, RunStatus
from squidmesh_core.ports import RunStore
from squidmesh_core.state import RunState

APP = "chaos.app:runtime"


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """What one experiment measured."""

    name: str
    runs: int
    completed: int
    faults: int
    """Faults injected: kills, restarts, flushes, terminated connections, hostile entries."""
    lost_attempts: int
    repeated_steps: int
    """(run, step) pairs whose body ran to its end more than once."""
    unexplained: int
    """Of those, repeats no lost attempt accounts for (must be 0)."""
    reclaim: tuple[float, float, float] | None
    """Seconds from a kill to the lost attempt's retry starting: min, median, max."""
    drain: float
    """Seconds from the last fault to every run finished."""
    refused_rows: int | None = None
    """Rows in the store that no started run accounts for (hostile input only)."""
    pending: int = 0
    """Stream entries left unacknowledged after the drain (hostile input only)."""
    clean_exit: bool = True
    """Whether every worker still running at the end exited 0 on SIGTERM."""
    notes: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.completed == self.runs
            and self.unexplained == 0
            and (self.refused_rows or 0) == 0
            and self.pending == 0
            and self.clean_exit
        )


@dataclass(slots=True)
class Lab:
    """Own PostgreSQL and Redis, and the workers and runs of the current experiment."""

    postgres: OwnPostgres
    redis: OwnRedis
    root: Path
    schema: str = ""
    queue: str = ""
    log: Path = field(default_factory=Path)
    workers: list[WorkerProcess] = field(default_factory=list)
    kills: dict[int, float] = field(default_factory=dict)
    """Killed worker pid -> when (Unix time)."""
    run_ids: list[str] = field(default_factory=list)
    store_spec: str = ""

    async def begin(self, name: str, *, sqlite: bool = False) -> None:
        """A fresh schema (or SQLite file), queue and attempt log for experiment ``name``."""
        self.workers, self.kills, self.run_ids = [], {}, []
        self.queue = f"chaos_{name}_{secrets.token_hex(3)}"
        self.log = self.root / f"{name}.log"
        self.log.write_text("")
        if sqlite:
            self.store_spec = f"sqlite:{self.root / f'{name}.db'}"
            return
        self.schema = self.queue
        await migrate(self.postgres.dsn, schema=self.schema)
        self.store_spec = f"{self.postgres.dsn}?schema={self.schema}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "SQUIDMESH_CHAOS_STORE": self.store_spec,
            "SQUIDMESH_CHAOS_QUEUE": self.queue,
            "SQUIDMESH_CHAOS_LOG": str(self.log),
        }
        if not self.store_spec.startswith("sqlite:"):
            env["SQUIDMESH_CHAOS_REDIS"] = self.redis.url
        return {**env, **extra}

    async def start_workers(self, count: int, **extra: str) -> list[WorkerProcess]:
        started = [WorkerProcess(APP, self.env(**extra)) for _ in range(count)]
        for worker in started:
            await asyncio.to_thread(worker.wait_ready)
        self.workers.extend(started)
        return started

    async def kill(self, worker: WorkerProcess) -> None:
        self.kills[worker.pid] = time.time()
        await asyncio.to_thread(worker.kill)
        self.workers.remove(worker)

    async def stop_workers(self) -> list[int]:
        codes = [await asyncio.to_thread(w.terminate) for w in self.workers]
        self.workers = []
        return codes

    def store(self) -> RunStore:
        return open_store(self.store_spec)

    async def start_runs(self, count: int) -> None:
        store = self.store()
        try:
            client = Client(store=store, workflows=[steps])
            for _ in range(count):
                self.run_ids.append((await client.start_run(steps, {})).unwrap().id)
        finally:
            await store.close()

    async def finished(self, timeout: float) -> list[RunState]:
        """Every run of this experiment once all are terminal (or when ``timeout`` passes)."""
        store = self.store()
        deadline = time.monotonic() + timeout
        try:
            while True:
                runs = [await store.load(r) for r in self.run_ids]  # type: ignore[arg-type]
                found = [r for r in runs if r is not None]
                if all(r.status.terminal for r in found) or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.2)
        finally:
            await store.close()

    def lines(self) -> list[tuple[str, int, str, str, int, float]]:
        rows = []
        for line in self.log.read_text().splitlines():
            what, pid, run, step, attempt, at = line.split()
            rows.append((what, int(pid), run, step, int(attempt), float(at)))
        return rows

    def stored_rows(self) -> tuple[int, int]:
        """Runs and jobs in this experiment's schema."""
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            runs = conn.execute(f'SELECT count(*) FROM "{self.schema}".squidmesh_runs').fetchone()
            jobs = conn.execute(f'SELECT count(*) FROM "{self.schema}".squidmesh_jobs').fetchone()
        return (runs[0] if runs else 0, jobs[0] if jobs else 0)

    def terminate_backends(self) -> int:
        """End every other connection to the server; how many were ended."""
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        return len(rows)


def figures(
    lab: Lab,
    name: str,
    runs: Sequence[RunState],
    *,
    faults: int,
    last_fault: float,
    drained_at: float,
    refused_rows: int | None = None,
    pending: int = 0,
    clean_exit: bool = True,
    notes: str = "",
) -> Figures:
    """Figures of an experiment whose runs have finished."""
    lines = lab.lines()
    ran = Counter((run, step, n) for what, _, run, step, n, _ in lines if what == "ran")
    started = {
        (run, step, n): (pid, at) for what, pid, run, step, n, at in lines if what == "start"
    }
    lost: set[tuple[str, str, int]] = set()
    delays: list[float] = []
    for run in runs:
        for step_state in run.steps:
            attempts = step_state.attempts
            for index, attempt in enumerate(attempts):
                if attempt.status is not AttemptStatus.LOST:
                    continue
                lost.add((run.id, step_state.step, attempt.number))
                began = started.get((run.id, step_state.step, attempt.number))
                killed_at = lab.kills.get(began[0]) if began else None
                if killed_at is not None and index + 1 < len(attempts):
                    retry = attempts[index + 1].started_at.timestamp()
                    delays.append(max(retry - killed_at, 0.0))
    bodies: Counter[tuple[str, str]] = Counter()
    for (run_id, step, _), count in ran.items():
        bodies[(run_id, step)] += count
    repeated = [key for key, count in bodies.items() if count > 1]
    unexplained = sum(1 for key in repeated if not _explained(key, ran, lost))
    reclaim = None
    if delays:
        reclaim = (min(delays), statistics.median(delays), max(delays))
    return Figures(
        name=name,
        runs=len(lab.run_ids),
        completed=sum(r.status is RunStatus.COMPLETED for r in runs),
        faults=faults,
        lost_attempts=len(lost),
        repeated_steps=len(repeated),
        unexplained=unexplained,
        reclaim=reclaim,
        drain=max(drained_at - last_fault, 0.0),
        refused_rows=refused_rows,
        pending=pending,
        clean_exit=clean_exit,
        notes=notes,
    )


def _explained(
    key: tuple[str, str], ran: Counter[tuple[str, str, int]], lost: set[tuple[str, str, int]]
) -> bool:
    """Whether every extra run of a step's body is an attempt recorded ``lost``.

    An attempt whose body ran twice is never explained (the store would have
    started a new attempt); of the attempts whose body ran, all but one must be
    lost ones (their outcome never committed).
    """
    mine = {n: count for (run, step, n), count in ran.items() if (run, step) == key}
    if any(count > 1 for count in mine.values()):
        return False
    return sum(1 for n in mine if (*key, n) not in lost) <= 1
