"""``TaskiqExecutor``: jobs travel through any Taskiq broker as ``(job_id, lease_token)``.

The broker is a doorbell, never the truth: a message carries two strings and
nothing else (no code references, payloads or pickles). Whoever receives it
hands the pair to the runtime's worker path, which loads the run from the
store, checks the lease and runs the step. A message that is lost, duplicated
or delivered late changes nothing the store does not allow: a lost one is
re-published once its lease expires, a duplicate or stale one is refused by the
lease fence.

The executor plays both roles: ``submit`` publishes (the dispatcher calls it),
and a receive loop of its own (``_receiver``: read only with a free slot, open
strictly, acknowledge once handled, one line per outage) runs the handler, at
most ``concurrency`` at once in this process. Taskiq's in-process broker runs
the registered task instead.

Free slots count the messages this process published and nobody has received
yet. A publish is counted *before* it is sent: a message received before the
publish returned would otherwise leave a count behind that kept a slot idle
for ``PUBLISH_HORIZON`` (a worker with one slot started a run only every two
seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from returns.result import Failure
from taskiq import AckableMessage, AsyncBroker, InMemoryBroker

from squidmesh_backends.errors import BackendUnavailableError
from squidmesh_backends.logs import get_logger
from squidmesh_backends.outage import Outage, describe, log_failure
from squidmesh_backends.taskiq._receiver import cancellable_listen, open_envelope
from squidmesh_backends.taskiq.brokers import describe_broker
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import JobHandler, RefusalReason, Refused, ignore_refusal

LOG = get_logger("squidmesh.taskiq")
TASK_NAME = "squidmesh.run_job"
PUBLISH_HORIZON = 2.0
"""Seconds a publish counts against this process's free slots unless received sooner."""


