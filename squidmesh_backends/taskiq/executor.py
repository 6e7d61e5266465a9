"""``TaskiqExecutor``: jobs travel through any Taskiq broker as ``(job_id, lease_token)``.

The broker is a doorbell, never the truth: a message carries two strings and
nothing else (no code references, payloads or pickles). Whoever receives it
hands the pair to the runtime's worker path, which loads the run from the
store, checks the lease and runs the step. A message that is lost, duplicated
or delivered late changes nothing the store does not allow: a lost one is
re-published once its lease expires, a duplicate or stale one is refused by the
lease fence.

The executor plays both roles: ``submit`` publishes (the dispatcher calls it),
and the registered task runs the handler, at most ``concurrency`` at once in
this process. The Taskiq acknowledgement happens when the task returns, which
is after the step's outcome has been committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from taskiq import AsyncBroker, InMemoryBroker
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver

from squidmesh_backends.logs import get_logger
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import JobHandler

LOG = get_logger("squidmesh.taskiq")
TASK_NAME = "squidmesh.run_job"
PUBLISH_HORIZON = 2.0
"""Seconds a publish counts against this process's free slots unless received sooner."""


class TaskiqExecutor:
    """An Executor over a Taskiq broker; passes ``ExecutorContract``."""

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        concurrency: int = 8,
        task_name: str = TASK_NAME,
        shutdown_grace: timedelta = timedelta(seconds=5),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.broker = broker
        self.concurrency = concurrency
        self.task_name = task_name
        self._handler: JobHandler | None = None
        self._accepting = False
        self._slots: asyncio.Semaphore | None = None
        self._running: dict[asyncio.Task[None], tuple[JobId, LeaseToken]] = {}
        self.published = 0
        self.received = 0
        self.refused = 0
        self.receiver_restarts = 0
        self._recent: deque[float] = deque()
        self._turned_away: list[tuple[JobId, LeaseToken]] = []
        self.shutdown_grace = shutdown_grace
        self._receiver: asyncio.Task[None] | None = None

        async def run_job(job_id: Any, lease_token: Any) -> None:
            await self._receive(job_id, lease_token)

        self.task = broker.register_task(run_job, task_name=task_name)

    @property
    def capacity(self) -> int:
        return self.concurrency

    @property
    def free_slots(self) -> int:
        """Capacity left, counting messages this process published but nobody took yet.

        A publish is counted until a message is received here or
        ``PUBLISH_HORIZON`` passes (another worker may have taken it), so a
        dispatcher cannot claim far more than the workers can start.
        """
        if not self._accepting:
            return 0
        horizon = time.monotonic() - PUBLISH_HORIZON
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()
        return self.concurrency - len(self._running) - len(self._recent)

    async def start(self, handler: JobHandler) -> None:
        """Start the broker and, unless it runs tasks in-process, a receiver loop."""
        self._handler = handler
        self._slots = asyncio.Semaphore(self.concurrency)
        self.broker.is_worker_process = True
        await self.broker.startup()
        self._accepting = True
        if not isinstance(self.broker, InMemoryBroker):
            self._receiver = asyncio.create_task(
                self._receive_forever(), name="squidmesh-taskiq-receiver"
            )

    async def _receive_forever(self) -> None:
        """Run Taskiq's receiver, and start it again whenever it fails while we serve.

        A broker connection that drops (Redis restarted, or the stream and its
        consumer group flushed) makes the receiver fail. It is started again
        after a growing pause, with the broker's start-up run first so a lost
        consumer group is declared anew (Taskiq's own ``run_receiver_task``
        would retry forever without re-declaring it).
        """
        pause = 0.1
        with ThreadPoolExecutor(max_workers=1) as pool:
            while self._accepting:
                finished = asyncio.Event()
                try:
                    receiver = Receiver(
                        broker=self.broker,
                        executor=pool,
                        run_startup=False,
                        max_async_tasks=self.concurrency,
                        ack_type=AcknowledgeType.WHEN_EXECUTED,
                    )
                    await receiver.listen(finished)
                    LOG.warning("the Taskiq receiver ended; restarting in %.1fs", pause)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    LOG.warning("the Taskiq receiver failed (%s); restarting in %.1fs", exc, pause)
                self.receiver_restarts += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                try:
                    await self.broker.startup()
                except Exception as exc:
                    LOG.warning("broker start-up failed (%s); will retry", exc)

    async def submit(self, job_id: JobId, lease_token: LeaseToken) -> None:
        if not self._accepting:
            raise RuntimeError("the executor is not accepting work")
        await self.task.kiq(str(job_id), str(lease_token))
        self.published += 1
        self._recent.append(time.monotonic())

    async def _receive(self, job_id: Any, lease_token: Any) -> None:
        """The Taskiq task: run the handler for one delivery (never raises)."""
        self.received += 1
        if self._recent:
            self._recent.popleft()
        if not isinstance(job_id, str) or not isinstance(lease_token, str):
            self.refused += 1
            LOG.warning("dropping a malformed message (%r, %r)", type(job_id), type(lease_token))
            return
        handler, slots = self._handler, self._slots
        if not self._accepting or handler is None or slots is None:
            # Not serving (stopping): stop() hands the job back so its lease is released.
            self.refused += 1
            self._turned_away.append((JobId(job_id), LeaseToken(lease_token)))
            LOG.info("not accepting work; handing %s back", job_id)
            return
        key = (JobId(job_id), LeaseToken(lease_token))

        async def run() -> None:
            async with slots:
                await handler(*key)

        task = asyncio.create_task(run(), name=f"squidmesh-job-{job_id}")
        self._running[task] = key
        try:
            await asyncio.wait({task})
        finally:
            self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("job %s crashed its handler", job_id, exc_info=task.exception())

    async def stop(self, *, timeout: timedelta) -> Sequence[tuple[JobId, LeaseToken]]:
        """Stop receiving, let running steps finish within ``timeout``, shut the broker down.

        The receiver is cancelled first, so messages it had not finished are never
        acknowledged (Redis keeps them pending). Broker shutdown is bounded by
        ``shutdown_grace``: a broker that hangs while closing cannot keep the
        process alive.
        """
        self._accepting = False
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.cancel()
            await asyncio.wait({receiver}, timeout=self.shutdown_grace.total_seconds())
        pending = set(self._running)
        still: set[asyncio.Task[None]] = set()
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout.total_seconds())
        unfinished = [self._running[t] for t in still if t in self._running]
        unfinished += self._turned_away
        self._turned_away = []
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        try:
            await asyncio.wait_for(self.broker.shutdown(), self.shutdown_grace.total_seconds())
        except TimeoutError:
            LOG.warning("the broker did not shut down within %s; going on", self.shutdown_grace)
        except Exception:
            LOG.exception("the broker failed to shut down cleanly")
        return unfinished
