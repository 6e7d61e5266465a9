"""In-memory store: a real, supported adapter for tests and single-process embedding."""

from squidmesh_backends.memory.store import MemoryRunStore

__all__ = ["MemoryRunStore"]
