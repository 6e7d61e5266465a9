"""The runtime: engine, dispatcher, in-process executor, clocks, ids and the test runtime."""

from squidmesh_backends.runtime.bootstrap import compose
from squidmesh_backends.runtime.clock import FakeClock, SystemClock
from squidmesh_backends.runtime.engine import Engine, JobOutcome
from squidmesh_backends.runtime.ids import RandomIds, SequenceIds
from squidmesh_backends.runtime.inprocess import InProcessExecutor
from squidmesh_backends.runtime.runtime import Runtime, SyncRuntime
from squidmesh_backends.runtime.settings import RuntimeSettings
from squidmesh_backends.runtime.testing import StuckRunError, TimeSkippingRuntime

__all__ = [
    "Engine",
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
    "compose",
]
