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
4. **The stop report is best-effort.** It gets ``stop_within`` seconds (2 by
   default) instead of the store's whole retry budget, so a shutdown while the
   store is down is not held up; if it does not finish, one warning says so
   and the row simply stops being refreshed (it is seen as gone by its
   ``last_seen``).
5. **Each running worker has its own row.** Workers with the default name
   ``host:pid`` (see ``default_owner``) in one process would share a row, so
   while one runs under that name the next to start reports itself as
   ``host:pid#2``, then ``#3``, the lowest free number first; the number is
   given back when that worker stops. Only the row's name has it: leases and
   attempts still record ``host:pid``, the process that ran them. A name set
   in ``RuntimeSettings.owner`` is used as given (keeping those distinct is
   the caller's choice).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading

from squidmesh_backends.errors import BackendError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import Outage, log_failure
from squidmesh_core.jsonvalue import JsonObject
from squidmesh_core.ports import Clock, Executor, RunStore

LOG = get_logger("squidmesh.runtime")
STOP_REPORT_WITHIN = 2.0
"""Seconds the stop report may take before shutdown goes on without it (rule 4)."""

_running: set[str] = set()
"""Row names in use by the running workers of this process (rule 5)."""
_running_lock = threading.Lock()


def _claim(name: str) -> str:
    """``name``, or ``name#2``, ``name#3``... whichever no running worker here uses."""
    with _running_lock:
        chosen, n = name, 1
        while chosen in _running:
            n += 1
            chosen = f"{name}#{n}"
        _running.add(chosen)
        return chosen


def _release(name: str) -> None:
    with _running_lock:
        _running.discard(name)


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
    """Reports one worker to the store (see the module docstring).

    Args:
        name: the worker's name (``RuntimeSettings.owner``).
        shared: whether other workers of this process may have the same
            ``name`` (the default ``host:pid``): the row then gets a number
            while another one runs (rule 5).
        stop_within: seconds the stop report may take (rule 4).
    """

    def __init__(
        self,
        *,
        store: RunStore,
        clock: Clock,
        name: str,
        every: float,
        details: JsonObject,
        shared: bool = False,
        stop_within: float = STOP_REPORT_WITHIN,
    ) -> None:
        self.store = store
        self.clock = clock
        self.owner = name
        self.name = name
        """The row's name: ``owner``, numbered while another worker here has it."""
        self.shared = shared
        self.every = every
        """Seconds between reports while the worker runs."""
        self.details = details
        self.stop_within = stop_within
        self.outage = Outage("the store (worker reports)", logger="squidmesh.runtime")
        self._claimed = False

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

    async def started(self) -> bool:
        """Take this worker's row name (rule 5) and report it running."""
        if self.shared and not self._claimed:
            self.name = _claim(self.owner)
            self._claimed = True
        return await self.report()

    async def stopped(self) -> bool:
        """Report the worker stopped, giving up after ``stop_within`` (rule 4); free the name."""
        try:
            async with asyncio.timeout(self.stop_within):
                return await self.report(stopped=True)
        except TimeoutError:
            LOG.warning(
                "worker %s: its stop was not recorded within %.1f s (the store is slow or"
                " down); its row will show it as last seen before",
                self.name,
                self.stop_within,
            )
            return False
        finally:
            if self._claimed:
                _release(self.name)
                self._claimed = False

    async def run(self) -> None:
        """Report every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            await self.report()
