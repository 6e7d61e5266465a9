"""``Runtime``: the public face of SquidMesh in a host application.

Compose it from a store, an executor and the workflows it may run; start it
(``async with runtime:``) to run the dispatcher and execute steps; call the API
methods, each of which returns a ``Result``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import Self, TypeVar

from returns.result import Failure, Result

from squidmesh_backends.logs import get_logger
from squidmesh_backends.runtime.clock import SystemClock
from squidmesh_backends.runtime.cron import CronLoop, active_schedules
from squidmesh_backends.runtime.dispatcher import Dispatcher
from squidmesh_backends.runtime.engine import (
    CancelError,
    Engine,
    ListError,
    LookupError_,
    ReplayError,
    StartError,
)
from squidmesh_backends.runtime.ids import RandomIds
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import Clock, EventSink, Executor, IdSource, RunStore, WakeupSource
from squidmesh_core.state import RunStatus
from squidmesh_core.views import Run

LOG = get_logger("squidmesh.runtime")
T = TypeVar("T")


class Runtime:
    """A running SquidMesh: API plus dispatcher and executor."""

    def __init__(
        self,
        *,
        store: RunStore,
        workflows: Iterable[WorkflowDefinition],
        executor: Executor | None = None,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        sinks: Sequence[EventSink] = (),
        settings: RuntimeSettings | None = None,
        cron: Iterable[str | WorkflowDefinition] = (),
    ) -> None:
        self.settings = settings or RuntimeSettings()
        self.store = store
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.executor = executor or InProcessExecutor(concurrency=self.settings.concurrency)
        self.engine = Engine(
            store=store,
            workflows=workflows,
            clock=self.clock,
            ids=self.ids,
            settings=self.settings,
            sinks=sinks,
        )
        self.dispatcher = Dispatcher(
            store=store,
            executor=self.executor,
            clock=self.clock,
            ids=self.ids,
            settings=self.settings,
        )
        self.engine.on_job_due = self.dispatcher.kick
        if isinstance(self.executor, InProcessExecutor):
            self.executor.on_done = self.dispatcher.kick
        self._loop_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._holding: dict[tuple[JobId, LeaseToken], tuple[JobId, LeaseToken]] = {}
        # For a delivery that went on inline: the lease it holds now.
        activated = tuple(cron)
        self.cron_loop: CronLoop | None = None
        """Starts cron runs while the runtime is started (only for the workflows in ``cron``)."""
        if activated:
            self.cron_loop = CronLoop(
                self.engine,
                active_schedules(self.engine, activated, now=self.clock.now()),
                misfire_window=self.settings.cron_misfire_window,
                poll=self.settings.poll_interval,
            )
        self._cron_task: asyncio.Task[None] | None = None
        self.owns_store = False
        """When true (``compose`` built the store), ``aclose`` closes it too."""

    # ---------------------------------------------------------------- lifecycle

    @property
    def workflows(self) -> dict[str, WorkflowDefinition]:
        """Registered workflows by name."""
        return dict(self.engine.registry)

    async def _handle(self, job_id: JobId, lease_token: LeaseToken) -> None:
        key = (job_id, lease_token)

        def moved(job: JobId, token: LeaseToken) -> None:
            self._holding[key] = (job, token)

        try:
            await self.engine.execute_chain(job_id, lease_token, on_next=moved)
        except asyncio.CancelledError:
            raise  # stop() cancelled us: it still needs the lease we hold
        except BaseException:
            self._holding.pop(key, None)
            raise
        else:
            self._holding.pop(key, None)

    async def start(self) -> None:
        """Start executing: the executor accepts jobs and the dispatcher claims them."""
        if self._loop_task is not None:
            return
        opener = getattr(self.store, "open", None)
        if callable(opener):
            await opener()  # a store closed by an earlier aclose() is opened again
        await self.executor.start(self._handle)
        self.dispatcher.reset()
        self._loop_task = asyncio.create_task(self.dispatcher.run(), name="squidmesh-dispatcher")
        if self.cron_loop is not None:
            self.cron_loop.activated_at = self.clock.now()
            self._cron_task = asyncio.create_task(self.cron_loop.run(), name="squidmesh-cron")
        if isinstance(self.store, WakeupSource):
            self._watch_task = asyncio.create_task(
                self.store.watch(self.dispatcher.kick), name="squidmesh-wakeups"
            )

    async def stop(self) -> None:
        """Stop claiming, let running steps finish within the shutdown timeout, release the rest."""
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        for background in (self._watch_task, self._cron_task):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        self._watch_task = self._cron_task = None
        self.dispatcher.stop()
        await asyncio.gather(task, return_exceptions=True)
        unfinished = await self.executor.stop(timeout=self.settings.shutdown_timeout)
        for delivered in unfinished:
            job_id, token = self._holding.pop(delivered, delivered)
            released = await self.store.release(job_id, token)
            LOG.warning("released %s on shutdown (held: %s)", job_id, released)

    async def aclose(self) -> None:
        """Stop, then close the store if ``compose`` opened it (it reopens on next use)."""
        await self.stop()
        close = getattr(self.store, "close", None)
        if self.owns_store and callable(close):
            await close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- API

    async def start_run(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, StartError]:
        """Validate the payload and start a run (nothing is stored if it is invalid).

        Returns:
            ``Success(Run)`` (``run.existing`` is true when an earlier run with the
            same idempotency key is returned), or ``Failure`` with
            ``UnknownWorkflow``, ``UnknownTrigger`` or ``InvalidPayload``.
        """
        return await self.engine.start_run(
            workflow, payload, trigger=trigger, idempotency_key=idempotency_key
        )

    async def inspect_run(
        self, run_id: str, *, include_history: bool = False
    ) -> Result[Run, LookupError_]:
        """The run, optionally with its step runs and attempts (``InvalidRunId``, ``NotFound``)."""
        return await self.engine.inspect_run(run_id, include_history=include_history)

    async def list_runs(
        self,
        *,
        workflow: str | WorkflowDefinition | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
    ) -> Result[tuple[Run, ...], ListError]:
        """Runs, newest first, filtered by workflow and status (``InvalidOption``)."""
        return await self.engine.list_runs(workflow=workflow, status=status, limit=limit)

    async def cancel_run(self, run_id: str) -> Result[Run, CancelError]:
        """Cancel: pending runs at once, active ones via ``cancelling``."""
        return await self.engine.cancel_run(run_id)

    async def replay_run(self, run_id: str) -> Result[Run, ReplayError]:
        """Start a new run from this run's payload; the source is untouched."""
        return await self.engine.replay_run(run_id)

    async def wait_for(
        self,
        run_id: str,
        *,
        timeout: timedelta = timedelta(seconds=30),
        poll: timedelta = timedelta(milliseconds=20),
    ) -> Result[Run, LookupError_]:
        """Poll until the run is finished (or ``timeout`` passes) and return it with history."""
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        while True:
            found = await self.inspect_run(run_id, include_history=True)
            if isinstance(found, Failure) or found.unwrap().status.terminal:
                return found
            if asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(poll.total_seconds())

    def sync(self) -> SyncRuntime:
        """A blocking facade running this runtime on a private event loop thread."""
        return SyncRuntime(self)


