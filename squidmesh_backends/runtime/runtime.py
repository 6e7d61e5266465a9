"""``Runtime``: a client and a worker in one process, the embedded way to run SquidMesh.

Compose it from a store, an executor and the workflows it may run; start it
(``async with runtime:``) to run the worker; call the API methods, each of
which returns a ``Result``. The API is the :class:`Client`'s, declared once
there: ``Runtime`` forwards to it and :class:`SyncRuntime` derives blocking
versions of the same methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from squidmesh_backends.probe import NO_PROBE, Probe
from squidmesh_backends.runtime._doorbell import Doorbell
from squidmesh_backends.runtime.client import Client
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.runtime.worker import Worker
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.ports import Clock, EventSink, Executor, IdSource, RunStore

P = ParamSpec("P")
R = TypeVar("R")


def _forwarded(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Runtime, P], Coroutine[Any, Any, R]]:
    """``method`` of the runtime's client, as a (coroutine) method of the runtime."""

    async def forward(self: Runtime, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await method(self.client, *args, **kwargs)

    forward.__doc__ = method.__doc__
    forward.__name__ = method.__name__
    forward.__qualname__ = f"Runtime.{method.__name__}"
    return forward


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncRuntime, P], R]:
    """``method`` of the runtime (as declared by the client), run on the facade's loop.

    The call goes through the runtime, so a subclass that overrides a method is honoured.
    """
    name = method.__name__

    def block(self: SyncRuntime, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, Coroutine[Any, Any, R]] = getattr(self.runtime, name)
        return self._call(bound(*args, **kwargs))

    block.__doc__ = method.__doc__
    block.__name__ = name
    block.__qualname__ = f"SyncRuntime.{name}"
    return block


class Runtime:
    """A running SquidMesh: the client's API plus a worker (dispatcher and executor).

    Args:
        store: where runs live.
        workflows: the workflows this runtime may run.
        executor: where steps run (an in-process executor by default).
        clock, ids: sources of time and ids (system ones by default).
        sinks: event subscribers.
        settings: leases, polling, concurrency; defaults are production-safe.
        cron: the workflows whose cron triggers the worker starts while running.
        probe: receives counts for tests and benchmarks (see ``probe``).
        owns_store: close the store in ``aclose`` (set by ``compose``, which built it).
    """

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
        probe: Probe = NO_PROBE,
        owns_store: bool = False,
    ) -> None:
        self.client = Client(
            store=store,
            workflows=workflows,
            clock=clock,
            ids=ids,
            sinks=sinks,
            settings=settings,
            doorbell=Doorbell(),
        )
        self.store = store
        self.settings = self.client.settings
        self.clock = self.client.clock
        self.ids = self.client.ids
        self.worker = Worker(
            client=self.client,
            executor=executor or InProcessExecutor(concurrency=self.settings.concurrency),
            cron=cron,
            probe=probe,
        )
        self.owns_store = owns_store

    @property
    def workflows(self) -> dict[str, WorkflowDefinition]:
        """Registered workflows by name."""
        return self.client.workflows

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the worker: the executor accepts jobs and the dispatcher claims them."""
        await self.worker.start()

    async def stop(self) -> None:
        """Stop the worker (running steps finish within the shutdown timeout)."""
        await self.worker.stop()

    async def aclose(self) -> None:
        """Stop, then close the store if ``compose`` opened it (it reopens on next start)."""
        await self.stop()
        if self.owns_store:
            await self.store.close()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:  # a store left open would keep its pool connecting
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- API (the client's)

    start_run = _forwarded(Client.start_run)
    inspect_run = _forwarded(Client.inspect_run)
    list_runs = _forwarded(Client.list_runs)
    explain_run = _forwarded(Client.explain_run)
    cancel_run = _forwarded(Client.cancel_run)
    unblock_run = _forwarded(Client.unblock_run)
    approve_run = _forwarded(Client.approve_run)
    reject_run = _forwarded(Client.reject_run)
    send_signal = _forwarded(Client.send_signal)
    replay_run = _forwarded(Client.replay_run)
    wait_for = _forwarded(Client.wait_for)
    store_status = _forwarded(Client.store_status)
    prune_runs = _forwarded(Client.prune_runs)

    def sync(self) -> SyncRuntime:
        """A blocking facade running this runtime on a private event loop thread."""
        return SyncRuntime(self)


class SyncRuntime:
    """Blocking facade for scripts: ``with runtime.sync() as rt: rt.start_run(...)``.

    The runtime runs (worker included) on an event loop in a background thread
    between calls. Its methods are the client's, made blocking.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _call(self, coroutine: Coroutine[object, object, R]) -> R:
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

    start_run = _blocking(Client.start_run)
    inspect_run = _blocking(Client.inspect_run)
    list_runs = _blocking(Client.list_runs)
    explain_run = _blocking(Client.explain_run)
    cancel_run = _blocking(Client.cancel_run)
    unblock_run = _blocking(Client.unblock_run)
    approve_run = _blocking(Client.approve_run)
    reject_run = _blocking(Client.reject_run)
    send_signal = _blocking(Client.send_signal)
    replay_run = _blocking(Client.replay_run)
    wait_for = _blocking(Client.wait_for)
    store_status = _blocking(Client.store_status)
    prune_runs = _blocking(Client.prune_runs)
