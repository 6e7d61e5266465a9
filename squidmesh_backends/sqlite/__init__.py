"""Embedded durable store on SQLite (the standard library's ``sqlite3``)."""

from squidmesh_backends.sqlite._transaction import step_connection
from squidmesh_backends.sqlite.store import SqliteRunStore

__all__ = ["SqliteRunStore", "step_connection"]
