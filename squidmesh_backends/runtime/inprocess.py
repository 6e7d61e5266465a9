"""``InProcessExecutor``: runs jobs as asyncio tasks, at most ``concurrency`` at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import log_failure
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import JobHandler, Refused, ignore_refusal

LOG = get_logger("squidmesh.executor")


class InProcessExecutor:
    """Bounded-concurrency asyncio executor for embedded use and tests."""

    def __init__(self, *, concurrency: int = 8) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._handler: JobHandler | None = None
        self._tasks: dict[asyncio.Task[None], tuple[JobId, LeaseToken]] = {}
        self._accepting = False
        self._slots: asyncio.Semaphore | None = None
        self._slot_freed: Callable[[], None] = lambda: None

    @property
    def capacity(self) -> int:
        """How many jobs run at once."""
        return self.concurrency

    @property
    def free_slots(self) -> int:
        return self.concurrency - len(self._tasks) if self._accepting else 0

    async def start(
        self,
        handler: JobHandler,
        *,
        slot_freed: Callable[[], None] = lambda: None,
        refused: Refused = ignore_refusal,
    ) -> None:
        """Accept jobs; ``refused`` is never called (nothing reaches us but ``submit``)."""
        self._handler = handler
        self._slot_freed = slot_freed
        self._slots = asyncio.Semaphore(self.concurrency)
        self._accepting = True

    async def submit(self, job_id: JobId, lease_token: LeaseToken) -> None:
        if not self._accepting or self._handler is None or self._slots is None:
            raise RuntimeError("the executor is not accepting work")
        handler = self._handler
        slots = self._slots

        async def run() -> None:
            try:
                async with slots:
                    await handler(job_id, lease_token)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(LOG, f"job {job_id} crashed its handler", exc)

        task = asyncio.create_task(run(), name=f"squidmesh-job-{job_id}")
        self._tasks[task] = (job_id, lease_token)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_freed()

    async def stop(self, *, timeout: timedelta) -> Sequence[tuple[JobId, LeaseToken]]:
        self._accepting = False
        pending = set(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout.total_seconds())
        else:
            still = set()
        unfinished = [self._tasks[t] for t in still if t in self._tasks]
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        return unfinished
