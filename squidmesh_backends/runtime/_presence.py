"""A worker's presence in the store: who runs, where, with what, and since when.

Rules:

1. **A worker reports itself** under its name (``RuntimeSettings.owner``) when it
   starts, every ``heartbeat_every`` while it runs, and as stopped when it stops
   (``RunStore.record_worker``). Operators read the rows in ``store_status``.
2. **A report never stops the worker.** The store being down is logged once per
   outage (``Outage``); any other error is logged with its traceback; the next
   report tries again.
3. **The details say what this process is**: ``pid``, ``host``, the executor's
   class and capacity (``concurrency``) and the names of the workflows it runs.
"""

from __future__ import annotations

import asyncio
import os
import socket

from squidmesh_backends.errors import BackendError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import Outage, log_failure
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.ports import Clock, Executor, RunStore

LOG = get_logger("squidmesh.runtime")


def worker_details(executor: Executor, workflows: list[str]) -> JsonObject:
    """What a worker says about itself (rule 3)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "executor": type(executor).__name__,
        "concurrency": executor.capacity,
        "workflows": sorted(workflows),
    }


class Presence:
    """Reports one worker to the store (see the module docstring)."""

    def __init__(
        self, *, store: RunStore, clock: Clock, name: str, every: float, details: JsonObject
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.every = every
        """Seconds between reports while the worker runs."""
        self.details = details
        self.outage = Outage("the store (worker reports)", logger="squidmesh.runtime")

    async def report(self, *, stopped: bool = False) -> bool:
        """Write this worker's row; ``False`` (and a log line) if that failed (rule 2)."""
        try:
            await self.store.record_worker(
                self.name, at=self.clock.now(), details=self.details, stopped=stopped
            )
        except BackendError as exc:
            self.outage.failed(exc)
            return False
        except Exception as exc:  # a bug: logged with its traceback, never fatal
            log_failure(LOG, f"recording worker {self.name} failed", exc)
            return False
        self.outage.reached()
        return True

    async def run(self) -> None:
        """Report every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            await self.report()