async def _acknowledge(message: AckableMessage) -> None:
    try:
        acknowledged = message.ack()
        if acknowledged is not None:
            await acknowledged
    except Exception as exc:  # it stays pending; the store re-publishes the job anyway
        LOG.debug("acknowledging a message failed: %s", exc)


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
        self._slot_freed: Callable[[], None] = lambda: None
        self._refused: Refused = ignore_refusal
        self.outage = Outage("the broker", logger="squidmesh.taskiq")
        """The receive loop's view of the broker: lost since when, and how often."""
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
        self,
        handler: JobHandler,
        *,
        slot_freed: Callable[[], None] = lambda: None,
        refused: Refused = ignore_refusal,
    ) -> None:
        """Start the broker and, unless it runs tasks in-process, the receive loop.

        ``slot_freed`` is called when a job this process received ends; slots
        of other worker processes are counted through ``free_slots``.
        """
        self._handler = handler
        self._slot_freed = slot_freed
        self._refused = refused
        self._slots = asyncio.Semaphore(self.concurrency)
        self.broker.is_worker_process = True
        try:
            await self.broker.startup()
        except Exception as exc:  # the driver's fault, in SquidMesh's terms, naming where
            raise BackendUnavailableError(
                f"cannot reach {describe_broker(self.broker)}: {describe(exc)}"
            ) from exc
        self._accepting = True
        if not isinstance(self.broker, InMemoryBroker):
            self._receiver = asyncio.create_task(
                self._receive_forever(), name="squidmesh-taskiq-receiver"
            )

    async def _receive_forever(self) -> None:
        """Read and handle messages while we serve; after a broker failure, start over.

        A broker connection that drops (Redis restarted, or the stream and its
        consumer group flushed) ends the reads. They start again after a pause,
        with the broker's start-up run first so a lost consumer group is
        declared anew; the outage is reported once (``_receiver`` rule 4).
        """
        outage = self.outage
        while self._accepting:
            began = time.monotonic()
            error: BaseException | None = None
            try:
                await self._read_messages()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            self.receiver_restarts += 1
            await asyncio.sleep(outage.failed(error, served_for=time.monotonic() - began))
            try:
                await self.broker.startup()
            except Exception as exc:
                LOG.debug("broker start-up failed (%s); will retry", exc)
                continue
            outage.reached()

    async def _read_messages(self) -> None:
        """Rule 1 of ``_receiver``: take a slot, then read one message and hand it on."""
        slots = self._slots
        assert slots is not None  # set by start()
        source = cancellable_listen(self.broker)
        try:
            while True:
                await slots.acquire()
                try:
                    message = await anext(source)
                except BaseException:
                    slots.release()
                    raise
                task = asyncio.create_task(self._handle(message), name="squidmesh-taskiq-message")
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
        except StopAsyncIteration:
            return
        finally:
            await source.aclose()

    async def _handle(self, message: Any) -> None:
        """Open one message, run it or refuse it, acknowledge it, free its slot.

        Acknowledged when refused or once its handler returned (the outcome is
        committed); a message whose handler failed, was cancelled by ``stop`` or
        was turned away stays pending, and Redis offers it again after its idle
        timeout, by when the store has published the job anew (``_receiver`` rule 3).
        """
        slots = self._slots
        assert slots is not None
        try:
            self.received += 1
            if self._recent:
                self._recent.popleft()
            raw = message.data if isinstance(message, AckableMessage) else message
            opened = open_envelope(raw, formatter=self.broker.formatter, task_name=self.task_name)
            if isinstance(opened, Failure):
                refusal = opened.failure()
                self.refused += 1
                self._refused(refusal.reason, refusal.received, job_id=refusal.job_id)
                done = True
            else:
                done = await self._deliver(*opened.unwrap())
            if done and isinstance(message, AckableMessage):
                await _acknowledge(message)
        finally:
            slots.release()
            self._slot_freed()

    async def submit(self, job_id: JobId, lease_token: LeaseToken) -> None:
        if not self._accepting:
            raise RuntimeError("the executor is not accepting work")
        caller = asyncio.current_task()
        self._submitting.add(caller)
        stamp = time.monotonic()
        self._recent.append(stamp)  # before sending: it may be received before kiq returns
        try:
            await self.task.kiq(str(job_id), str(lease_token))
        except BaseException as exc:
            with contextlib.suppress(ValueError):  # already taken off by a receipt
                self._recent.remove(stamp)
            if isinstance(exc, Exception):  # the broker's fault, in SquidMesh's terms
                raise BackendUnavailableError(
                    f"cannot publish to the broker ({describe(exc)})"
                ) from exc
            raise
        finally:
            self._submitting.discard(caller)
        self.published += 1

    async def _receive(self, job_id: Any, lease_token: Any) -> None:
        """The registered Taskiq task (the in-process broker runs it): one delivery, in a slot."""
        delivery = asyncio.current_task()
        if delivery is not None and delivery not in self._submitting:
            # Taskiq's task for this delivery (not a caller of submit() that a
            # broker running tasks in place lends): stop() waits for it to end.
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)
        self.received += 1
        if not isinstance(job_id, str) or not isinstance(lease_token, str):
            if self._recent:
                self._recent.popleft()
            self.refused += 1
            self._refused(RefusalReason.BAD_ARGUMENTS, [job_id, lease_token])
            return
        slots = self._slots
        if slots is None:
            await self._deliver(job_id, lease_token)
            return
        async with slots:
            if self._recent:  # counted as published until it holds a slot here
                self._recent.popleft()
            await self._deliver(job_id, lease_token)
        self._slot_freed()

    async def _deliver(self, job_id: str, lease_token: str) -> bool:
        """Run the handler for one delivery; whether it returned (never raises but cancellation)."""
        handler = self._handler
        key = (JobId(job_id), LeaseToken(lease_token))
        if not self._accepting or handler is None:
            # Not serving (stopping): stop() hands the job back so its lease is released.
            self._turned_away.append(key)
            LOG.info("not accepting work; handing %s back", job_id)
            return False

        async def run() -> None:
            await handler(*key)

        task = asyncio.create_task(run(), name=f"squidmesh-job-{job_id}")
        self._running[task] = key
        try:
            await asyncio.wait({task})
        finally:
            self._running.pop(task, None)
        if task.cancelled():
            return False
        error = task.exception()
        if error is not None:
            log_failure(LOG, f"job {job_id} crashed its handler", error)
        return error is None

    async def stop(self, *, timeout: timedelta) -> Sequence[tuple[JobId, LeaseToken]]:
        """Stop receiving, let running steps finish within ``timeout``, shut the broker down.

        The receiver is cancelled first, so messages it had not finished are never
        acknowledged (Redis keeps them pending). The task of each delivery is
        then given ``shutdown_grace`` to end (it acknowledges after the handler
        returned) and cancelled after that, so none outlives ``stop``. Broker
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
