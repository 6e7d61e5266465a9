"""PostgreSQL persistence: ``PostgresRunStore`` and the ``squidmesh migrate`` machinery."""

from squidmesh_backends.postgres._identity import describe_dsn, namespace_of
from squidmesh_backends.postgres._transaction import step_connection
from squidmesh_backends.postgres.migrations import LATEST_VERSION, MIGRATIONS, migrate
from squidmesh_backends.postgres.store import PostgresRunStore

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "PostgresRunStore",
    "describe_dsn",
    "migrate",
    "namespace_of",
    "step_connection",
]
