"""Composition root: build a runtime from names and settings, nothing at import time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from squidmesh_backends.errors import ConfigurationError
from squidmesh_backends.memory import MemoryRunStore
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.runtime import Runtime
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.sqlite import SqliteRunStore
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.ports import EventSink, Executor, RunStore


def compose(
    *,
    workflows: Iterable[WorkflowDefinition],
    store: str | RunStore = "memory",
    executor: str | Executor = "inprocess",
    settings: RuntimeSettings | None = None,
    sinks: Sequence[EventSink] = (),
) -> Runtime:
    """Build a :class:`Runtime`.

    Args:
        workflows: the workflows this runtime may run (registered by name).
        store: ``"memory"``, ``"sqlite:PATH"`` (the embedded durable store) or a
            RunStore instance.
        executor: ``"inprocess"`` or an Executor instance.
        settings: leases, polling, concurrency; defaults are production-safe.
        sinks: event subscribers.

    Raises:
        ConfigurationError: an unknown store or executor name.
    """
    chosen = settings or RuntimeSettings()
    run_store = open_store(store) if isinstance(store, str) else store
    runner: Executor
    if isinstance(executor, str):
        if executor != "inprocess":
            raise ConfigurationError(f"unknown executor {executor!r} (available: 'inprocess')")
        runner = InProcessExecutor(concurrency=chosen.concurrency)
    else:
        runner = executor
    return Runtime(
        store=run_store, executor=runner, workflows=workflows, settings=chosen, sinks=sinks
    )


def open_store(spec: str) -> RunStore:
    """Build a store from its name: ``memory`` or ``sqlite:PATH``.

    Raises:
        ConfigurationError: the name is not one of these.
    """
    if spec == "memory":
        return MemoryRunStore()
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ConfigurationError("sqlite store needs a path: 'sqlite:PATH'")
        return SqliteRunStore(path)
    raise ConfigurationError(f"unknown store {spec!r} (use 'memory' or 'sqlite:PATH')")
