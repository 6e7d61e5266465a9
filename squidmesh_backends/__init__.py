"""SquidMesh backends: run workflows.

This is the running door: the runtime (:class:`Runtime`, which composes a
:class:`Client` — start, inspect, list, cancel, replay, with nothing but a
store — and a :class:`Worker` — claims and runs steps; its blocking twin
:class:`SyncRuntime`; and :func:`compose`, which builds one from names), its
settings, the time-skipping runtime for tests with its :class:`FakeClock`, and
the exceptions the shell raises. Define workflows with :mod:`squidmesh_core`.

The adapters (stores, executors, tools, the OpenTelemetry sink) are reachable
from here too, but each is imported on first use, so ``import
squidmesh_backends`` loads no driver: psycopg arrives with
``squidmesh_backends.PostgresRunStore``, Taskiq and Redis with
``TaskiqExecutor``, httpx with the tools, OpenTelemetry (the ``otel`` extra)
with ``OpenTelemetrySink``. Each adapter also lives in its own subpackage
(``squidmesh_backends.postgres``, ``.sqlite``, ``.memory``, ``.taskiq``,
``.tools``, ``.observability.otel``).
"""

from __future__ import annotations

import typing

from squidmesh_backends._lazy import lazy_exports as _lazy_exports
from squidmesh_backends.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    ContentionError,
    MigrationRequiredError,
)
from squidmesh_backends.runtime import (
    Client,
    FakeClock,
    RandomIds,
    Runtime,
    RuntimeSettings,
    SequenceIds,
    StuckRunError,
    SyncRuntime,
    SystemClock,
    TimeSkippingRuntime,
    Worker,
)

if typing.TYPE_CHECKING:
    from squidmesh_backends.memory import MemoryRunStore
    from squidmesh_backends.observability.otel import OpenTelemetrySink
    from squidmesh_backends.postgres import PostgresRunStore, migrate
    from squidmesh_backends.runtime.bootstrap import compose
    from squidmesh_backends.runtime.inprocess import InProcessExecutor
    from squidmesh_backends.sqlite import SqliteRunStore
    from squidmesh_backends.taskiq import TaskiqExecutor, open_broker, redis_stream_broker
    from squidmesh_backends.tools import (
        HttpRequest,
        HttpTool,
        Tool,
        ToolError,
        ToolErrorKind,
        ToolResult,
        invoke,
    )

_LAZY = {
    "compose": "squidmesh_backends.runtime.bootstrap",
    "InProcessExecutor": "squidmesh_backends.runtime.inprocess",
    "MemoryRunStore": "squidmesh_backends.memory",
    "SqliteRunStore": "squidmesh_backends.sqlite",
    "PostgresRunStore": "squidmesh_backends.postgres",
    "migrate": "squidmesh_backends.postgres",
    "TaskiqExecutor": "squidmesh_backends.taskiq",
    "open_broker": "squidmesh_backends.taskiq",
    "redis_stream_broker": "squidmesh_backends.taskiq",
    "HttpRequest": "squidmesh_backends.tools",
    "HttpTool": "squidmesh_backends.tools",
    "Tool": "squidmesh_backends.tools",
    "ToolError": "squidmesh_backends.tools",
    "ToolErrorKind": "squidmesh_backends.tools",
    "ToolResult": "squidmesh_backends.tools",
    "invoke": "squidmesh_backends.tools",
    "OpenTelemetrySink": "squidmesh_backends.observability.otel",
}
"""Names imported on first access (they pull in a driver), and the module each comes from."""

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "Client",
    "ConfigurationError",
    "ContentionError",
    "FakeClock",
    "HttpRequest",
    "HttpTool",
    "InProcessExecutor",
    "MemoryRunStore",
    "MigrationRequiredError",
    "OpenTelemetrySink",
    "PostgresRunStore",
    "RandomIds",
    "Runtime",
    "RuntimeSettings",
    "SequenceIds",
    "SqliteRunStore",
    "StuckRunError",
    "SyncRuntime",
    "SystemClock",
    "TaskiqExecutor",
    "TimeSkippingRuntime",
    "Tool",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "Worker",
    "compose",
    "invoke",
    "migrate",
    "open_broker",
    "redis_stream_broker",
]


if not typing.TYPE_CHECKING:
    # Type checkers see the imports above instead, so a misspelt name stays an error.
    __getattr__, __dir__ = _lazy_exports(__name__, globals(), _LAZY, __all__)
