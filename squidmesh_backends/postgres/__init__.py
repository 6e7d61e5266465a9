"""PostgreSQL persistence: ``PostgresRunStore`` and the ``squidmesh migrate`` machinery."""

from squidmesh_backends.postgres._transaction import step_connection
from squidmesh_backends.postgres.migrations import LATEST_VERSION, MIGRATIONS, migrate
from squidmesh_backends.postgres.store import PostgresRunStore

__all__ = ["LATEST_VERSION", "MIGRATIONS", "PostgresRunStore", "migrate", "step_connection"]
