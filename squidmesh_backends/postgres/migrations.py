"""Numbered, forward-only SQL migrations and the schema check the store runs on open.

Migrations live next to this module as ``migrations/NNNN_name.sql`` (package
data). :func:`migrate` applies the pending ones in order, in one transaction,
under a transaction-scoped advisory lock, and records each in
``squidmesh_schema_migrations`` with a checksum of its text. Running it again, or
from several processes at once, is safe: the second runner waits for the lock,
then finds nothing to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from squidmesh_backends.errors import ConfigurationError, MigrationRequiredError
from squidmesh_backends.postgres.edge import guarded

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
VERSION_TABLE = "squidmesh_schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this package, in order."""
    found: list[Migration] = []
    for entry in resources.files("squidmesh_backends.postgres").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ConfigurationError("SquidMesh migrations are not numbered 1, 2, 3, ... without gaps")
    return tuple(found)


MIGRATIONS = load_migrations()
LATEST_VERSION = MIGRATIONS[-1].version


def quoted_schema(schema: str) -> str:
    """``schema`` as a quoted SQL identifier, after checking it is a plain lowercase name."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {schema!r}: use lowercase letters, digits "
            "and underscores, starting with a letter or underscore (at most 63)"
        )
    return f'"{schema}"'


def migrate_command(schema: str) -> str:
    """The command a user runs to migrate ``schema`` (for error messages)."""
    suffix = "" if schema == "public" else f" --schema {schema}"
    return f"squidmesh migrate --dsn <DSN>{suffix}"


async def migrate(
    dsn: str, *, schema: str = "public", retry_for: float = 10.0, up_to: int | None = None
) -> tuple[int, ...]:
    """Apply the pending migrations to ``schema`` and return the versions applied now.

    ``up_to`` stops after that version (for upgrade tests); by default all are applied.

    Raises:
        MigrationRequiredError: the database holds a newer schema than this
            SquidMesh knows, or an applied migration's text differs from the
            shipped one.
        BackendUnavailableError: the server cannot be reached.
    """
    qschema = quoted_schema(schema)

    async def work() -> tuple[int, ...]:
        connect = psycopg.AsyncConnection.connect(dsn, autocommit=True)
        async with await connect as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"squidmesh.migrate.{schema}",),
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qschema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {qschema}.{VERSION_TABLE} ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute(
                f"SELECT version, checksum FROM {qschema}.{VERSION_TABLE} ORDER BY version"
            )
            applied: dict[int, str] = {int(v): str(c) for v, c in await cursor.fetchall()}
            _check_known(applied, schema)
            done: list[int] = []
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                if up_to is not None and migration.version > up_to:
                    break
                await conn.execute(f"SET LOCAL search_path TO {qschema}")
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    f"INSERT INTO {qschema}.{VERSION_TABLE} (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                done.append(migration.version)
            return tuple(done)

    return await guarded(f"migrating schema {schema}", work, retry_for=retry_for)


def _check_known(applied: dict[int, str], schema: str) -> None:
    newer = sorted(v for v in applied if v > LATEST_VERSION)
    if newer:
        raise MigrationRequiredError(
            f"PostgreSQL schema {schema!r} is at version {max(newer)}, newer than this "
            f"SquidMesh knows ({LATEST_VERSION}); upgrade SquidMesh"
        )
    for migration in MIGRATIONS:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationRequiredError(
                f"migration {migration.version:04d}_{migration.name} applied to schema "
                f"{schema!r} differs from the shipped file; applied migrations must never change"
            )


async def check_schema(conn: psycopg.AsyncConnection[TupleRow], schema: str) -> None:
    """Refuse to work on a schema that is not exactly at :data:`LATEST_VERSION`.

    Raises:
        MigrationRequiredError: naming the command to run, or saying to upgrade.
    """
    qschema = quoted_schema(schema)
    try:
        cursor = await conn.execute(f"SELECT version, checksum FROM {qschema}.{VERSION_TABLE}")
        applied: dict[int, str] = {int(v): str(c) for v, c in await cursor.fetchall()}
    except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName):
        applied = {}
    _check_known(applied, schema)
    version = max(applied, default=0)
    if version < LATEST_VERSION:
        raise MigrationRequiredError(
            f"PostgreSQL schema {schema!r} is at version {version} but SquidMesh needs "
            f"{LATEST_VERSION}; run `{migrate_command(schema)}` first"
        )
