"""The runtime: client, worker, their composition, in-process executor, clocks, ids, test runtime.

Importing it loads no driver: :func:`compose` (the composition root, which
knows every adapter) is imported on first use, and it imports the PostgreSQL
store or Taskiq only when asked for them.
"""

from __future__ import annotations

import typing

from squidmesh_backends._lazy import lazy_exports as _lazy_exports
from squidmesh_backends.runtime._delivery import JobOutcome
from squidmesh_backends.runtime.client import Client
from squidmesh_backends.runtime.clock import FakeClock, SystemClock
from squidmesh_backends.runtime.ids import RandomIds, SequenceIds
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.runtime import Runtime, SyncRuntime
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.runtime.testing import StuckRunError, TimeSkippingRuntime
from squidmesh_backends.runtime.worker import Worker

if typing.TYPE_CHECKING:
    from squidmesh_backends.runtime.bootstrap import compose

_LAZY = {
    "compose": "squidmesh_backends.runtime.bootstrap",
}
"""Names imported on first access, and the module each comes from."""

__all__ = [
    "Client",
    "FakeClock",
    "InProcessExecutor",
    "JobOutcome",
    "RandomIds",
    "Runtime",
    "RuntimeSettings",
    "SequenceIds",
    "StuckRunError",
    "SyncRuntime",
    "SystemClock",
    "TimeSkippingRuntime",
    "Worker",
    "compose",
]


if not typing.TYPE_CHECKING:
    # Type checkers see the imports above instead, so a misspelt name stays an error.
    __getattr__, __dir__ = _lazy_exports(__name__, globals(), _LAZY, __all__)
