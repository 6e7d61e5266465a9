"""``squidmesh worker``: a process that claims due jobs, publishes them and runs steps.

The host's runtime (``--app``) must execute through Taskiq (``compose(...,
broker=...)``) for the work to spread over processes; any runtime works. The
worker runs until SIGTERM or SIGINT, then stops claiming, lets running steps
finish within the runtime's ``shutdown_timeout``, releases the leases of those
that did not, and exits. A second signal exits at once (leases then expire).
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
from squidmesh_backends.taskiq import TaskiqExecutor

LOG = get_logger("squidmesh.worker")
READY = "squidmesh worker ready"


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
            kind = type(executor).__name__
            print(
                f"{READY}: pid {os.getpid()}, {kind}, concurrency "
                f"{getattr(executor, 'concurrency', '?')}",
                file=out,
                flush=True,
            )
            await stopping.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    print(f"squidmesh worker stopped: pid {os.getpid()}", file=out, flush=True)
    return 0
