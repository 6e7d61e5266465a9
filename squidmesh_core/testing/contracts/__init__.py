"""Contract suites every adapter must pass: subclass one and provide its fixture.

``RunStoreContract`` needs a ``run_store`` fixture yielding a fresh, empty store;
``ExecutorContract`` needs an ``executor`` fixture yielding a fresh executor
whose ``capacity`` attribute says how many jobs it runs at once.
"""

from squidmesh_core.testing.contracts.executor import ExecutorContract
from squidmesh_core.testing.contracts.run_store import RunStoreContract

__all__ = ["ExecutorContract", "RunStoreContract"]
