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
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

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
RECANCEL_EVERY = 0.05
"""Seconds between cancellations of a broker read that has not ended yet."""


async def _cancel_until_done(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` again and again until it has ended.

    One cancellation can be lost: on Python 3.11 ``asyncio.wait_for`` returns
    the inner result and drops the cancellation when both happen at once, and
    redis-py sends every command through it. A Redis read that lost its
    cancellation blocks, reads again, and never ends.
    """
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=RECANCEL_EVERY)
        except asyncio.CancelledError:
            continue  # the caller re-raises once the read has ended


async def _cancellable_listen(broker: AsyncBroker) -> AsyncGenerator[Any, None]:
    """``broker.listen()``, its reads ended for sure by a cancellation.

    Each read runs in a task of its own, cancelled until it has ended (see
    ``_cancel_until_done``), so a receiver that is stopped does stop.
    """
    source = broker.listen()

    async def next_message() -> Any:
        return await anext(source)

    try:
        while True:
            read = asyncio.create_task(next_message(), name="squidmesh-taskiq-read")
            try:
                await asyncio.wait({read})
            except asyncio.CancelledError:
                await _cancel_until_done(read)
                raise
            try:
                message = read.result()
            except StopAsyncIteration:
                return
            yield message
    finally:
        await source.aclose()


class _ListenerBroker:
    """The broker as Taskiq's receiver sees it: ``listen()`` is ``_cancellable_listen``.

    Everything else is the broker's own.
    """

    def __init__(self, broker: AsyncBroker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def listen(self) -> AsyncGenerator[Any, None]:
        return _cancellable_listen(self._broker)


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
        self._deliveries: set[asyncio.Task[Any]] = set()
        self._submitting: set[asyncio.Task[Any] | None] = set()

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

    async def start(
        self, handler: JobHandler, *, slot_freed: Callable[[], None] = lambda: None
    ) -> None:
        """Start the broker and, unless it runs tasks in-process, a receiver loop.

        ``slot_freed`` is not called: slots free up in whichever worker process
        received the message, and the dispatcher counts them through ``free_slots``.
        """
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
                        broker=cast(AsyncBroker, _ListenerBroker(self.broker)),
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
        caller = asyncio.current_task()
        self._submitting.add(caller)
        try:
            await self.task.kiq(str(job_id), str(lease_token))
        finally:
            self._submitting.discard(caller)
        self.published += 1
        self._recent.append(time.monotonic())

    async def _receive(self, job_id: Any, lease_token: Any) -> None:
        """The Taskiq task: run the handler for one delivery (never raises)."""
        delivery = asyncio.current_task()
        if delivery is not None and delivery not in self._submitting:
            # Taskiq's task for this delivery (not a caller of submit() that a
            # broker running tasks in place lends): stop() waits for it to end.
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)
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
        acknowledged (Redis keeps them pending). Taskiq's task for each delivery
        is then given ``shutdown_grace`` to end (it acknowledges after the
        handler) and cancelled after that, so none outlives ``stop``. Broker
        shutdown is bounded by ``shutdown_grace`` too: a broker that hangs while
        closing cannot keep the process alive.
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
        await self._end_deliveries()
        try:
            await asyncio.wait_for(self.broker.shutdown(), self.shutdown_grace.total_seconds())
        except TimeoutError:
            LOG.warning("the broker did not shut down within %s; going on", self.shutdown_grace)
        except Exception:
            LOG.exception("the broker failed to shut down cleanly")
        return unfinished

    async def _end_deliveries(self) -> None:
        """Let Taskiq's delivery tasks finish (bounded), then cancel what is left."""
        deliveries = self._deliveries - {asyncio.current_task()}
        if not deliveries:
            return
        _, left = await asyncio.wait(deliveries, timeout=self.shutdown_grace.total_seconds())
        for task in left:
            task.cancel()
        if left:
            LOG.warning("cancelled %d Taskiq deliveries that did not end in time", len(left))
            await asyncio.gather(*left, return_exceptions=True)
