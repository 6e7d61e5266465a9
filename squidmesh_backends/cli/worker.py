"""``squidmesh worker``: a process that claims due jobs, publishes them and runs steps.

The host's runtime (``--app``) must execute through Taskiq (``compose(...,
broker=...)``) for the work to spread over processes; any runtime works. The
worker runs until SIGTERM or SIGINT, then stops claiming, lets running steps
finish within the runtime's ``shutdown_timeout``, releases the leases of those
that did not, and exits. A second signal exits at once (leases then expire).

Its first line on stdout says what is active: the store (credentials
redacted) and schema, the broker and its namespace's stream, the workflows,
the cron triggers started here, and the concurrency.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TextIO

from squidmesh_backends.cli.app import load_runtime
from squidmesh_backends.logs import get_logger
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_backends.taskiq import TaskiqExecutor, describe_broker

LOG = get_logger("squidmesh.worker")
READY = "squidmesh worker ready"


def describe_store(runtime: Runtime) -> str:
    """``PostgreSQL app@db:5432/prod schema public`` (no password), ``SQLite x.db``, ``memory``."""
    store = runtime.store
    dsn, schema, path = (getattr(store, name, None) for name in ("dsn", "schema", "path"))
    if isinstance(dsn, str):
        from squidmesh_backends.postgres import describe_dsn

        return f"PostgreSQL {describe_dsn(dsn)} schema {schema}"
    if isinstance(path, str):
        return f"SQLite {path}"
    return type(store).__name__


def ready_line(runtime: Runtime) -> str:
    """What this worker serves, on one line."""
    executor = runtime.worker.executor
    broker = (
        describe_broker(executor.broker)
        if isinstance(executor, TaskiqExecutor)
        else "none (steps run in this process)"
    )
    cron = runtime.worker.cron_loop
    triggers = ", ".join(f"{a.definition.name}/{a.trigger}" for a in cron.schedules) if cron else ""
    return (
        f"{READY}: pid {os.getpid()}; store {describe_store(runtime)}; broker {broker};"
        f" workflows {', '.join(sorted(runtime.workflows)) or 'none'};"
        f" cron {triggers or 'none'};"
        f" concurrency {getattr(executor, 'concurrency', '?')}"
        f" ({type(executor).__name__})"
    )


async def run_worker(app: str, *, concurrency: int | None, out: TextIO = sys.stdout) -> int:
    """Serve until signalled; 0 after a clean stop."""
    runtime = load_runtime(app)
    executor = runtime.worker.executor
    if concurrency is not None and isinstance(executor, TaskiqExecutor | InProcessExecutor):
        executor.concurrency = concurrency
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            LOG.warning("second signal: exiting without waiting")
            os._exit(1)
        LOG.info("signal %s: stopping", signum)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with runtime:
            print(ready_line(runtime), file=out, flush=True)
            await stopping.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    print(f"squidmesh worker stopped: pid {os.getpid()}", file=out, flush=True)
    return 0