class SyncRuntime:
    """Blocking facade for scripts: ``with runtime.sync() as rt: rt.start_run(...)``.

    The runtime runs (dispatcher included) on an event loop in a background
    thread between calls.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _call(self, coroutine: Coroutine[object, object, T]) -> T:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("use the facade as a context manager: `with runtime.sync() as rt:`")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="squidmesh-sync", daemon=True
        )
        self._thread.start()
        self._call(self.runtime.start())
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        try:
            self._call(self.runtime.aclose())
        finally:
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                loop.close()
            self._loop = self._thread = None

    def start_run(
        self,
        workflow: str | WorkflowDefinition,
        payload: object,
        *,
        trigger: str | None = None,
        idempotency_key: str | None = None,
    ) -> Result[Run, StartError]:
        return self._call(
            self.runtime.start_run(
                workflow, payload, trigger=trigger, idempotency_key=idempotency_key
            )
        )

    def inspect_run(
        self, run_id: str, *, include_history: bool = False
    ) -> Result[Run, LookupError_]:
        return self._call(self.runtime.inspect_run(run_id, include_history=include_history))

    def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> Result[tuple[Run, ...], ListError]:
        return self._call(self.runtime.list_runs(workflow=workflow, status=status, limit=limit))

    def cancel_run(self, run_id: str) -> Result[Run, CancelError]:
        return self._call(self.runtime.cancel_run(run_id))

    def replay_run(self, run_id: str) -> Result[Run, ReplayError]:
        return self._call(self.runtime.replay_run(run_id))

    def wait_for(
        self, run_id: str, *, timeout: timedelta = timedelta(seconds=30)
    ) -> Result[Run, LookupError_]:
        return self._call(self.runtime.wait_for(run_id, timeout=timeout))
